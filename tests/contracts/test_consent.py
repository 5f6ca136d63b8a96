"""ConsentContract through the Ledger interface: grant, withdraw, snapshots, ownership, history, erasure."""

from __future__ import annotations

from collections.abc import Callable

from fabric_network.contracts import snapshot_root
from fabric_network.ledger import Ledger
from fabric_network.merkle import merkle_root
from tests.contracts.conftest import new_id, new_pseudonym

RECORD = "ConsentContract:record_consent"
SINCE_2026 = "2026-01-01T00:00:00Z"


def _grant(ledger: Ledger, pseudonym: str, purpose: str = "HRESCH", valid_until: str = "") -> dict:
    return ledger.submit(RECORD, pseudonym, purpose, "research", SINCE_2026, valid_until).result


def _active(ledger: Ledger, hospital: str, purpose: str = "HRESCH", at: str = "") -> list[str]:
    return ledger.evaluate("ConsentContract:list_active_consents", purpose, hospital, at)


def test_withdrawn_consent_leaves_the_next_snapshot(hospital_a: Ledger) -> None:
    stays, leaves = new_pseudonym(), new_pseudonym()
    _grant(hospital_a, stays)
    _grant(hospital_a, leaves)
    first = hospital_a.submit("ConsentContract:create_consent_snapshot", new_id("snap"), "HRESCH", [stays, leaves])
    assert first.result["count"] == 2

    withdrawn = hospital_a.submit("ConsentContract:withdraw_consent", leaves, "HRESCH").result
    assert withdrawn["status"] == "withdrawn" and withdrawn["withdrawn_at"]
    active = _active(hospital_a, "HospitalAMSP")
    assert stays in active and leaves not in active

    second = hospital_a.submit("ConsentContract:create_consent_snapshot", new_id("snap"), "HRESCH", "").result
    assert second["root"] == snapshot_root(_active(hospital_a, "HospitalAMSP", at=second["taken_at"]))
    assert leaves not in _active(hospital_a, "HospitalAMSP", at=second["taken_at"])
    # The consent was active when the first snapshot was taken and is not any more.
    assert leaves in _active(hospital_a, "HospitalAMSP", at=first.result["taken_at"])


def test_snapshot_root_is_reproducible_from_the_pseudonym_list(hospital_a: Ledger) -> None:
    used = sorted(new_pseudonym() for _ in range(5))
    for pseudonym in used:
        _grant(hospital_a, pseudonym)
    snapshot_id = new_id("snap")
    snapshot = hospital_a.submit("ConsentContract:create_consent_snapshot", snapshot_id, "HRESCH", used).result
    expected = merkle_root([bytes.fromhex(p) for p in used]).hex()
    assert snapshot["root"] == expected == snapshot_root(reversed(used))
    assert snapshot["count"] == 5 and snapshot["hospital"] == "HospitalAMSP"
    assert hospital_a.evaluate("ConsentContract:read_consent_snapshot", snapshot_id) == snapshot


def test_snapshot_refuses_a_patient_without_active_consent(hospital_a: Ledger, refused: Callable[..., str]) -> None:
    consented, stranger = new_pseudonym(), new_pseudonym()
    _grant(hospital_a, consented)
    message = refused(
        hospital_a, "ConsentContract:create_consent_snapshot", new_id("snap"), "HRESCH", [consented, stranger]
    )
    assert "pseudonyms[1]" in message


def test_a_hospital_cannot_write_another_hospitals_consents(
    hospital_a: Ledger, hospital_b: Ledger, refused: Callable[..., str]
) -> None:
    pseudonym = new_pseudonym()
    _grant(hospital_a, pseudonym)
    for function, args in (
        ("ConsentContract:withdraw_consent", (pseudonym, "HRESCH")),
        ("ConsentContract:update_consent", (pseudonym, "HRESCH", "research", SINCE_2026, "")),
        (RECORD, (pseudonym, "HRESCH", "research", SINCE_2026, "")),
        ("ConsentContract:record_erasure", (pseudonym,)),
    ):
        assert "another hospital" in refused(hospital_b, function, *args)
    assert hospital_a.evaluate("ConsentContract:read_consent", pseudonym, "HRESCH")["status"] == "active"
    assert pseudonym not in _active(hospital_b, "HospitalBMSP")


def test_the_consortium_cannot_record_consents(consortium: Ledger, refused: Callable[..., str]) -> None:
    message = refused(consortium, RECORD, new_pseudonym(), "HRESCH", "research", SINCE_2026, "")
    assert message.startswith(f"{RECORD}: caller:")


def test_validity_period_bounds_activity(hospital_a: Ledger) -> None:
    """Fixed instants on both sides of the end of validity: the outcome does not depend on today's date."""
    expired, current = new_pseudonym(), new_pseudonym()
    _grant(hospital_a, expired, valid_until="2026-02-01T00:00:00Z")
    _grant(hospital_a, current)
    before = _active(hospital_a, "HospitalAMSP", at="2026-01-31T23:59:59Z")
    assert expired in before and current in before
    after = _active(hospital_a, "HospitalAMSP", at="2026-02-01T00:00:00Z")
    assert expired not in after and current in after


def test_consent_history_lists_every_version(hospital_a: Ledger) -> None:
    pseudonym = new_pseudonym()
    _grant(hospital_a, pseudonym)
    hospital_a.submit("ConsentContract:withdraw_consent", pseudonym, "HRESCH")
    hospital_a.submit("ConsentContract:update_consent", pseudonym, "HRESCH", "research", SINCE_2026, "")
    _grant(hospital_a, pseudonym, purpose="TREAT")
    history = hospital_a.evaluate("ConsentContract:consent_history", pseudonym)
    statuses = [(v["value"]["purpose"], v["value"]["status"]) for v in history]
    assert statuses == [("HRESCH", "active"), ("HRESCH", "withdrawn"), ("HRESCH", "active"), ("TREAT", "active")]
    assert all(v["tx_id"] for v in history)


def test_erasure_withdraws_everything_and_blocks_new_consent(hospital_a: Ledger, refused: Callable[..., str]) -> None:
    pseudonym = new_pseudonym()
    _grant(hospital_a, pseudonym)
    _grant(hospital_a, pseudonym, purpose="TREAT")
    erasure = hospital_a.submit("ConsentContract:record_erasure", pseudonym).result
    assert erasure["withdrawn_purposes"] == ["HRESCH", "TREAT"] and erasure["basis"] == "GDPR-Art17"
    assert pseudonym not in _active(hospital_a, "HospitalAMSP")
    assert hospital_a.evaluate("ConsentContract:read_erasure", pseudonym)["hospital"] == "HospitalAMSP"
    assert "erased" in refused(hospital_a, RECORD, pseudonym, "PUBHLTH", "research", SINCE_2026, "")
