"""AuditContract through the Ledger interface: append singly and in batches, query, refuse identifiers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fabric_network.ledger import Ledger
from tests.contracts.conftest import new_id, new_pseudonym


def _event(**overrides: str) -> dict[str, Any]:
    event = {
        "actor": "dr-smith",
        "role": "clinician",
        "action": "model.predict",
        "object": "model:breast-cancer-mlp",
        "outcome": "success",
        "purpose": "TREAT",
    }
    return {**event, **overrides}


def test_events_carry_who_what_where_and_the_transaction_time(hospital_a: Ledger) -> None:
    actor = new_id("svc")
    committed = hospital_a.submit("AuditContract:append_audit_event", _event(actor=actor))
    stored = hospital_a.evaluate("AuditContract:query_audit", {"actor": actor})
    assert len(stored) == 1
    assert stored[0]["organisation"] == "HospitalAMSP" and stored[0]["tx_id"] == committed.tx_id
    assert stored[0]["time"] == committed.result["time"] and stored[0]["time"].endswith("Z")


def test_query_by_actor_object_action_and_time_range(hospital_a: Ledger, hospital_b: Ledger) -> None:
    actor, patient = new_id("officer"), f"patient:{new_pseudonym()}"
    first = hospital_a.submit(
        "AuditContract:append_audit_events",
        [_event(actor=actor, action="consent.record", object=patient, purpose="HRESCH"), _event(actor=actor)],
    ).result
    time.sleep(0.01)
    second = hospital_b.submit("AuditContract:append_audit_event", _event(actor=actor, action="audit.export")).result
    assert [e["index"] for e in first] == [0, 1]
    by_actor = hospital_a.evaluate("AuditContract:query_audit", {"actor": actor})
    assert [e["action"] for e in by_actor] == ["consent.record", "model.predict", "audit.export"]
    assert [e["object"] for e in hospital_a.evaluate("AuditContract:query_audit", {"object": patient})] == [patient]
    exports = hospital_a.evaluate("AuditContract:query_audit", {"actor": actor, "action": "audit.export"})
    assert [e["organisation"] for e in exports] == ["HospitalBMSP"]
    window = {"actor": actor, "from": first[0]["time"], "to": second["time"]}
    assert len(hospital_a.evaluate("AuditContract:query_audit", window)) == 2
    window = {"actor": actor, "from": second["time"]}
    assert len(hospital_a.evaluate("AuditContract:query_audit", window)) == 1
    assert len(hospital_a.evaluate("AuditContract:query_audit", {"actor": actor, "limit": 1})) == 1


def test_a_batch_is_all_or_nothing(hospital_a: Ledger, refused: Callable[..., str]) -> None:
    actor = new_id("svc")
    batch = [_event(actor=actor), _event(actor=actor, object="patient:MRN-0012345")]
    assert "events[1].object" in refused(hospital_a, "AuditContract:append_audit_events", batch)
    assert hospital_a.evaluate("AuditContract:query_audit", {"actor": actor}) == []


def test_identifier_shaped_values_are_refused(hospital_a: Ledger, refused: Callable[..., str]) -> None:
    for field, value in (
        ("actor", "jane.doe@example.org"),
        ("object", "model:run-1234567"),
        ("object", "patient:0012345"),
        ("object", "record:123-45-6789"),
        ("role", "Clinician with notes"),
    ):
        assert f"event.{field}" in refused(hospital_a, "AuditContract:append_audit_event", _event(**{field: value}))


def test_a_node_identity_cannot_append_events(network, refused: Callable[..., str]) -> None:
    peer = network.ledger("hospital-a", "node")
    assert "caller: role peer" in refused(peer, "AuditContract:append_audit_event", _event())
