"""`carefed node check --data --schema` and the node preflight."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from carefed.cli import app
from hospital_node.data import DataSchema, InvalidDataError, load_records

SCHEMA = 'mrn_column = "mrn"\nlabel_column = "y"\n[[features]]\nname = "x"\nmin = 0\nmax = 10\n'


def test_check_data_prints_one_line_per_problem_and_fails(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SCHEMA)
    (tmp_path / "d.csv").write_text("mrn,y,x,notes\nM1,1,2,a\nM2,,3,b\nM3,0,zz,c\nM1,0,1,d\n")
    result = CliRunner().invoke(
        app, ["node", "check", "--data", str(tmp_path / "d.csv"), "--schema", str(tmp_path / "s.toml")]
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "d.csv:" in line]
    assert len(lines) == 4
    assert any("line 1: column 'notes': unknown column" in line for line in lines)
    assert any("line 3: column 'y': missing label" in line for line in lines)
    assert any("line 4: column 'x': non-numeric value 'zz'" in line for line in lines)
    assert any("line 5: column 'mrn': duplicate MRN (first seen at line 2)" in line for line in lines)


def test_data_with_bad_rows_trains_nothing_unless_they_may_be_dropped(tmp_path: Path) -> None:
    """What `node check` announces ("trains nothing" / "would drop N") is what training then gets."""
    (tmp_path / "s.toml").write_text(SCHEMA)
    (tmp_path / "d.csv").write_text("mrn,y,x\nM1,1,2\nM2,,3\nM3,0,zz\nM4,0,1\n")
    report = load_records(tmp_path / "d.csv", DataSchema.from_toml(tmp_path / "s.toml"))
    with pytest.raises(InvalidDataError, match=r"(?s)2 problem\(s\), nothing trained.*--drop-bad-rows"):
        report.usable_records()
    assert report.usable_records(drop_bad_rows=True).mrns == ("M1", "M4")
    dropping = CliRunner().invoke(
        app,
        ["node", "check", "--drop-bad-rows", "--data", str(tmp_path / "d.csv"), "--schema", str(tmp_path / "s.toml")],
    )
    assert dropping.exit_code == 1 and "2 problem(s) in 2 of 4 records; would drop 2" in dropping.output


def test_check_clean_data_passes(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SCHEMA)
    (tmp_path / "d.csv").write_text("mrn,y,x\nM1,1,2\nM2,0,3\n")
    result = CliRunner().invoke(
        app, ["node", "check", "--data", str(tmp_path / "d.csv"), "--schema", str(tmp_path / "s.toml")]
    )
    assert result.exit_code == 0 and "OK: 2 valid records" in result.output


def test_a_semicolon_separated_file_is_one_line_naming_the_separator(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SCHEMA)
    rows = "".join(f"M{i};{i % 2};{i % 10}\n" for i in range(500))
    (tmp_path / "d.csv").write_text("mrn;y;x\n" + rows)
    result = CliRunner().invoke(
        app, ["node", "check", "--data", str(tmp_path / "d.csv"), "--schema", str(tmp_path / "s.toml")]
    )
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if "d.csv:" in line]
    assert "the header has one column but the schema declares 3" in line
    assert "the file looks ';'-separated; save it comma-separated" in line


def test_a_header_without_records_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SCHEMA)
    (tmp_path / "d.csv").write_text("mrn,y,x\n")
    result = CliRunner().invoke(
        app, ["node", "check", "--data", str(tmp_path / "d.csv"), "--schema", str(tmp_path / "s.toml")]
    )
    assert result.exit_code == 1 and "no records after the header: nothing to train on" in result.output
    assert "OK" not in result.output


def _initialised_node(tmp_path: Path) -> Path:
    """`carefed node init` of hospital-a with two valid records and a SuperLink nobody serves; the state dir."""
    (tmp_path / "s.toml").write_text(SCHEMA)
    (tmp_path / "d.csv").write_text("mrn,y,x\nM1,1,2\nM2,0,3\n")
    state = tmp_path / "state"
    data = ["--data", str(tmp_path / "d.csv"), "--schema", str(tmp_path / "s.toml")]
    where = ["--superlink", "127.0.0.1:9", "--insecure", "--state-dir", str(state)]
    init = CliRunner().invoke(app, ["node", "init", "--hospital", "hospital-a", *data, *where])
    assert init.exit_code == 0, init.output
    return state


def test_init_then_preflight_names_what_is_missing_and_how_to_fix_it(tmp_path: Path) -> None:
    state = _initialised_node(tmp_path)
    runner = CliRunner()
    assert (
        (state / "nodes" / "hospital-a" / "keys" / "supernode-auth.pub").read_text().startswith("ecdsa-sha2-nistp256")
    )
    check = runner.invoke(
        app, ["node", "check", "--hospital", "hospital-a", "--state-dir", str(state)], terminal_width=250
    )
    assert check.exit_code == 1
    output = check.output
    for row, fix in (
        ("CKKS secret key", "carefed node he-key"),
        ("ledger", "carefed ledger init"),
        ("SuperLink", ""),
    ):
        line = next(line for line in output.splitlines() if row in line)
        assert "FAIL" in line and fix in line
    assert any("data" in line and "pass" in line for line in output.splitlines())


def _workers(parent: psutil.Process) -> list[psutil.Process]:
    """The live node workers under `parent` (a killed one is a zombie until reaped: not counted)."""
    found = []
    for child in parent.children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "hospital_node.worker" in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s:.0f} s: {what}"
        time.sleep(0.2)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_node_start_restarts_a_killed_worker_and_stops_everything(tmp_path: Path, stop: signal.Signals) -> None:
    """A worker killed mid-run costs its hospital one round, not the node: `node start` starts a new one. Ctrl-C
    or SIGTERM (how systemd stops a service) then stops the worker and the SuperNode (nothing left running)."""
    state = _initialised_node(tmp_path)
    stderr = tmp_path / "node-start.err"
    with stderr.open("wb") as errors:
        node = subprocess.Popen(
            [sys.executable, "-m", "carefed", "node", "start", "--hospital", "hospital-a", "--state-dir", str(state)],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:
        parent = psutil.Process(node.pid)
        _wait_until(lambda: len(_workers(parent)) == 1, "the worker starts")
        first = _workers(parent)[0]
        first.kill()
        _wait_until(lambda: [w.pid for w in _workers(parent)] not in ([], [first.pid]), "a new worker starts")
        assert "worker exited with code -9; restarting it" in stderr.read_text()
        everything = [parent, *parent.children(recursive=True)]
        node.send_signal(stop)
        node.wait(timeout=60)
        _, alive = psutil.wait_procs(everything, timeout=30)
        assert alive == [], f"left running: {[p.cmdline() for p in alive]}"
    finally:
        if node.poll() is None:
            node.kill()
