"""The regulators' reports and the lineage export, computed from a real embedded ledger."""

from __future__ import annotations

import json
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
        budgets = privacy_budget_report(ledger)["budgets"]
    hospital_a = next(b for b in budgets if b["hospital"] == "HospitalAMSP")
    assert (hospital_a["spent"], hospital_a["remaining"], hospital_a["per_run"]) == (2.0, 8.0, {RUN_ID: 2.0})


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
