"""No patient identifier leaves the hospital: the ledger, logs, exports and reports hold pseudonyms only.

The scanner looks at the bytes CareFed writes outside the hospitals' private stores (SQLite pages and WAL
included) for the HIPAA Safe Harbor identifiers: the patients' MRNs exactly, and phone numbers, e-mail
addresses and SSN-like numbers by pattern. It must find nothing, and it must find a planted identifier.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carefed.cli import app
from compliance.scanner import KnownIdentifiers, scan
from federation.layout import node_dir_for
from tests.compliance.scenario import MODEL_ID, MRNS, RUN_ID, Scenario, make_node_scenario

runner = CliRunner()


def _outputs_outside_the_hospitals(scenario: Scenario, out: Path) -> list[Path]:
    """Every export format, every report and the lineage files of the scenario, plus the ledger itself."""
    state = ["--state-dir", str(scenario.state_dir)]
    for fmt in ("csv", "jsonl", "fhir"):
        assert runner.invoke(app, ["audit", "export", "--format", fmt, "--out", str(out / fmt), *state]).exit_code == 0
    reports = [
        ["access", scenario.withdrawn],
        ["disclosures"],
        ["consent-coverage", RUN_ID],
        ["privacy-budget"],
    ]
    for number, args in enumerate(reports):
        for fmt in ("json", "markdown"):
            result = runner.invoke(
                app, ["report", *args, "--format", fmt, "--out", str(out / f"report-{number}.{fmt}"), *state]
            )
            assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["report", "lineage", MODEL_ID, "--out", str(out / "lineage"), *state]).exit_code == 0
    return [scenario.state_dir / "ledger", out]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, list[Path], Path]:
    scenario, table = make_node_scenario(tmp_path_factory.mktemp("node-scenario"))
    table.close()
    out = tmp_path_factory.mktemp("outputs")
    return scenario, _outputs_outside_the_hospitals(scenario, out), out


def test_no_identifier_in_ledger_exports_or_reports(outputs: tuple[Scenario, list[Path], Path]) -> None:
    scenario, targets, out = outputs
    assert len(list(out.rglob("*"))) > 15
    hits = scan(targets, KnownIdentifiers(mrns=MRNS))
    assert hits == [], "\n".join(map(str, hits))
    # The hospital's own table does hold the MRNs: the scanner sees them where they are.
    assert len(scan([node_dir_for(scenario.state_dir, "hospital-a")], KnownIdentifiers(mrns=MRNS))) >= len(MRNS)


@pytest.mark.parametrize(
    ("planted", "kind"),
    [
        (MRNS[0], "MRN"),
        ("555-867-5309", "phone number"),
        ("jane.doe@example.org", "e-mail address"),
        ("078-05-1120", "SSN-like number"),
    ],
)
def test_a_planted_identifier_is_found(
    outputs: tuple[Scenario, list[Path], Path], tmp_path: Path, planted: str, kind: str
) -> None:
    _, _, out = outputs
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    victim = copy / "jsonl" / "events.jsonl"
    victim.write_text(victim.read_text().replace('"purpose":"TREAT"', f'"purpose":"TREAT","note":"{planted}"', 1))
    hits = scan([copy], KnownIdentifiers(mrns=MRNS))
    assert [(h.path, h.kind) for h in hits] == [(victim, kind)]
    assert planted not in str(hits[0])  # the finding is reported masked


def test_consortium_identity_names_are_not_people_but_look_alikes_are(tmp_path: Path) -> None:
    text = (
        "msp/signcerts/User1@hospital-a.carefed.local-cert.pem signed by Admin@consortium.carefed.local; "
        "contact jane.doe@hospital.org or x@carefed.local.evil.com"
    )
    (tmp_path / "mixed.log").write_text(text)
    hits = scan([tmp_path], KnownIdentifiers())
    assert [(h.kind, h.masked) for h in hits] == [("e-mail address", "ja…g"), ("e-mail address", "x@…m")]
