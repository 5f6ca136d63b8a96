"""CLI conventions every command keeps: the environment is read, choices are validated and listed, and a user's
mistake (here: a state directory that does not exist) ends in one line naming it, never a traceback."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import click
import pytest
import typer.main
from typer.testing import CliRunner

from carefed.cli import app
from fabric_network.embedded.store import LEDGER_FILE
from fabric_network.identities import init_identities
from harness.demo import next_steps

runner = CliRunner()
MISSING = "no-such-state"

#: Every command with the fewest arguments it accepts, run against a state dir that does not exist.
WITH_MISSING_STATE: dict[str, list[str]] = {
    "node init": ["--hospital", "hospital-a", "--data", "no.csv", "--schema", "no.toml"],
    "node check": ["--hospital", "hospital-a"],
    "node start": ["--hospital", "hospital-a"],
    "node status": ["--hospital", "hospital-a"],
    "node forget": ["--hospital", "hospital-a"],
    "node pseudonym": ["--hospital", "hospital-a"],
    "node models": ["--hospital", "hospital-a"],
    "node he-key create": [
        "--hospital",
        "hospital-a",
        "--key-id",
        "he-1",
        "--recipients",
        "hospital-b",
        "--recipient-keys",
        "k",
    ],
    "node he-key accept": ["hospital-a.sealed", "--hospital", "hospital-a"],
    "ledger status": [],
    "ledger verify": [],
    "ledger history": ["consent/abc/HRESCH"],
    "ledger events": [],
    "fabric up": [],
    "fabric status": [],
    "fabric down": [],
    "audit export": ["--out", "export"],
    "audit verify": ["export"],
    "report access": ["ab" * 32],
    "report disclosures": [],
    "report consent-coverage": ["run-1"],
    "report privacy-budget": [],
    "report lineage": ["model-1"],
    "report credit": ["model-1"],
    "node approve": ["run-1", "--hospital", "hospital-a"],
    "node reject": ["run-1", "--hospital", "hospital-a"],
    "consortium propose": ["run-1", "--hospitals", "hospital-a,hospital-b", "--spec", "no-spec.json"],
    "consortium resume": ["run-1"],
    "consortium register-node": ["supernode-auth.pub"],
    "consortium run": ["run-1"],
    "consortium runs": [],
    "consortium add-hospital": ["hospital-a.bundle.json"],
    "consortium up": ["--host", "10.0.0.1"],
    "consortium init-ledger": ["--epsilon-limit", "10"],
    "consortium install-he-key": ["outbox"],
    "node join": ["join.bundle.json", "--hospital", "hospital-a"],
    "node consent": ["mrns.txt", "--hospital", "hospital-a"],
    "query": ["count", "--cohort", str(Path(__file__).resolve().parents[2] / "data/synthea-r4/cohort-alive.toml")],
}
#: Commands that create a state dir, or run until stopped: a missing state dir is not a mistake for them.
CREATE_OR_SERVE = {
    "demo", "consortium superlink", "keys ceremony", "ledger init", "fabric install", "api create-user", "org init"
}  # fmt: skip


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> set[str]:
    if not isinstance(command, click.Group) or not command.commands:  # a group without subcommands runs itself
        return {" ".join(path)}
    return {name for sub, child in command.commands.items() for name in _commands(child, (*path, sub))}


def test_every_command_is_driven_with_a_missing_state_dir() -> None:
    assert _commands(typer.main.get_command(app)) == set(WITH_MISSING_STATE) | CREATE_OR_SERVE


@pytest.mark.parametrize("command", sorted(WITH_MISSING_STATE))
def test_a_missing_state_dir_is_one_error_line_not_a_traceback(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [*command.split(), *WITH_MISSING_STATE[command], "--state-dir", MISSING]
    result = runner.invoke(app, args, input="MRN-0001\n")
    assert result.exit_code in (1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.output.strip(), "a refusal must say why"
    assert not (tmp_path / MISSING).exists() or command == "node init", "a refused command must not create state"


def test_the_environment_names_the_state_dir_backend_and_org(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    init_identities(tmp_path / "from-env", ["hospital-a"])
    monkeypatch.chdir(tmp_path)
    env = {"CAREFED_STATE_DIR": "from-env", "CAREFED_ORG": "hospital-a", "CAREFED_LEDGER_BACKEND": "embedded"}
    result = runner.invoke(app, ["ledger", "status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["state_dir"] == "from-env" and status["backend"] == "embedded"
    assert "(HospitalAMSP)" in status["identity"], status  # CAREFED_ORG chose who reads
    node = runner.invoke(app, ["node", "status"], env=env)  # --hospital from CAREFED_ORG too
    assert node.exit_code == 1 and "hospital-a" in node.output and "Missing option" not in node.output, node.output
    # An option on the command line still wins over the environment.
    result = runner.invoke(app, ["ledger", "status", "--state-dir", MISSING], env=env)
    assert result.exit_code == 1 and MISSING in result.output


def test_a_damaged_ledger_file_is_one_error_line_and_stays_as_it_was(tmp_path: Path) -> None:
    """A ledger file that is not a database (a bad copy, a disk fault): one line naming it, nothing overwritten."""
    state = tmp_path / "state"
    init_identities(state, ["hospital-a"])
    damaged = state / "ledger" / LEDGER_FILE
    damaged.parent.mkdir(parents=True, exist_ok=True)
    damaged.write_bytes(b"not a database, but somebody's only copy " * 200)
    result = runner.invoke(app, ["ledger", "status", "--state-dir", str(state)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and str(damaged) in result.output.replace("\n", "")
    assert "not a readable ledger database" in result.output
    assert damaged.read_bytes() == b"not a database, but somebody's only copy " * 200


def test_a_wrong_backend_is_refused_with_the_valid_choices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for args, env in (
        (["ledger", "status", "--backend", "foo"], {}),
        (["ledger", "status"], {"CAREFED_LEDGER_BACKEND": "foo"}),
    ):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 2
        assert "foo" in result.output and "embedded" in result.output and "fabric" in result.output


def test_the_library_settings_read_the_same_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.core.config import Settings
    from fabric_network.ledger import LedgerSettings

    monkeypatch.setenv("CAREFED_STATE_DIR", "/srv/carefed")
    monkeypatch.setenv("CAREFED_ORG", "hospital-b")
    assert LedgerSettings().state_dir == Path("/srv/carefed") and LedgerSettings().org == "hospital-b"
    assert Settings().state_dir == Path("/srv/carefed")
    monkeypatch.setenv("CAREFED_API_STATE_DIR", "/srv/api")  # the service's own variable wins
    assert Settings().state_dir == Path("/srv/api")
    assert LedgerSettings(org="consortium").org == "consortium"  # an explicit argument wins over both


def test_help_lists_choices_environment_and_positional_arguments() -> None:
    wide = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    status = runner.invoke(app, ["ledger", "status", "--help"], env=wide).output
    assert "embedded" in status and "fabric" in status and "CAREFED_LEDGER_BACKEND" in status
    assert "CAREFED_STATE_DIR" in status and "CAREFED_ORG" in status
    export = runner.invoke(app, ["audit", "export", "--help"], env=wide).output
    assert "csv" in export and "jsonl" in export and "fhir" in export
    verify = runner.invoke(app, ["audit", "verify", "--help"], env=wide).output
    assert "Bundle directory written by" in verify  # a positional argument's help is shown
    wrong_role = ["api", "create-user", "--username", "u", "--password", "x" * 16, "--role", "nurse"]
    refused = runner.invoke(app, wrong_role, env=wide)
    assert refused.exit_code == 2 and all(r in refused.output for r in ("clinician", "compliance_officer"))


def test_mrns_are_never_accepted_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["node", "forget", "MRN-0001", "--hospital", "hospital-a"])
    assert result.exit_code == 2 and "unexpected extra argument" in result.output.lower()
    result = runner.invoke(app, ["node", "pseudonym", "MRN-0001", "--hospital", "hospital-a"])
    assert result.exit_code == 2 and "unexpected extra argument" in result.output.lower()


def test_log_lines_are_json_for_a_collector(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from carefed.logs import configure_logging, level_for
    from carefed.options import LogFormat

    configure_logging(level_for(verbose=1, quiet=False), LogFormat.json)
    try:
        logging.getLogger("carefed.test").info("round finished", extra={"ignored": True})
        logging.getLogger("carefed.test").debug("not at -v")
        (line,) = capsys.readouterr().err.splitlines()
        record = json.loads(line)
        assert record["event"] == "round finished" and record["level"] == "info"
        assert record["logger"] == "carefed.test" and record["timestamp"].endswith("Z")
        configure_logging(level_for(verbose=0, quiet=True), LogFormat.console)
        logging.getLogger("carefed.test").warning("hidden by --quiet")
        assert capsys.readouterr().err == ""
    finally:
        configure_logging()


def test_ledger_verify_reports_progress_block_by_block(tmp_path: Path) -> None:
    from fabric_network.ledger import open_ledger

    init_identities(tmp_path, ["hospital-a"])
    calls: list[tuple[int, int]] = []
    with open_ledger(state_dir=tmp_path, org="consortium") as ledger:
        ledger.submit("PrivacyBudgetContract:set_budget_limit", "HospitalAMSP", "HRESCH", "5.0")
        report = ledger.verify(lambda done, total: calls.append((done, total)))
    assert report.ok and report.height >= 2
    assert calls == [(n, report.height) for n in range(1, report.height + 1)]
    result = runner.invoke(app, ["ledger", "verify", "--state-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["ok"] is True


@pytest.mark.parametrize("backend", ["embedded", "fabric"])
def test_the_demos_next_steps_are_commands_the_cli_accepts(backend: str) -> None:
    """The demo ends by printing what to try next; each printed command must parse as written (an option the
    command lacks, or a missing `--backend fabric` after a Fabric demo, sent users into errors)."""
    hint = next_steps(Path("/tmp/demo-state"), backend, "run-1")
    commands = [shlex.split(command) for command in re.findall(r"`carefed ([^`]+)`", hint)]
    assert len(commands) >= 4
    for args in commands:
        if args[:2] != ["fabric", "up"]:
            assert ("--backend" in args) == (backend == "fabric"), args
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, f"`carefed {' '.join(args)}` is refused: {result.output}"
    if backend == "fabric":
        assert commands[0][:2] == ["fabric", "up"], "the stopped network must be started before the rest"
