"""The `Ledger` interface on the Fabric client: result decoding, error mapping, exactly-once idempotency keys.

Against the fake gateway (tests/fabric/fake_gateway.py), which refuses a transaction id it already committed
and answers qscc from what it committed — the two Fabric behaviours idempotency is built on.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fabric_network.fabric import gateway
from fabric_network.fabric.ledger import FabricLedger
from fabric_network.fabric.verify import OrdererTrust
from fabric_network.ledger import Call, ContractRejected, LedgerError, TxResult
from tests.fabric.fake_gateway import FakeGateway, serve_fake_gateway


@pytest.fixture
def ledger() -> Iterator[tuple[FakeGateway, FabricLedger]]:
    with serve_fake_gateway() as (servicer, client):
        yield servicer, FabricLedger(client, OrdererTrust("ConsortiumMSP", b""))


def test_submit_returns_the_decoded_result_and_its_block(ledger: tuple[FakeGateway, FabricLedger]) -> None:
    _, fabric = ledger
    result = fabric.submit("AuditContract:append_audit_event", {"actor": "dr-smith"})
    assert result.result == {"actor": "dr-smith"} and result.block_number == 1 and not result.duplicate
    assert fabric.block_of(result.tx_id) == 1 and fabric.height() == 2


def test_a_repeated_idempotency_key_returns_the_first_commit(ledger: tuple[FakeGateway, FabricLedger]) -> None:
    servicer, fabric = ledger
    first = fabric.submit("AuditContract:append_audit_event", "x", idempotency_key="outbox-17")
    again = fabric.submit("AuditContract:append_audit_event", "x", idempotency_key="outbox-17")
    assert again == TxResult(first.tx_id, first.block_number, first.result, duplicate=True)
    assert len(servicer.committed) == 1


def test_an_idempotent_submit_after_a_read_conflict_commits_once_under_a_new_id(
    ledger: tuple[FakeGateway, FabricLedger],
) -> None:
    servicer, fabric = ledger
    servicer.commit_results = [gateway.MVCC_READ_CONFLICT]
    first = fabric.submit("AuditContract:append_audit_event", "x", idempotency_key="outbox-18")
    assert [code for _, _, code in servicer.committed.values()] == [gateway.MVCC_READ_CONFLICT, gateway.VALID]
    again = fabric.submit("AuditContract:append_audit_event", "x", idempotency_key="outbox-18")
    assert again.duplicate and again.tx_id == first.tx_id
    assert len(servicer.committed) == 2  # the repeat committed nothing


def test_contract_refusals_carry_the_function_and_the_contracts_message(
    ledger: tuple[FakeGateway, FabricLedger],
) -> None:
    _, fabric = ledger
    with pytest.raises(ContractRejected, match=r"^Consent:read: pseudonym: must be 64 lowercase hex characters$"):
        fabric.evaluate("Consent:read", "bad")


def test_a_batch_reports_each_calls_outcome(ledger: tuple[FakeGateway, FabricLedger]) -> None:
    servicer, fabric = ledger
    servicer.commit_results = [gateway.ENDORSEMENT_POLICY_FAILURE]
    outcomes = fabric.submit_batch([Call("AuditContract:append_audit_event", (str(i),)) for i in range(4)])
    assert sum(isinstance(o, TxResult) for o in outcomes) == 3
    assert sum(isinstance(o, LedgerError) for o in outcomes) == 1


def test_an_unknown_transaction_id_is_a_clear_error(ledger: tuple[FakeGateway, FabricLedger]) -> None:
    _, fabric = ledger
    with pytest.raises(LedgerError, match="tx_id: 00ff is not on the ledger"):
        fabric.block_of("00ff")
