"""The regulators' reports and the lineage export, computed from a real embedded ledger."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fhir.resources.R4B.provenance import Provenance
from prov.model import ProvDocument
from typer.testing import CliRunner

from carefed.cli import app
from compliance.lineage import lineage_fhir_provenance, lineage_prov, prov_round_trip_equal
from compliance.reports import (
    ReportError,
    access_report,
    consent_coverage_report,
    disclosures_report,
    privacy_budget_report,
    to_markdown,
)
from tests.compliance.scenario import MODEL_ID, RUN_ID, Scenario

runner = CliRunner()


def test_access_report_of_a_patient_who_withdrew_after_round_1_shows_round_1_only(scenario: Scenario) -> None:
    with scenario.ledger() as ledger:
        withdrawn = access_report(ledger, scenario.withdrawn)
        stayed = access_report(ledger, scenario.patients["hospital-a"][0])
    assert [(u["run_id"], u["round"]) for u in withdrawn["data_uses"]] == [(RUN_ID, 1)]
    assert [u["round"] for u in stayed["data_uses"]] == [1, 2]
    assert [v["status"] for v in withdrawn["consent_history"]] == ["active", "withdrawn"]
    assert {r["recipient"] for r in withdrawn["recipients"]} == {"clinician-b", "partner-lab"}
    assert withdrawn["model_versions"] == [{"model_id": MODEL_ID, "run_id": RUN_ID, "round": 2}]
    assert "| run-demo-1 | 1 | HospitalAMSP |" in to_markdown(withdrawn)


def test_access_report_rejects_a_value_that_is_not_a_pseudonym(scenario: Scenario) -> None:
    with scenario.ledger() as ledger, pytest.raises(ReportError, match=r"PSEUDONYM: give the patient.s pseudonym"):
        access_report(ledger, "MRN-000123")


def test_consent_coverage_counts_the_withdrawal(scenario: Scenario) -> None:
    with scenario.ledger() as ledger:
        report = consent_coverage_report(ledger, RUN_ID)
    rows = {(r["round"], r["hospital"]): r for r in report["rounds"]}
    assert (rows[1, "HospitalAMSP"]["eligible"], rows[1, "HospitalAMSP"]["withdrawn"]) == (4, 0)
    assert (rows[2, "HospitalAMSP"]["eligible"], rows[2, "HospitalAMSP"]["withdrawn"]) == (3, 1)
    assert rows[2, "HospitalBMSP"]["eligible"] == 3


def test_privacy_budget_per_hospital_purpose_and_run(scenario: Scenario) -> None:
    with scenario.ledger() as ledger:
        report = privacy_budget_report(ledger)
    hospital_a = next(b for b in report["budgets"] if b["hospital"] == "HospitalAMSP")
    assert (hospital_a["spent"], hospital_a["remaining"], hospital_a["per_run"]) == (2.0, 8.0, {RUN_ID: 2.0})
    # For people: ε to three decimals and the per-run charges as `run: ε`, never a dict repr or 16 digits.
    assert f"| HospitalAMSP | HRESCH | 10.000 | 2.000 | 8.000 | {RUN_ID}: 2.000 |" in to_markdown(report)
    assert "{" not in to_markdown(report)


def test_disclosures_are_accounted_with_recipient_and_purpose(scenario: Scenario) -> None:
    with scenario.ledger() as ledger:
        report = disclosures_report(ledger)
    assert [(d["recipient"], d["purpose"]) for d in report["disclosures"]][:2] == [
        ("clinician-b", "TREAT"),
        ("partner-lab", "HRESCH"),
    ]
    assert report["since"] < report["generated_at"]


def test_lineage_as_prov_survives_a_round_trip_and_names_every_round(scenario: Scenario) -> None:
    with scenario.ledger() as ledger:
        lineage = ledger.evaluate("LineageContract:get_model_lineage", MODEL_ID)
    document = lineage_prov(lineage)
    assert prov_round_trip_equal(document)
    provn = document.get_provn()
    for number in (1, 2):
        assert f"cf:round/{RUN_ID}/{number}" in provn
        for participant in lineage["rounds"][number - 1]["participants"]:
            assert participant["consent_snapshot_root"] in provn
    assert 'cf:dp_epsilon="3.0" %% xsd:double' in provn and 'cf:he_scheme="ckks"' in provn
    provenance = Provenance.model_validate(lineage_fhir_provenance(lineage))
    assert provenance.target[0].identifier.value == MODEL_ID
    assert len(provenance.entity) == 8  # 2 rounds, 2 hospitals, each a consent snapshot and an update


def test_report_commands_write_markdown_json_and_prov(scenario: Scenario, tmp_path: Path) -> None:
    state = ["--state-dir", str(scenario.state_dir)]
    result = runner.invoke(app, ["report", "access", scenario.withdrawn, "--format", "json", *state])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["data_uses"][0]["round"] == 1
    result = runner.invoke(app, ["report", "consent-coverage", RUN_ID, *state])
    assert result.exit_code == 0 and "| 2 | HospitalAMSP | 3 | 0 | 1 |" in result.output, result.output
    result = runner.invoke(app, ["report", "lineage", MODEL_ID, "--out", str(tmp_path), *state])
    assert result.exit_code == 0, result.output
    document = ProvDocument.deserialize(content=(tmp_path / f"{MODEL_ID}.prov.json").read_text(), format="json")
    assert document == lineage_prov(_lineage(scenario))
    assert (tmp_path / f"{MODEL_ID}.provn").read_text().startswith("document")
    result = runner.invoke(app, ["report", "lineage", "no-such-model", *state])
    assert result.exit_code == 1 and "no such registered" in result.output


def _lineage(scenario: Scenario) -> dict[str, object]:
    with scenario.ledger() as ledger:
        result: dict[str, object] = ledger.evaluate("LineageContract:get_model_lineage", MODEL_ID)
    return result


def test_recompute_repeats_every_charge_from_the_ledger(scenario: Scenario) -> None:
    """The scenario's hospitals charged 1.0 per round for a mechanism worth < 0.01: overstated, never understated."""
    with scenario.ledger() as ledger:
        report = privacy_budget_report(ledger, recompute=True)
    rows = [r for r in report["recomputed"] if r["run_id"] == RUN_ID]
    assert [(r["hospital"], r["round"]) for r in rows] == [
        ("HospitalAMSP", 1),
        ("HospitalAMSP", 2),
        ("HospitalBMSP", 1),
        ("HospitalBMSP", 2),
    ]
    assert all(0 < r["recomputed"] < 0.01 and r["difference"] > 0.99 and not r["understated"] for r in rows)
    assert not report["recompute_summary"]["agree_to_1e-6"] and report["recompute_summary"]["understated"] == 0
    assert "charges recomputed with carefed-rdp 1" in to_markdown(report)


def test_credit_of_a_model_per_hospital(scenario: Scenario, tmp_path: Path) -> None:
    state = ["--state-dir", str(scenario.state_dir)]
    out, chart = tmp_path / "credit.json", tmp_path / "credit.png"
    result = runner.invoke(
        app, ["report", "credit", MODEL_ID, "--format", "json", "--out", str(out), "--chart", str(chart), *state]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = {r["hospital"]: r for r in report["contributors"]}
    assert set(rows) == {"HospitalAMSP", "HospitalBMSP"}
    assert rows["HospitalAMSP"]["rounds"] == 2 and rows["HospitalAMSP"]["epsilon"] == 2.0
    # hospital-a trained on 4 then 3 patients (one withdrew), hospital-b on 3 and 3.
    assert rows["HospitalAMSP"]["example_rounds"] == 7 and rows["HospitalBMSP"]["example_rounds"] == 6
    assert abs(rows["HospitalAMSP"]["data_share"] - 7 / 13) < 1e-12
    assert chart.read_bytes().startswith(b"\x89PNG")
    markdown = runner.invoke(app, ["report", "credit", MODEL_ID, *state])
    assert "data_share" in markdown.output and "What each score reveals" in markdown.output
    refused = runner.invoke(app, ["report", "credit", "no-such-model", *state])
    assert refused.exit_code != 0 and "MODEL" in refused.output


#: Every compliance command that opens the ledger, with the arguments it needs on the scenario.
LEDGER_COMMANDS: dict[str, list[str]] = {
    "audit export": ["--out", "{tmp}/export"],
    "report access": ["{withdrawn}"],
    "report disclosures": [],
    "report consent-coverage": [RUN_ID],
    "report privacy-budget": [],
    "report credit": [MODEL_ID],
    "report lineage": [MODEL_ID, "--out", "{tmp}/lineage"],
}


@pytest.mark.parametrize("command", sorted(LEDGER_COMMANDS))
def test_backend_option_chooses_the_ledger_like_the_ledger_commands(
    command: str, scenario: Scenario, tmp_path: Path
) -> None:
    """`--backend` beats CAREFED_LEDGER_BACKEND, and `--backend fabric` really opens the Fabric backend (here:
    refused by name, this state dir has no Fabric network) instead of silently reading the embedded ledger."""
    state = tmp_path / "state"
    shutil.copytree(scenario.state_dir, state)  # audit export records itself on the ledger
    values = {"tmp": str(tmp_path), "withdrawn": scenario.withdrawn}
    args = [*command.split(), *(a.format(**values) for a in LEDGER_COMMANDS[command]), "--state-dir", str(state)]
    chosen = runner.invoke(app, [*args, "--backend", "embedded"], env={"CAREFED_LEDGER_BACKEND": "fabric"})
    assert chosen.exit_code == 0, chosen.output
    refused = runner.invoke(app, [*args, "--backend", "fabric"], env={"CAREFED_LEDGER_BACKEND": "embedded"})
    assert refused.exit_code == 1 and "no Fabric network here; run `carefed fabric up`" in refused.output
    assert "Traceback" not in refused.output
