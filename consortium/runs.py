"""Starting, following and listing training runs on the consortium's standing SuperLink.

A run is proposed on the ledger first (`carefed consortium propose`), with the run config kept beside its
results (`<state>/runs/<run-id>.run-config.json`): starting it later submits exactly what the hospitals approved
(the ServerApp refuses anything else), and resuming it after a crash submits the same config with `resume`.
Progress is read from the results file the ServerApp rewrites after every round; the end from `flwr ls`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consortium.proposals import PROJECT_DIR
from federation.runtime import FlowerRuntime, RunOutcome, RuntimeFailure


def results_path(state_dir: Path, run_id: str) -> Path:
    """The results file the ServerApp rewrites after every round of the run."""
    return state_dir / "runs" / f"{run_id}.json"


def _run_config_path(state_dir: Path, run_id: str) -> Path:
    return state_dir / "runs" / f"{run_id}.run-config.json"


def save_run_config(state_dir: Path, run_id: str, config: dict[str, Any]) -> None:
    """Keep the run config a run was proposed (or started) with, for `start_run` and a resume after a crash."""
    path = _run_config_path(state_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, sort_keys=True), encoding="utf-8")


def saved_run_config(state_dir: Path, run_id: str) -> dict[str, Any]:
    """The run config kept for the run (FileNotFoundError naming the fix if the run was not proposed here)."""
    path = _run_config_path(state_dir, run_id)
    if not path.exists():
        raise FileNotFoundError(
            f"no run {run_id} was proposed from {state_dir} ({path} is missing): `carefed consortium propose` first"
        )
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return config


def saved_run_ids(state_dir: Path) -> list[str]:
    """Every run proposed or started from this state directory, oldest first."""
    paths = sorted((state_dir / "runs").glob("*.run-config.json"), key=lambda p: p.stat().st_mtime)
    return [p.name.removesuffix(".run-config.json") for p in paths]


@dataclass
class RunReport:
    outcome: RunOutcome
    results: dict[str, Any]
    wall_s: float


def submit_run(runtime: FlowerRuntime, state_dir: Path, run_id: str, *, resume: bool = False) -> int:
    """Start the run (or resume it) through the SuperLink with its kept config; the Flower run id."""
    config = {
        **saved_run_config(state_dir, run_id),
        "run-id": run_id,
        "state-dir": str(state_dir),
        "results-path": str(results_path(state_dir, run_id)),
    }
    if resume:
        config.update({"resume": True, "hold-after-round": 0})
    else:
        results_path(state_dir, run_id).unlink(missing_ok=True)
    return runtime.submit(PROJECT_DIR, config)


def follow_run(
    runtime: FlowerRuntime,
    state_dir: Path,
    run_id: str,
    flower_run: int,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    timeout_s: float = 1800.0,
    started: float | None = None,
) -> RunReport:
    """Report the run's progress whenever its results change (releasing a hold), wait for it to end; `started`
    (a `time.monotonic()` reading) is where the report's wall time counts from."""
    path = results_path(state_dir, run_id)
    resume_path = path.with_suffix(".resume")
    started = time.monotonic() if started is None else started
    seen = ""

    def poll() -> None:
        nonlocal seen
        if not path.exists():
            return
        text = path.read_text(encoding="utf-8")
        if text == seen:
            return
        seen = text
        results = json.loads(text)
        if on_progress is not None:
            on_progress(results)
        if results.get("status", "").startswith("holding"):
            resume_path.touch()

    outcome = runtime.wait_for_run(flower_run, timeout_s, poll_s=0.5, on_poll=poll)
    poll()
    if not path.exists():
        raise RuntimeFailure(
            f"run {run_id} wrote no results ({outcome.status}: {outcome.details}); see {runtime.log_path('superlink')}"
        )
    return RunReport(outcome, json.loads(path.read_text(encoding="utf-8")), time.monotonic() - started)


def summary_lines(run_id: str, report: RunReport) -> list[str]:
    """How a followed run ended, for people: its status, rounds and wall time, then the aggregator's events."""
    results = report.results
    head = f"run {run_id}: {results['status']} after {len(results['rounds'])} rounds ({report.wall_s:.0f} s)"
    return [head, *(f"  {event}" for event in results["events"])]


def progress_printer(echo: Callable[[str], object]) -> Callable[[dict[str, Any]], None]:
    """A `follow_run` callback that echoes :func:`progress_line` when it changes (the results file is rewritten
    at the run's end with the final model and events, which would repeat the last round's line)."""
    last = ""

    def on_progress(results: dict[str, Any]) -> None:
        nonlocal last
        line = progress_line(results)
        if line != last:
            echo(line)
            last = line

    return on_progress


def progress_line(results: dict[str, Any]) -> str:
    """One line per round for people following a run: who took part, who resent, who dropped, the status."""
    if not results.get("rounds"):
        return f"{results.get('status', '')}"
    last = results["rounds"][-1]
    replayed = f", resent: {', '.join(last['replayed'])}" if last.get("replayed") else ""
    dropped = f", dropped: {', '.join(last['dropped'])}" if last["dropped"] else ""
    return f"round {last['round']}: {', '.join(sorted(last['participants']))}{replayed}{dropped} — {results['status']}"
