"""`carefed ledger status | verify | history | events`: what an operator sees, and named errors."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from typer.testing import CliRunner

from carefed.cli import app
from fabric_network.ledger import open_ledger


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["ledger", *args])
    return result.exit_code, result.output


def test_commands_on_a_ledger_with_a_consent(state_dir: Path) -> None:
    pseudonym = secrets.token_hex(32)
    with open_ledger(state_dir=state_dir, org="hospital-a") as ledger:
        ledger.submit("ConsentContract:record_consent", pseudonym, "HRESCH", "research", "2026-01-01T00:00:00Z", "")
        ledger.submit("ConsentContract:withdraw_consent", pseudonym, "HRESCH")
    code, output = _cli("status", "--state-dir", str(state_dir))
    assert code == 0 and "height (blocks)" in output and "HospitalAMSP" in output
    code, output = _cli("verify", "--state-dir", str(state_dir))
    assert code == 0 and "3 blocks, 3 transactions" in output
    code, output = _cli("history", f"consent/{pseudonym}/HRESCH", "--state-dir", str(state_dir))
    assert code == 0 and "withdrawn" in output
    code, output = _cli("events", "--state-dir", str(state_dir), "--json", "--from-block", "2")
    events = [json.loads(line) for line in output.splitlines()]
    assert code == 0 and [e["name"] for e in events] == ["ConsentWithdrawn"] and events[0]["block_number"] == 2


def test_named_errors(state_dir: Path, tmp_path: Path) -> None:
    code, output = _cli("status", "--state-dir", str(tmp_path / "nowhere"))
    assert code == 1 and "--state-dir" in output and "carefed ledger init" in output
    code, output = _cli("history", "consent/unknown/HRESCH", "--state-dir", str(state_dir))
    assert code == 1 and "KEY: no committed version" in output
    code, output = _cli("init", "--state-dir", str(tmp_path / "new"), "--hospitals", "Bad_Name")
    assert code == 1 and "--hospitals" in output
    code, output = _cli("status", "--state-dir", str(state_dir), "--org", "hospital-z")
    assert code == 1 and "hospital-z" in output
