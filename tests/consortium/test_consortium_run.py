"""The operator's path to a training run on a standing SuperLink, command by command (real Flower processes).

`consortium propose` records the run and keeps its config; each hospital approves it with its own identity
(`node approve`); `consortium run` starts exactly the proposed run and prints one line per round; `consortium
runs` lists it with its state on the ledger. Starting it a second time is refused (its rounds would be trained
again; its results stay), and a run nobody proposed here is a one-line error naming the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from carefed.cli import app
from fabric_network.contracts.common import opaque_id
from harness.demo_data import build_demo_data
from harness.local_consortium import HospitalPlan, LocalConsortium, set_up_consortium

pytestmark = pytest.mark.timeout(1200)

HOSPITALS = ["hospital-a", "hospital-b"]


def _words(output: str) -> str:
    """Typer's error box wrapped to the terminal: its words joined back into one line."""
    return " ".join(output.replace("│", " ").split())


def test_propose_approve_run_and_list_a_run_from_the_command_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    data = build_demo_data(state / "hospital-data", HOSPITALS, seed=4)
    set_up_consortium(
        state,
        [HospitalPlan(h.name, h.train_data, data.schema, h.consenting, 10.0, h.eval_data) for h in data.hospitals],
    )
    spec = tmp_path / "spec.json"
    spec.write_text(data.spec.to_json())
    run_id = opaque_id("run")
    runner = CliRunner()

    def carefed(*args: str) -> str:
        result = runner.invoke(app, [*args, "--state-dir", str(state)], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result.output

    with LocalConsortium(state, HOSPITALS) as consortium:
        consortium.start()
        carefed(
            "consortium", "propose", run_id, "--hospitals", ",".join(HOSPITALS), "--spec", str(spec), "--rounds", "1"
        )
        for hospital in HOSPITALS:
            carefed("node", "approve", run_id, "--hospital", hospital, "--yes")
        output = carefed("consortium", "run", run_id)
        assert "round 1: hospital-a, hospital-b" in output, output
        assert f"run {run_id}: completed after 1 rounds" in output
        again = runner.invoke(app, ["consortium", "run", run_id, "--state-dir", str(state)], terminal_width=200)
        assert again.exit_code == 2 and "is completed already" in _words(again.output), again.output
    listed = carefed("consortium", "runs")
    assert run_id in listed and "completed (completed)" in listed, listed
    unknown = runner.invoke(
        app, ["consortium", "run", "run-never-proposed", "--state-dir", str(state)], terminal_width=300
    )
    assert unknown.exit_code == 2 and "`carefed consortium propose` first" in _words(unknown.output), unknown.output
