"""GovernanceContract's HE key records: the creating hospital records key id, public context hash and recipients;
each recipient records its acceptance; no reuse of a key id or public context; bad arguments named."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from fabric_network.ledger import Ledger
from tests.contracts.conftest import new_id

RECORD = "GovernanceContract:record_he_key"
ACCEPT = "GovernanceContract:accept_he_key"


def _key(recipients: list[str]) -> dict[str, object]:
    return {"public_context_sha256": secrets.token_hex(32), "recipients": recipients}


def test_a_key_is_recorded_by_its_creator_and_accepted_by_each_recipient(
    hospital_a: Ledger, hospital_b: Ledger, hospital_c: Ledger, refused: Callable[..., str]
) -> None:
    key_id, key = new_id("he"), _key(["HospitalCMSP", "HospitalBMSP"])
    recorded = hospital_a.submit(RECORD, key_id, key).result
    assert recorded["creator"] == "HospitalAMSP" and recorded["recipients"] == ["HospitalBMSP", "HospitalCMSP"]
    assert recorded["accepted"] == {} and set(recorded) == {
        "key_id",
        "creator",
        "public_context_sha256",
        "recipients",
        "accepted",
        "recorded_at",
        "tx_id",
    }, "no key material, no free text"
    accepted = hospital_b.submit(ACCEPT, key_id, key["public_context_sha256"]).result
    assert list(accepted["accepted"]) == ["HospitalBMSP"]
    assert "caller: has accepted this key already" in refused(hospital_b, ACCEPT, key_id, key["public_context_sha256"])
    wrong = secrets.token_hex(32)
    assert "public_context_sha256: differs" in refused(hospital_c, ACCEPT, key_id, wrong)
    hospital_c.submit(ACCEPT, key_id, key["public_context_sha256"])
    read = hospital_a.evaluate("GovernanceContract:read_he_key", key_id)
    assert sorted(read["accepted"]) == ["HospitalBMSP", "HospitalCMSP"]
    assert key_id in [k["key_id"] for k in hospital_b.evaluate("GovernanceContract:list_he_keys")]
    # Rotation is a new key with a new id: neither the id nor the public context is recorded twice.
    assert "key_id: a key with this id is recorded already" in refused(
        hospital_a, RECORD, key_id, _key(["HospitalBMSP"])
    )
    again = {**key, "recipients": ["HospitalCMSP"]}
    assert "key.public_context_sha256: this public context is recorded already" in refused(
        hospital_b, RECORD, new_id("he"), again
    )


def test_who_may_record_and_accept(
    consortium: Ledger, hospital_a: Ledger, hospital_c: Ledger, refused: Callable[..., str]
) -> None:
    key_id, key = new_id("he"), _key(["HospitalBMSP"])
    assert "caller: only a hospital" in refused(consortium, RECORD, key_id, key)
    hospital_a.submit(RECORD, key_id, key)
    assert "caller: not a recipient of this key" in refused(hospital_c, ACCEPT, key_id, key["public_context_sha256"])
    assert "caller: only a hospital" in refused(consortium, ACCEPT, key_id, key["public_context_sha256"])
    assert "caller: not a recipient" in refused(hospital_a, ACCEPT, key_id, key["public_context_sha256"])


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("he 1", _key(["HospitalBMSP"])), "key_id"),
        (("he-x", {**_key(["HospitalBMSP"]), "secret": "k"}), "key.secret"),
        (("he-x", {**_key(["HospitalBMSP"]), "public_context_sha256": "AB" * 32}), "key.public_context_sha256"),
        (("he-x", _key(["HospitalBMSP"] * 2)), "key.recipients"),
        (("he-x", _key(["Hospital B"])), "key.recipients[0]"),
        (("he-x", _key(["HospitalAMSP"])), "key.recipients"),
        (("he-x", _key(["ConsortiumMSP"])), "key.recipients"),
        (("he-x", "not json"), "key"),
    ],
    ids=["key_id", "extra-field", "hash", "repeated", "msp", "creator", "consortium", "json"],
)
def test_bad_arguments_are_named(
    hospital_a: Ledger, refused: Callable[..., str], args: tuple[object, ...], field: str
) -> None:
    assert refused(hospital_a, RECORD, *args).startswith(f"{RECORD}: {field}:")


def test_accept_arguments_are_named(hospital_b: Ledger, refused: Callable[..., str]) -> None:
    assert refused(hospital_b, ACCEPT, new_id("he"), "x").startswith(f"{ACCEPT}: public_context_sha256:")
    assert refused(hospital_b, ACCEPT, new_id("he"), "ab" * 32).startswith(f"{ACCEPT}: key_id: no such HE key")
