"""Run approval by a majority of the run's hospitals, and membership changed by a majority of the members."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from fabric_network.ledger import Ledger
from tests.contracts.conftest import QUIET_MECHANISM, new_id, new_pseudonym, start_run, vouch
from tests.contracts.test_lineage import RUN_SPEC

THREE = {**RUN_SPEC, "hospitals": ["HospitalAMSP", "HospitalBMSP", "HospitalCMSP"], "schema_sha256": "ab" * 32}


def _snapshot(ledger: Ledger) -> dict[str, Any]:
    pseudonym = new_pseudonym()
    ledger.submit("ConsentContract:record_consent", pseudonym, "HRESCH", "research", "2026-01-01T00:00:00Z", "")
    return ledger.submit("ConsentContract:create_consent_snapshot", new_id("snap"), "HRESCH", [pseudonym]).result


def test_one_approval_of_three_cannot_start_the_run(
    consortium: Ledger, hospital_a: Ledger, hospital_b: Ledger, governed, refused: Callable[..., str]
) -> None:
    run_id = new_id("run")
    proposed = consortium.submit("LineageContract:register_run", run_id, THREE).result
    assert proposed["status"] == "proposed" and proposed["votes"] == {}
    hospital_a.submit("LineageContract:vote_run", run_id, "approve")
    hospital_b.submit("LineageContract:vote_run", run_id, "reject")
    message = refused(consortium, "LineageContract:start_run", run_id)
    assert "1 of 3 approved, 2 needed" in message
    assert "not approved by HospitalBMSP, HospitalCMSP (HospitalBMSP rejected)" in message
    snapshot = _snapshot(hospital_a)
    charge = hospital_a.submit("PrivacyBudgetContract:charge_budget", "HRESCH", 0.5, run_id, 1, QUIET_MECHANISM)
    update = {
        "round": 1,
        "update_sha256": "cd" * 32,
        "consent_snapshot_id": snapshot["snapshot_id"],
        "consent_snapshot_root": snapshot["root"],
        "charge_tx_id": charge.tx_id,
    }
    assert "not started" in refused(hospital_a, "LineageContract:record_update", run_id, update)
    approval = hospital_a.evaluate("LineageContract:run_approval", run_id)
    assert (approval["approved"], approval["rejected"], approval["pending"]) == (
        ["HospitalAMSP"],
        ["HospitalBMSP"],
        ["HospitalCMSP"],
    )
    assert approval["status"] == "proposed" and not approval["majority"]


def test_two_of_three_start_the_run_and_the_rejecting_hospital_cannot_take_part(
    consortium: Ledger,
    hospital_a: Ledger,
    hospital_b: Ledger,
    hospital_c: Ledger,
    governed,
    refused: Callable[..., str],
) -> None:
    run_id = new_id("run")
    started = start_run(consortium, run_id, THREE, {hospital_a: "approve", hospital_b: "approve", hospital_c: "reject"})
    assert started["status"] == "started"
    assert "votes are closed" in refused(hospital_c, "LineageContract:vote_run", run_id, "approve")
    assert "already" in refused(consortium, "LineageContract:start_run", run_id)
    snapshot_c = _snapshot(hospital_c)
    with pytest.raises(Exception, match="HospitalCMSP has not approved this run"):
        vouch(hospital_c, run_id, 1, snapshot_c, "ef" * 32)
    participants = [vouch(h, run_id, 1, _snapshot(h), f"{i}" * 64) for i, h in enumerate((hospital_a, hospital_b))]
    record = {"round": 1, "participants": participants, "dropped": ["HospitalCMSP"], "model_sha256": "0" * 64}
    assert consortium.submit("LineageContract:record_round", run_id, record).result["round"] == 1


def test_who_may_vote_and_start(consortium: Ledger, hospital_a: Ledger, governed, refused: Callable[..., str]) -> None:
    run_id = new_id("run")
    consortium.submit("LineageContract:register_run", run_id, {**THREE, "hospitals": ["HospitalBMSP"]})
    assert "caller: not a hospital of this run" in refused(hospital_a, "LineageContract:vote_run", run_id, "approve")
    assert "vote: must be approve or reject" in refused(hospital_a, "LineageContract:vote_run", run_id, "yes")
    assert "caller" in refused(consortium, "LineageContract:vote_run", run_id, "approve")
    assert "caller" in refused(hospital_a, "LineageContract:start_run", run_id)
    outsider = {**THREE, "hospitals": ["HospitalAMSP", "HospitalZMSP"]}
    message = refused(consortium, "LineageContract:register_run", new_id("run"), outsider)
    assert "spec.hospitals: not members of the consortium: HospitalZMSP" in message


def test_membership_changes_by_majority_of_current_members(
    consortium: Ledger,
    hospital_a: Ledger,
    hospital_b: Ledger,
    hospital_c: Ledger,
    governed: list[str],
    refused: Callable[..., str],
) -> None:
    # A newcomer of its own (the Fabric ledger is shared by the session's tests); added, then removed again, so
    # the members are the three founders before and after.
    newcomer = f"Hospital{secrets.token_hex(4).upper()}MSP"
    members = consortium.evaluate("GovernanceContract:read_members")["hospitals"]
    assert sorted(members) == sorted(governed), "the vote counts below assume the three founding members"
    assert "init_members" in refused(consortium, "GovernanceContract:init_members", governed)
    add = new_id("add")
    proposal = hospital_a.submit(
        "GovernanceContract:propose_membership", add, {"action": "add", "hospital": newcomer}
    ).result
    assert proposal["voters"] == sorted(members) and proposal["status"] == "open"
    assert hospital_a.submit("GovernanceContract:vote_membership", add, "approve").result["status"] == "open"
    assert newcomer not in consortium.evaluate("GovernanceContract:read_members")["hospitals"], "1 of 3 is no majority"
    decided = hospital_b.submit("GovernanceContract:vote_membership", add, "approve").result
    assert decided["status"] == "approved" and decided["tally"]["approved"] == ["HospitalAMSP", "HospitalBMSP"]
    assert newcomer in consortium.evaluate("GovernanceContract:read_members")["hospitals"]
    assert "votes are closed" in refused(hospital_c, "GovernanceContract:vote_membership", add, "reject")
    remove = new_id("remove")
    consortium.submit("GovernanceContract:propose_membership", remove, {"action": "remove", "hospital": newcomer})
    hospital_a.submit("GovernanceContract:vote_membership", remove, "reject")
    # 4 voters now, 3 needed: after two rejections the majority is out of reach and the proposal closes.
    assert hospital_b.submit("GovernanceContract:vote_membership", remove, "reject").result["status"] == "rejected"
    assert newcomer in consortium.evaluate("GovernanceContract:read_members")["hospitals"]
    gone = new_id("remove")
    consortium.submit("GovernanceContract:propose_membership", gone, {"action": "remove", "hospital": newcomer})
    for ledger in (hospital_a, hospital_b):
        ledger.submit("GovernanceContract:vote_membership", gone, "approve")
    assert hospital_c.submit("GovernanceContract:vote_membership", gone, "approve").result["status"] == "approved"
    assert newcomer not in consortium.evaluate("GovernanceContract:read_members")["hospitals"]
    assert "not a member" in refused(
        hospital_a, "GovernanceContract:propose_membership", new_id("p"), {"action": "remove", "hospital": newcomer}
    )
