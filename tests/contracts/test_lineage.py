"""LineageContract through the Ledger interface: a run, its rounds, a model, and the model's lineage."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from fabric_network.ledger import Ledger
from tests.contracts.conftest import new_id, new_pseudonym, start_run, vouch


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


RUN_SPEC = {
    "purpose": "HRESCH",
    "hospitals": ["HospitalAMSP", "HospitalBMSP"],
    "dp": {"epsilon": 3.0, "delta": 1e-5, "noise_multiplier": 1.1, "max_grad_norm": 1.0, "accountant": "rdp"},
    "he": {"scheme": "ckks", "poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [40, 40], "global_scale_bits": 30},
    "code_version": "0.1.0",
    "model_name": "breast-cancer-mlp",
}


def _snapshot(ledger: Ledger) -> dict[str, Any]:
    pseudonym = new_pseudonym()
    ledger.submit("ConsentContract:record_consent", pseudonym, "HRESCH", "research", "2026-01-01T00:00:00Z", "")
    return ledger.submit("ConsentContract:create_consent_snapshot", new_id("snap"), "HRESCH", [pseudonym]).result


def _round(number: int, snapshots: dict[str, tuple[Ledger, dict[str, Any]]], run_id: str) -> dict[str, Any]:
    """Each hospital vouches for its update of the round; the round record references exactly those."""
    return {
        "round": number,
        "participants": [
            vouch(ledger, run_id, number, snap, _sha(f"{run_id}-{hospital}-{number}"))
            for hospital, (ledger, snap) in snapshots.items()
        ],
        "model_sha256": _sha(f"{run_id}-model-{number}"),
        "metrics": {"auc": 0.9 + number / 100},
    }


@pytest.fixture
def run_with_snapshots(
    consortium: Ledger, hospital_a: Ledger, hospital_b: Ledger, governed: list[str]
) -> tuple[str, dict[str, Any]]:
    run_id = new_id("run")
    start_run(consortium, run_id, RUN_SPEC, {hospital_a: "approve", hospital_b: "approve"})
    return run_id, {
        "HospitalAMSP": (hospital_a, _snapshot(hospital_a)),
        "HospitalBMSP": (hospital_b, _snapshot(hospital_b)),
    }


def test_lineage_of_a_model_lists_every_round(consortium: Ledger, run_with_snapshots) -> None:
    run_id, snapshots = run_with_snapshots
    for number in (1, 2, 3):
        consortium.submit("LineageContract:record_round", run_id, _round(number, snapshots, run_id))
    model_id = new_id("model")
    consortium.submit(
        "LineageContract:register_model",
        model_id,
        {
            "run_id": run_id,
            "round": 3,
            "sha256": _sha(f"{run_id}-model-3"),
            "name": "breast-cancer-mlp",
            "version": "1",
        },
    )
    lineage = consortium.evaluate("LineageContract:get_model_lineage", model_id)
    assert [r["round"] for r in lineage["rounds"]] == [1, 2, 3]
    assert lineage["run"]["dp"]["epsilon"] == 3.0 and lineage["model"]["sha256"] == _sha(f"{run_id}-model-3")
    roots = {p["hospital"]: p["consent_snapshot_root"] for p in lineage["rounds"][0]["participants"]}
    assert roots == {h: s["root"] for h, (_, s) in snapshots.items()}
    assert any(m["model_id"] == model_id for m in consortium.evaluate("LineageContract:list_models"))


def test_round_must_point_at_real_snapshots(
    consortium: Ledger, run_with_snapshots, refused: Callable[..., str]
) -> None:
    run_id, snapshots = run_with_snapshots
    record_round = "LineageContract:record_round"
    vouched = _round(1, snapshots, run_id)
    forged = {**vouched, "participants": [dict(p) for p in vouched["participants"]]}
    forged["participants"][1]["consent_snapshot_root"] = _sha("forged")
    assert "participants[1].consent_snapshot_root" in refused(consortium, record_round, run_id, forged)
    swapped = {**vouched, "participants": [dict(p) for p in vouched["participants"]]}
    swapped["participants"][0]["consent_snapshot_id"] = snapshots["HospitalBMSP"][1]["snapshot_id"]
    assert "participants[0].consent_snapshot_id" in refused(consortium, record_round, run_id, swapped)


def test_a_substituted_update_hash_is_refused_naming_the_hospital(
    consortium: Ledger, run_with_snapshots, refused: Callable[..., str]
) -> None:
    """The consortium cannot put an update into a round that its hospital did not vouch for."""
    run_id, snapshots = run_with_snapshots
    vouched = _round(1, snapshots, run_id)
    substituted = {**vouched, "participants": [dict(p) for p in vouched["participants"]]}
    substituted["participants"][1]["update_sha256"] = _sha("the aggregator's own update")
    message = refused(consortium, "LineageContract:record_round", run_id, substituted)
    assert "participants[1].update_sha256: differs from what HospitalBMSP recorded for round 1" in message
    overstated = {**vouched, "participants": [dict(p) for p in vouched["participants"]]}
    overstated["participants"][0]["epsilon_spent"] = 0.25
    assert "HospitalAMSP's ε charge" in refused(consortium, "LineageContract:record_round", run_id, overstated)
    unvouched = _round(2, {"HospitalAMSP": snapshots["HospitalAMSP"]}, run_id)
    unvouched["participants"].append({**vouched["participants"][1], "update_sha256": _sha("never recorded")})
    assert "HospitalBMSP recorded no update for round 2" in refused(
        consortium, "LineageContract:record_round", run_id, unvouched
    )
    consortium.submit("LineageContract:record_round", run_id, vouched)
    recorded = consortium.evaluate("LineageContract:read_update", run_id, "1", "HospitalBMSP")
    assert recorded["update_sha256"] == vouched["participants"][1]["update_sha256"]


def test_model_hash_must_match_its_round(consortium: Ledger, run_with_snapshots, refused: Callable[..., str]) -> None:
    run_id, snapshots = run_with_snapshots
    consortium.submit("LineageContract:record_round", run_id, _round(1, snapshots, run_id))
    bad = {"run_id": run_id, "round": 1, "sha256": _sha("tampered")}
    assert "model.sha256" in refused(consortium, "LineageContract:register_model", new_id("model"), bad)


def test_only_the_consortium_records_lineage(hospital_a: Ledger, governed, refused: Callable[..., str]) -> None:
    assert "caller" in refused(hospital_a, "LineageContract:register_run", new_id("run"), RUN_SPEC)


def test_an_ended_run_takes_no_more_updates_or_rounds(
    consortium: Ledger, hospital_a: Ledger, run_with_snapshots, refused: Callable[..., str]
) -> None:
    """A run that failed (e.g. its aggregator crashed and could not resume) is closed: nobody spends ε in it."""
    run_id, snapshots = run_with_snapshots
    end = "LineageContract:end_run"
    first = _round(1, snapshots, run_id)
    consortium.submit("LineageContract:record_round", run_id, first)
    assert "outcome.reason" in refused(
        consortium, end, run_id, {"status": "failed", "rounds_completed": 1, "reason": "completed"}
    )
    assert "outcome.reason" in refused(
        consortium, end, run_id, {"status": "failed", "rounds_completed": 1, "reason": "lost it"}
    )
    assert "outcome.status" in refused(
        consortium, end, run_id, {"status": "paused", "rounds_completed": 1, "reason": "completed"}
    )
    assert "caller" in refused(
        hospital_a, end, run_id, {"status": "failed", "rounds_completed": 1, "reason": "resume-impossible"}
    )
    assert consortium.evaluate("LineageContract:read_run", run_id)["status"] == "started"  # refusals change nothing
    ended = consortium.submit(
        end, run_id, {"status": "failed", "rounds_completed": 1, "reason": "resume-impossible"}
    ).result
    assert ended["status"] == "failed" and ended["end"]["rounds_completed"] == 1
    assert "the run is failed, not started" in refused(
        consortium, "LineageContract:record_round", run_id, {**first, "round": 2}
    )
    ledger, snapshot = snapshots["HospitalAMSP"]
    assert "the run is failed" in refused(
        ledger,
        "LineageContract:record_update",
        run_id,
        {
            "round": 2,
            "update_sha256": _sha("late"),
            "consent_snapshot_id": snapshot["snapshot_id"],
            "consent_snapshot_root": snapshot["root"],
            "charge_tx_id": "0" * 64,
        },
    )
    assert "not started" in refused(
        consortium, end, run_id, {"status": "completed", "rounds_completed": 1, "reason": "completed"}
    )
