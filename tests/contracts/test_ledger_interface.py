"""The Ledger interface's own promises: idempotency keys, batches, events from a block."""

from __future__ import annotations

from fabric_network.ledger import Call, ContractRejected, Ledger
from tests.contracts.conftest import new_id, new_pseudonym

EVENT = {
    "actor": "svc-api",
    "role": "hospital_it",
    "action": "node.read",
    "object": "node:a",
    "outcome": "success",
    "purpose": "",
}


def test_an_idempotency_key_commits_once(hospital_a: Ledger) -> None:
    key = new_id("delivery")
    actor = new_id("svc")
    first = hospital_a.submit("AuditContract:append_audit_event", {**EVENT, "actor": actor}, idempotency_key=key)
    again = hospital_a.submit("AuditContract:append_audit_event", {**EVENT, "actor": actor}, idempotency_key=key)
    assert (again.tx_id, again.block_number, again.duplicate) == (first.tx_id, first.block_number, True)
    assert again.result == first.result
    assert len(hospital_a.evaluate("AuditContract:query_audit", {"actor": actor})) == 1


def test_a_batch_reports_each_call(hospital_a: Ledger) -> None:
    pseudonym = new_pseudonym()
    record = ("ConsentContract:record_consent", (pseudonym, "HRESCH", "research", "2026-01-01T00:00:00Z", ""))
    bad = Call("ConsentContract:record_consent", ("bad", "HRESCH", "research", "2026-01-01T00:00:00Z", ""))
    outcomes = hospital_a.submit_batch([Call(*record), bad, Call(*record)])
    assert outcomes[0].result["pseudonym"] == pseudonym  # type: ignore[union-attr]
    assert isinstance(outcomes[1], ContractRejected) and "pseudonym" in str(outcomes[1])
    # The second grant reads the state the first one left: it is refused like on any ledger.
    assert isinstance(outcomes[2], ContractRejected) and "exists already" in str(outcomes[2])


def test_events_from_a_block(hospital_a: Ledger) -> None:
    actor = new_id("svc")
    committed = hospital_a.submit("AuditContract:append_audit_event", {**EVENT, "actor": actor})
    events = list(hospital_a.events(committed.block_number))
    ours = [e for e in events if e.tx_id == committed.tx_id]
    assert len(ours) == 1
    assert ours[0].name == "AuditEventsAppended" and ours[0].creator_msp == "HospitalAMSP"
    assert ours[0].payload == {"count": 1, "organisation": "HospitalAMSP", "tx_id": committed.tx_id}
    assert all(e.block_number >= committed.block_number for e in events)
    assert hospital_a.block_of(committed.tx_id) == committed.block_number < hospital_a.height()
