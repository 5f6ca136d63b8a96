"""The published Synthea patients (data/synthea-r4, three hospitals) through `carefed node check` and both formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.ingest import HOSPITALS, SYNTHEA, bulk_export, unpack
from carefed.cli import app
from hospital_node.data import DataSchema, load_records


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each hospital's archive unpacked as published: one transaction Bundle per patient."""
    return {d.name: d for d in unpack(tmp_path_factory.mktemp("synthea"))}


def _check(data: Path, schema: str, *extra: str) -> Any:
    return CliRunner().invoke(app, ["node", "check", "--data", str(data), "--schema", str(SYNTHEA / schema), *extra])


@pytest.mark.parametrize("hospital", HOSPITALS)
def test_node_check_passes_prints_the_funnel_and_flags_leaking_labs(hospitals: dict[str, Path], hospital: str) -> None:
    result = _check(hospitals[hospital], "diabetes.toml")
    assert result.exit_code == 0, result.output
    for shown in ("Cohort funnel", "patients read", "died before the index date", "in cohort", "trained on", "OK:"):
        assert shown in result.output
    assert "label leakage" not in result.output
    assert "skipped (not used by the schema): Claim" in result.output
    leaky = _check(hospitals[hospital], "diabetes-leaky.toml", "--json")
    report = json.loads(leaky.stdout)
    assert report["ok"], report["problems"]
    assert report["ehr"]["leaking"] == ["glucose", "hba1c"], report["ehr"]["leakage"]
    funnel = report["ehr"]["funnel"]
    assert funnel["patients_read"] == funnel["in_cohort"] + sum(funnel["dropped"].values())
    assert 40 <= funnel["trained_on"] <= funnel["in_cohort"]
    assert 0.2 < report["ehr"]["label"]["positive"] / funnel["trained_on"] < 0.6
    # Synthea names each file <Name>_<MRN>.json: the MRNs are known without parsing
    mrns = [path.stem.rsplit("_", 1)[1] for path in hospitals[hospital].glob("*.json")]
    assert not [m for m in mrns if m in result.output or m in leaky.stdout], "the check never prints an MRN"


def test_problem_lines_name_neither_the_mrn_nor_the_patient(hospitals: dict[str, Path], tmp_path: Path) -> None:
    """Synthea's file names carry the patient's name beside the MRN: a problem line shows neither."""
    strict = (SYNTHEA / "diabetes.toml").read_text(encoding="utf-8").replace("min = 12\n", "min = 30\n")
    (tmp_path / "strict.toml").write_text(strict, encoding="utf-8")
    report = load_records(hospitals["hospital-a"], DataSchema.from_toml(tmp_path / "strict.toml"))
    lines = [str(problem) for problem in report.problems]
    assert lines and all("below the declared minimum 30" in line for line in lines)
    assert all("<MRN> entry" in line for line in lines), lines[:3]
    names = {part for path in hospitals["hospital-a"].glob("*.json") for part in path.stem.split("_")}
    assert not [line for line in lines if any(part in line for part in names)], lines[:3]


def test_ndjson_export_gives_the_same_matrix_as_the_bundles(hospitals: dict[str, Path], tmp_path: Path) -> None:
    schema = DataSchema.from_toml(SYNTHEA / "diabetes-leaky.toml")
    from_bundles = load_records(hospitals["hospital-b"], schema).usable_records()
    # the converter: NDJSON per type, `Type/id` references, Observations split over a plain and a gzipped file
    report = load_records(bulk_export([hospitals["hospital-b"]], tmp_path / "export"), schema)
    from_ndjson = report.usable_records()
    assert report.ehr is not None and report.ehr.resources_by_type["Observation"] > 10_000
    assert from_ndjson.mrns == from_bundles.mrns and len(from_bundles) > 40
    np.testing.assert_array_equal(from_ndjson.features, from_bundles.features)
    np.testing.assert_array_equal(from_ndjson.labels, from_bundles.labels)
