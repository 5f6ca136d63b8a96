"""Crash recovery with real processes: a hospital's worker and then the whole consortium side die mid-run.

One two-round run (SuperLink, three SuperNodes with TLS, their workers, the embedded ledger):
- round 1: hospital-b's worker is SIGKILLed as it starts training. hospital-b must be recorded as dropped for
  round 1 and take part again from round 2 (its ClientApp runs the task itself while no worker listens).
- round 2: hospital-c's SuperNode is stopped (SIGSTOP), so the round cannot end; once hospital-a and hospital-b
  have released their round-2 updates, the SuperLink is SIGKILLed (its ServerApp is left behind, as in a crash).
  Restarting the SuperLink must leave no process of the old run, the SuperNodes reconnect, and the run resumed
  with `resume = true` continues from the checkpoint of round 1: hospital-a and hospital-b resend the updates
  they released (nothing charged twice) — hospital-b back in the run after its worker died — hospital-c trains
  (or resends, if it had trained before it stalled), and the run completes with all three.
The ledger must then hold each round once, the run as completed, exactly one ε charge per hospital and round,
and verify.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from consortium.runs import RunReport
from fabric_network.contracts.common import opaque_id
from fabric_network.ledger import open_ledger
from federation.layout import node_dir_for
from harness.demo_data import build_demo_data
from harness.local_consortium import HospitalPlan, LocalConsortium, RunRequest, set_up_consortium

# A two-round federation, a kill and a resume on 2 shared cores.
pytestmark = pytest.mark.timeout(1500)

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]
TRAINING = {"local-epochs": 1, "learning-rate": 0.2, "batch-size": 32}
WAIT_S = 600.0


@dataclass
class Scenario:
    state: Path
    run_id: str
    report: RunReport
    leftovers_after_restart: list[str]


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_S:.0f} s: {what}")
        time.sleep(0.05)


def _kept(state: Path, hospital: str, run_id: str, round_number: int) -> bool:
    return (node_dir_for(state, hospital) / "rounds" / run_id / f"{round_number:06d}.json").exists()


def _server_apps(home: Path) -> list[str]:
    """ServerApp processes of this deployment still alive (their environment names its FLWR_HOME)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("FLWR_HOME") == str(home) and "flwr-serverapp" in " ".join(process.cmdline()):
                found.append(f"{process.pid} {' '.join(process.cmdline())[:80]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    state = tmp_path_factory.mktemp("crash")
    data = build_demo_data(state / "hospital-data", HOSPITALS, seed=3)
    plans = [HospitalPlan(h.name, h.train_data, data.schema, h.consenting, 10.0, h.eval_data) for h in data.hospitals]
    set_up_consortium(state, plans)
    run_id = opaque_id("run")
    with LocalConsortium(state, HOSPITALS) as consortium:
        consortium.start()
        runtime = consortium.runtime
        request = RunRequest(run_id, data.spec, rounds=2, min_participants=2, round_timeout_s=240.0, extra=TRAINING)
        consortium.submit(request)
        started = f"task train started: run {run_id} round 1".encode()
        _wait_for(lambda: started in runtime.log_path("worker-hospital-b").read_bytes(), "hospital-b starts round 1")
        consortium.worker("hospital-b").send_signal(signal.SIGKILL)
        consortium.worker("hospital-b").wait()
        stalled = runtime.supernodes["hospital-c"]
        # hospital-c stalls once round 1 is aggregated (its checkpoint written), so round 2 cannot end.
        checkpoint = state / "consortium" / "runs" / run_id / "checkpoint.json"
        _wait_for(checkpoint.exists, "round 1 is aggregated")
        os.kill(stalled.pid, signal.SIGSTOP)
        _wait_for(
            lambda: _kept(state, "hospital-a", run_id, 2) and _kept(state, "hospital-b", run_id, 2),
            "hospital-a and hospital-b release their round-2 updates",
        )
        runtime.kill_superlink()
        os.kill(stalled.pid, signal.SIGCONT)
        runtime.restart_superlink()
        leftovers = _server_apps(runtime.home)
        report = consortium.resume(run_id, timeout_s=1200)
    yield Scenario(state, run_id, report, leftovers)


def test_the_resumed_run_completes_every_round(scenario: Scenario) -> None:
    results = scenario.report.results
    assert scenario.report.outcome.completed, scenario.report.outcome
    assert results["status"] == "completed", results["events"]
    assert any("resuming run" in event and "after round 1" in event for event in results["events"]), results["events"]
    first, second = results["rounds"]
    assert first["dropped"] and "hospital-b" not in first["participants"], "the killed worker's hospital dropped"
    assert sorted(second["participants"]) == HOSPITALS, "hospital-b rejoined the round after its worker died"
    # hospital-c may have trained round 2 before its SuperNode stalled: then it resends too.
    assert {"hospital-a", "hospital-b"} <= set(second["replayed"]), "released updates were resent, not retrained"
    assert results["final"]["model_id"] == f"{scenario.run_id}/model"


def test_restarting_the_superlink_leaves_no_process_of_the_crashed_run(scenario: Scenario) -> None:
    assert scenario.leftovers_after_restart == []


def test_no_round_is_charged_twice_and_the_ledger_verifies(scenario: Scenario) -> None:
    with open_ledger(state_dir=scenario.state, org="consortium") as ledger:
        run = ledger.evaluate("LineageContract:read_run", scenario.run_id)
        rounds = ledger.evaluate("LineageContract:list_rounds", scenario.run_id)
        charges: dict[str, list[Any]] = {}
        for msp in ("HospitalAMSP", "HospitalBMSP", "HospitalCMSP"):
            listed = ledger.evaluate("PrivacyBudgetContract:list_budget_charges", msp, "HRESCH")
            charges[msp] = sorted(c["round"] for c in listed if c["run_id"] == scenario.run_id)
            spent = float(ledger.evaluate("PrivacyBudgetContract:read_budget", msp, "HRESCH")["spent"])
            assert spent == pytest.approx(sum(c["epsilon"] for c in listed)), msp
        verification = ledger.verify()
    assert run["status"] == "completed" and run["end"] == {
        "status": "completed",
        "rounds_completed": 2,
        "reason": "completed",
    }
    assert [r["round"] for r in rounds] == [1, 2]
    assert "HospitalBMSP" in rounds[0]["dropped"]
    assert charges["HospitalAMSP"] == charges["HospitalCMSP"] == [1, 2], "round 2 charged once, before the crash"
    # hospital-b's worker died as round 1 started: before its charge (nothing spent) or after (the ε stays spent,
    # conservatively); either way never a second charge for a round.
    assert charges["HospitalBMSP"] in ([2], [1, 2])
    assert verification.ok
