"""End to end with real processes: a SuperLink, three SuperNodes (TLS) and their workers, the embedded ledger.

One run of two rounds covers four scenarios, because Flower's polling makes every round cost seconds:
after round 1 (the ServerApp holds there) hospital-a's withdrawing patients withdraw, and hospital-c's SuperNode
is SIGKILLed; hospital-b's ε limit only affords round 1. Round 2 must then exclude the withdrawn patients (a
different consent-snapshot root on the ledger), record hospital-b's stop with its reason and hospital-c as
dropped, and complete with hospital-a alone (min participants 1). The final model's hash on the ledger must
match the artefact, and an edited artefact must be refused; hospital-a and hospital-b (still connected) must
hold a verified copy of it, hospital-c none. The aggregator must never have opened key material.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from carefed.cli import app
from consortium.keys import public_context_path
from consortium.runs import RunReport
from fabric_network.contracts.common import opaque_id, snapshot_root
from fabric_network.ledger import open_ledger
from federation.layout import consortium_registry_dir, node_dir_for
from federation.registry import ModelRegistry, TamperedModelError
from harness.demo_data import DemoData, build_demo_data
from harness.local_consortium import (
    HospitalPlan,
    LocalConsortium,
    RunRequest,
    set_up_consortium,
    withdraw_consents,
)
from hospital_node.config import DEFAULT_PURPOSE, NodeConfig
from hospital_node.dp_rounds import plan_round
from hospital_node.pseudonyms import PseudonymTable
from privacy.dp import DPConfig

# One module fixture runs a whole two-round federation (processes, TLS, training) for all its tests;
# on 2 shared cores under a load of 10+ a round takes minutes.
pytestmark = pytest.mark.timeout(1500)

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]
TRAINING = {"local-epochs": 1, "learning-rate": 0.2, "batch-size": 32}
ROUNDS = 2


@dataclass
class Scenario:
    state: Path
    data: DemoData
    run_id: str
    report: RunReport
    b_limit: float


def _round_one_epsilon(n_records: int) -> float:
    config = DPConfig(3.0, 1e-5, epochs=1, batch_size=32, learning_rate=0.2)
    plan, _ = plan_round(config, n_records, ROUNDS, None)
    return plan.epsilon


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    state = tmp_path_factory.mktemp("federation")
    data = build_demo_data(state / "hospital-data", HOSPITALS, seed=1)
    hospital_b = data.hospitals[1]
    b_limit = 1.2 * _round_one_epsilon(len(hospital_b.consenting))
    limits = {"hospital-a": 10.0, "hospital-b": b_limit, "hospital-c": 10.0}
    plans = [
        HospitalPlan(h.name, h.train_data, data.schema, h.consenting, limits[h.name], eval_data=h.eval_data)
        for h in data.hospitals
    ]
    set_up_consortium(state, plans)
    run_id = opaque_id("run")
    with LocalConsortium(state, HOSPITALS) as consortium:
        consortium.start()

        def between_rounds(results: dict[str, Any]) -> None:
            if not str(results.get("status", "")).startswith("holding"):
                return
            a = data.hospitals[0]
            with (
                open_ledger(state_dir=state, org=a.name) as ledger,
                PseudonymTable(node_dir_for(state, a.name) / "pseudonyms.sqlite") as table,
            ):
                withdraw_consents(ledger, table, a.withdrawing, DEFAULT_PURPOSE)
            consortium.kill_supernode("hospital-c")

        request = RunRequest(
            run_id,
            data.spec,
            rounds=ROUNDS,
            min_participants=1,
            round_timeout_s=120.0,  # a live hospital must answer in time on a loaded machine (the product default)
            hold_after_round=1,
            extra=TRAINING,
        )
        report = consortium.run(request, between_rounds, timeout_s=1200)
    yield Scenario(state, data, run_id, report, b_limit)


def test_run_completes_with_the_remaining_hospital(scenario: Scenario) -> None:
    results = scenario.report.results
    assert scenario.report.outcome.completed, scenario.report.outcome
    assert results["status"] == "completed", results["events"]
    first, second = results["rounds"]
    assert sorted(first["participants"]) == HOSPITALS
    assert second["participants"] == ["hospital-a"]


def test_withdrawn_patients_are_excluded_and_the_snapshot_root_changes(scenario: Scenario) -> None:
    a = scenario.data.hospitals[0]
    with (
        open_ledger(state_dir=scenario.state, org="consortium") as ledger,
        PseudonymTable(node_dir_for(scenario.state, a.name) / "pseudonyms.sqlite") as table,
    ):
        rounds = ledger.evaluate("LineageContract:list_rounds", scenario.run_id)
        by_round = {r["round"]: {p["hospital"]: p for p in r["participants"]} for r in rounds}
        consenting = table.mapping(a.consenting)
        withdrawn = set(table.mapping(a.withdrawing).values())
    root_1 = by_round[1]["HospitalAMSP"]["consent_snapshot_root"]
    root_2 = by_round[2]["HospitalAMSP"]["consent_snapshot_root"]
    assert withdrawn and root_1 != root_2
    assert root_1 == snapshot_root(consenting.values())
    assert root_2 == snapshot_root(set(consenting.values()) - withdrawn)
    excluded = scenario.report.results["rounds"][1]["consent_excluded"]["hospital-a"]
    assert excluded == len(a.mrns) - len(a.consenting) + len(a.withdrawing)


def test_spent_budget_stops_a_hospital_with_a_clear_message(scenario: Scenario) -> None:
    second = scenario.report.results["rounds"][1]
    reason = second["declined"]["hospital-b"]
    assert "privacy budget exhausted for hospital-b" in reason and "limit" in reason
    with open_ledger(state_dir=scenario.state, org="consortium") as ledger:
        budget = ledger.evaluate("PrivacyBudgetContract:read_budget", "HospitalBMSP", DEFAULT_PURPOSE)
        charges = ledger.evaluate("PrivacyBudgetContract:list_budget_charges", "HospitalBMSP", DEFAULT_PURPOSE)
    assert budget["spent"] <= scenario.b_limit
    assert [c["round"] for c in charges if c["run_id"] == scenario.run_id] == [1]


def test_killed_supernode_is_recorded_as_dropped(scenario: Scenario) -> None:
    second = scenario.report.results["rounds"][1]
    assert second["dropped"] == ["hospital-c"]
    assert any("hospital-c did not answer" in event for event in scenario.report.results["events"])
    with open_ledger(state_dir=scenario.state, org="consortium") as ledger:
        recorded = ledger.evaluate("LineageContract:read_round", scenario.run_id, "2")
    assert recorded["dropped"] == ["HospitalBMSP", "HospitalCMSP"]


def test_final_model_hash_on_ledger_matches_and_an_edited_artefact_is_refused(scenario: Scenario) -> None:
    final = scenario.report.results["final"]
    registry = ModelRegistry(consortium_registry_dir(scenario.state))
    with open_ledger(state_dir=scenario.state, org="consortium") as ledger:
        registered = ledger.evaluate("LineageContract:read_model", final["model_id"])
        lineage = ledger.evaluate("LineageContract:get_model_lineage", final["model_id"])
        path = registry.path_of(registered["sha256"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == registered["sha256"] == final["sha256"]
        assert registry.load(final["model_id"], registered["sha256"]).round == ROUNDS
        assert [r["round"] for r in lineage["rounds"]] == [1, 2]
        tampered = bytearray(path.read_bytes())
        tampered[-1] ^= 0x01
        path.chmod(0o644)
        path.write_bytes(bytes(tampered))
        with pytest.raises(TamperedModelError, match="altered"):
            registry.load(final["model_id"], registered["sha256"])
        assert ledger.verify().ok


def test_connected_hospitals_hold_a_verified_copy_of_the_final_model(scenario: Scenario) -> None:
    results = scenario.report.results
    final = results["final"]
    # hospital-b stopped training (budget) but is connected; hospital-c's SuperNode was killed.
    assert final["replicas"] == {"hospital-a": "stored", "hospital-b": "stored"}, results["events"]
    assert any(e.startswith("no replica for hospital-c") for e in results["events"]), results["events"]
    for hospital in ("hospital-a", "hospital-b"):
        node = NodeConfig.load(node_dir_for(scenario.state, hospital))
        copy = node.registry_dir / f"{final['sha256']}.model"
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == final["sha256"]
    listings = {}
    for hospital in HOSPITALS:
        args = ["node", "models", "--hospital", hospital, "--state-dir", str(scenario.state), "--json"]
        listed = CliRunner().invoke(app, args)
        assert listed.exit_code == 0, listed.output
        listings[hospital] = [(m["model_ids"], m["status"]) for m in json.loads(listed.output)["models"]]
    assert listings == {
        "hospital-a": [([final["model_id"]], "ok")],
        "hospital-b": [([final["model_id"]], "ok")],
        "hospital-c": [([final["model_id"]], "missing")],
    }


def test_aggregator_never_opened_key_material(scenario: Scenario) -> None:
    from privacy.he import MissingSecretKeyError, PublicContext, SecretContext, decrypt, encrypt, load_context

    results = scenario.report.results
    # The guard records each refused attempt before refusing it: none means the aggregator never tried
    # (tests/consortium/test_keys_and_registry.py shows the guard does catch and record an attempt).
    assert results["aggregator_denied"] == []
    opened = results["aggregator_opened"]
    assert str(public_context_path(scenario.state).resolve()) in opened
    nodes = str((scenario.state / "nodes").resolve())
    assert not [p for p in opened if p.startswith(nodes) or p.endswith("he-secret.ctx")]
    public = load_context(public_context_path(scenario.state).read_bytes())
    assert type(public) is PublicContext
    node = NodeConfig.load(node_dir_for(scenario.state, "hospital-a"))
    hospital_secret = SecretContext.deserialize(node.he_secret_context.read_bytes())
    assert public.fingerprint == hospital_secret.fingerprint, "the aggregator holds the run's context, keyless"
    with pytest.raises(MissingSecretKeyError, match="only hospitals can decrypt"):
        decrypt(public, encrypt(hospital_secret, [0.5]))
    assert node.he_secret_context.stat().st_mode & 0o077 == 0
