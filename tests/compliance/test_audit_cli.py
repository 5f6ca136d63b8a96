"""`carefed audit export` and `carefed audit verify` end to end, on a copy of the scenario's ledger."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carefed.cli import app
from compliance.bundle import MANIFEST
from fabric_network.identities import init_identities
from tests.compliance.scenario import Scenario

runner = CliRunner()


@pytest.fixture
def state_dir(scenario: Scenario, tmp_path: Path) -> Path:
    """A private copy: every export is itself recorded on the ledger, which must not leak into other tests."""
    copy = tmp_path / "state"
    shutil.copytree(scenario.state_dir, copy)
    return copy


def test_export_then_verify_offline_with_the_consortium_cas(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "export-1"
    result = runner.invoke(
        app, ["audit", "export", "--format", "fhir", "--out", str(out), "--state-dir", str(state_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "exported 39 events (fhir)" in result.output
    cas = tmp_path / "cas"
    cas.mkdir()
    for ca_cert in (state_dir / "crypto").rglob("ca/*-cert.pem"):
        shutil.copy(ca_cert, cas / ca_cert.name)
    shutil.rmtree(state_dir)  # offline: the verifier has the bundle and the CA certificates, nothing else
    result = runner.invoke(app, ["audit", "verify", str(out), "--ca", str(cas)])
    assert result.exit_code == 0, result.output
    assert "39 events" in result.output


def _fingerprint(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("consortium CA fingerprint (SHA-256) ")]
    return line.rsplit(" ", 1)[1]


def test_a_regulator_verifies_with_the_bundle_and_the_fingerprint_only(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "export"
    result = runner.invoke(app, ["audit", "export", "--out", str(out), "--state-dir", str(state_dir)])
    assert result.exit_code == 0, result.output
    fingerprint = _fingerprint(result.output)
    outsiders = tmp_path / "outsiders"
    init_identities(outsiders, ["hospital-a"])  # another consortium, with its own CAs
    foreign = tmp_path / "foreign"
    result = runner.invoke(app, ["audit", "export", "--out", str(foreign), "--state-dir", str(outsiders)])
    assert result.exit_code == 0, result.output
    regulator = tmp_path / "regulator"  # a machine with the bundles and nothing else: no state dir at all
    regulator.mkdir()
    shutil.copytree(out, regulator / "bundle")
    shutil.copytree(foreign, regulator / "foreign")
    monkeypatch.chdir(regulator)

    result = runner.invoke(app, ["audit", "verify", "bundle", "--ca-fingerprint", fingerprint.upper()])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["audit", "verify", "bundle"])  # nothing to trust: says what to give
    assert result.exit_code == 1 and "--ca-fingerprint" in result.output
    assert not (regulator / ".carefed").exists()

    result = runner.invoke(app, ["audit", "verify", "foreign", "--ca-fingerprint", fingerprint])
    assert result.exit_code == 1
    assert "not under the pinned consortium CA" in result.output and fingerprint in result.output

    events = regulator / "bundle" / "events.jsonl"
    data = bytearray(events.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in one byte
    events.write_bytes(bytes(data))
    result = runner.invoke(app, ["audit", "verify", "bundle", "--ca-fingerprint", fingerprint, "--json"])
    assert result.exit_code == 1
    verdict = json.loads(result.output)
    assert verdict["ok"] is False
    assert "events.jsonl was changed after export (its SHA-256 differs from the manifest's)" in verdict["problems"]


def test_the_export_is_itself_audited_and_the_next_export_is_consistent(state_dir: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        result = runner.invoke(
            app, ["audit", "export", "--format", "csv", "--out", str(out), "--state-dir", str(state_dir)]
        )
        assert result.exit_code == 0, result.output
    assert "audit.export" in (second / "events.csv").read_text()
    result = runner.invoke(
        app, ["audit", "verify", str(second), "--previous", str(first), "--state-dir", str(state_dir)]
    )
    assert result.exit_code == 0 and f"consistent with {first}" in result.output.replace("\n", ""), result.output
    result = runner.invoke(
        app, ["audit", "verify", str(first), "--previous", str(second), "--state-dir", str(state_dir)]
    )
    assert result.exit_code == 1 and "more than this export's" in result.output


def test_verify_names_the_cause_and_exits_1(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    assert runner.invoke(app, ["audit", "export", "--out", str(out), "--state-dir", str(state_dir)]).exit_code == 0
    lines = (out / "events.jsonl").read_text().splitlines()
    removed = json.loads(lines.pop(4))["event_id"]
    (out / "events.jsonl").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["audit", "verify", str(out), "--state-dir", str(state_dir)])
    assert result.exit_code == 1
    assert f"event {removed} (position 4) was removed" in result.output.replace("\n", "")


def test_bad_arguments_are_named(state_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["audit", "export", "--format", "xml", "--out", str(tmp_path / "x"), "--state-dir", str(state_dir)]
    )
    assert result.exit_code == 2 and "'xml' is not one of 'csv', 'jsonl', 'fhir'" in result.output
    result = runner.invoke(
        app, ["audit", "export", "--from", "yesterday", "--out", str(tmp_path / "y"), "--state-dir", str(state_dir)]
    )
    assert result.exit_code == 1 and "--from 'yesterday'" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["audit", "export", "--out", str(tmp_path / "full"), "--state-dir", str(state_dir)])
    assert result.exit_code == 1 and "not empty" in result.output
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    result = runner.invoke(app, ["audit", "verify", str(tmp_path / "nothing-here"), "--state-dir", str(state_dir)])
    assert result.exit_code == 1 and "is not a directory" in result.output
    result = runner.invoke(app, ["audit", "verify", str(tmp_path / "full"), "--state-dir", str(state_dir)])
    assert result.exit_code == 1 and "no manifest.json" in result.output


def test_filters_select_by_actor_and_time(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "clinician"
    result = runner.invoke(
        app,
        [
            "audit",
            "export",
            "--actor",
            "clinician-b",
            "--from",
            "2000-01-01",
            "--out",
            str(out),
            "--state-dir",
            str(state_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    actors = {json.loads(line)["actor"] for line in (out / "events.jsonl").read_text().splitlines()}
    assert actors == {"clinician-b"}
    assert json.loads((out / MANIFEST).read_text())["filters"]["actor"] == "clinician-b"
    out = tmp_path / "future"
    result = runner.invoke(
        app, ["audit", "export", "--from", "2999-01-01", "--out", str(out), "--state-dir", str(state_dir)]
    )
    assert result.exit_code == 0 and "exported 0 events" in result.output
    assert runner.invoke(app, ["audit", "verify", str(out), "--state-dir", str(state_dir)]).exit_code == 0
