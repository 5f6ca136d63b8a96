"""Every bad argument is refused with an error naming the field, and changes no state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fabric_network.ledger import Ledger
from tests.contracts.conftest import QUIET_MECHANISM, new_pseudonym

PSEUDONYM = new_pseudonym()
T0 = "2026-01-01T00:00:00Z"
RECORD = "ConsentContract:record_consent"
AUDIT_ONE = "AuditContract:append_audit_event"
GOOD_EVENT = {
    "actor": "svc",
    "role": "clinician",
    "action": "model.read",
    "object": "model:m",
    "outcome": "success",
    "purpose": "",
}
GOOD_ROUND = {"round": 1, "participants": [], "model_sha256": "0" * 64}

CHARGE = "PrivacyBudgetContract:charge_budget"
# (who, function, args, field the error must name)
BAD_CALLS: list[tuple[str, str, tuple[Any, ...], str]] = [
    ("hospital-a", RECORD, ("ABC", "HRESCH", "research", T0, ""), "pseudonym"),
    ("hospital-a", RECORD, (PSEUDONYM.upper(), "HRESCH", "research", T0, ""), "pseudonym"),
    ("hospital-a", RECORD, (PSEUDONYM, "RESEARCH", "research", T0, ""), "purpose"),
    ("hospital-a", RECORD, (PSEUDONYM, "HRESCH", "everything", T0, ""), "scope"),
    ("hospital-a", RECORD, (PSEUDONYM, "HRESCH", "research", "yesterday", ""), "valid_from"),
    (
        "hospital-a",
        "ConsentContract:record_consent",
        (PSEUDONYM, "HRESCH", "research", T0.rstrip("Z"), ""),
        "valid_from",
    ),
    (
        "hospital-a",
        "ConsentContract:record_consent",
        (PSEUDONYM, "HRESCH", "research", T0, "2025-01-01T00:00:00Z"),
        "valid_until",
    ),
    ("hospital-a", "ConsentContract:withdraw_consent", (PSEUDONYM, "HRESCH"), "pseudonym"),
    ("hospital-a", "ConsentContract:create_consent_snapshot", ("snap 1", "HRESCH", ""), "snapshot_id"),
    ("hospital-a", "ConsentContract:create_consent_snapshot", ("snap-1", "HRESCH", "[1]"), "pseudonyms[0]"),
    ("hospital-a", "ConsentContract:create_consent_snapshot", ("snap-1", "HRESCH", "not json"), "pseudonyms"),
    ("hospital-a", CHARGE, ("HRESCH", "-1", "run-a", "1", QUIET_MECHANISM), "epsilon"),
    ("hospital-a", CHARGE, ("HRESCH", "nan", "run-a", "1", QUIET_MECHANISM), "epsilon"),
    ("hospital-a", CHARGE, ("HRESCH", "0.1", "run-a", "first", QUIET_MECHANISM), "round_number"),
    ("hospital-a", CHARGE, ("HRESCH", "0.1", "MRN:00123456", "1", QUIET_MECHANISM), "run_id"),
    ("consortium", "PrivacyBudgetContract:set_budget_limit", ("Hospital A", "HRESCH", "1"), "hospital"),
    ("consortium", "PrivacyBudgetContract:set_budget_limit", ("HospitalAMSP", "HRESCH", "1e9"), "epsilon_limit"),
    ("consortium", "LineageContract:register_run", ("run-x", "{}"), "spec.purpose"),
    ("consortium", "LineageContract:register_run", ("run-x", '{"purpose": "HRESCH"'), "spec"),
    ("consortium", "LineageContract:record_round", ("run-x", {**GOOD_ROUND, "round": 0}), "round_record.round"),
    (
        "consortium",
        "LineageContract:record_round",
        ("run-x", {**GOOD_ROUND, "notes": "pt"}),
        "round_record.notes",
    ),
    (
        "consortium",
        "LineageContract:register_model",
        ("m-x", {"run_id": "r", "round": 1, "sha256": "x"}),
        "model.sha256",
    ),
    ("hospital-a", AUDIT_ONE, ({**GOOD_EVENT, "outcome": "ok"},), "event.outcome"),
    ("hospital-a", AUDIT_ONE, ({**GOOD_EVENT, "purpose": "FUN"},), "event.purpose"),
    ("hospital-a", AUDIT_ONE, ({**GOOD_EVENT, "comment": "free text"},), "event.comment"),
    (
        "hospital-a",
        "AuditContract:append_audit_event",
        ({**GOOD_EVENT, "actor": None},),
        "event.actor",
    ),
    ("hospital-a", "AuditContract:append_audit_events", ([],), "events"),
    ("hospital-a", "AuditContract:append_audit_events", ([GOOD_EVENT] * 1001,), "events"),
]


@pytest.mark.parametrize(
    ("who", "function", "args", "field"), BAD_CALLS, ids=[f"{c[1].split(':')[1]}-{c[3]}" for c in BAD_CALLS]
)
def test_bad_argument_is_named_and_changes_nothing(
    network, refused: Callable[..., str], who: str, function: str, args: tuple[Any, ...], field: str
) -> None:
    message = refused(network.ledger(who), function, *args)
    assert message.startswith(f"{function}: {field}:"), message


def test_a_refused_write_leaves_the_record_as_it_was(hospital_a: Ledger, refused: Callable[..., str]) -> None:
    pseudonym = new_pseudonym()
    hospital_a.submit("ConsentContract:record_consent", pseudonym, "HRESCH", "research", T0, "")
    before = hospital_a.evaluate("ConsentContract:read_consent", pseudonym, "HRESCH")
    refused(hospital_a, "ConsentContract:update_consent", pseudonym, "HRESCH", "research", T0, "1999-01-01T00:00:00Z")
    assert hospital_a.evaluate("ConsentContract:read_consent", pseudonym, "HRESCH") == before


def test_read_only_functions_cannot_be_submitted(hospital_a: Ledger) -> None:
    from fabric_network.ledger import LedgerError

    height = hospital_a.height()
    with pytest.raises(LedgerError, match="read-only"):
        hospital_a.submit("AuditContract:query_audit", "{}")
    assert hospital_a.height() == height, "a refused read-only submit must not commit a block"
