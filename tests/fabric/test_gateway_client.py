"""The Gateway client's messages and error handling, against the fake gateway of tests/fabric/fake_gateway.py.

What is tested is CareFed's client (message building, signing, result parsing, error translation, MVCC retry);
the real peers are exercised by the live-network tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fabric_network.fabric import gateway
from fabric_network.fabric.gateway import FabricGateway, GatewayConnection
from fabric_network.identities import SigningIdentity
from tests.fabric.fake_gateway import FakeGateway, serve_fake_gateway
from tests.fabric.pki import TestCA


@pytest.fixture
def fake() -> Iterator[tuple[FakeGateway, FabricGateway]]:
    with serve_fake_gateway() as running:
        yield running


def test_evaluate_sends_a_signed_valid_proposal_over_tls(fake: tuple[FakeGateway, FabricGateway]) -> None:
    _, client = fake
    assert client.evaluate("Consent:read", ["a1"]) == b"Consent:read|a1"


def test_contract_error_comes_back_with_the_contracts_own_message(fake: tuple[FakeGateway, FabricGateway]) -> None:
    _, client = fake
    with pytest.raises(gateway.ContractRejected, match=r"^pseudonym: must be 64 lowercase hex characters$"):
        client.evaluate("Consent:read", ["bad"])


def test_submit_signs_the_envelope_and_returns_the_result(fake: tuple[FakeGateway, FabricGateway]) -> None:
    servicer, client = fake
    committed = client.submit("Audit:append", ["e1"])
    assert (committed.block_number, committed.payload) == (1, b"e1")
    assert servicer.submitted == [committed.transaction_id]


def test_mvcc_conflict_is_retried_with_a_fresh_proposal(fake: tuple[FakeGateway, FabricGateway]) -> None:
    servicer, client = fake
    servicer.commit_results = [gateway.MVCC_READ_CONFLICT, gateway.MVCC_READ_CONFLICT]
    committed = client.submit("Audit:append", ["e1"])
    assert len(set(servicer.submitted)) == 3 and committed.transaction_id == servicer.submitted[-1]


def test_mvcc_conflict_gives_up_after_the_retries(fake: tuple[FakeGateway, FabricGateway]) -> None:
    servicer, client = fake
    servicer.commit_results = [gateway.MVCC_READ_CONFLICT] * (client.mvcc_retries + 1)
    with pytest.raises(gateway.MVCCConflict):
        client.submit("Audit:append", ["e1"])


def test_policy_failure_at_commit_is_reported(fake: tuple[FakeGateway, FabricGateway]) -> None:
    servicer, client = fake
    servicer.commit_results = [gateway.ENDORSEMENT_POLICY_FAILURE]
    with pytest.raises(gateway.EndorsementPolicyFailure, match="HospitalAMSP"):
        client.submit("Audit:append", ["e1"], endorsing_orgs=["HospitalAMSP"])


def test_unreachable_gateway_is_a_clear_error() -> None:
    ca = TestCA("nobody")
    user = ca.issue("u")
    client = FabricGateway(
        GatewayConnection("127.0.0.1:1", ca.cert_pem, "carefed", "carefed"),
        SigningIdentity("HospitalAMSP", "u", "client", user.cert_pem, user.key),
        timeout_s=2,
    )
    with pytest.raises(gateway.GatewayUnavailable, match="evaluate Consent:read"):
        client.evaluate("Consent:read", ["a1"])
    client.close()


def test_chaincode_events_are_requested_signed_from_the_given_block(fake: tuple[FakeGateway, FabricGateway]) -> None:
    _, client = fake
    events = list(client.events(start_block=5, timeout_s=5))
    assert [(e.block_number, e.transaction_id, e.name) for e in events] == [
        (5, "tx5", "Recorded"),
        (6, "tx6", "Recorded"),
    ]
