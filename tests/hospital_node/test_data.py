"""Validation of a hospital's input: every bad row named with its line/resource, column and reason."""

import json
from pathlib import Path

import numpy as np
import pytest

from hospital_node.data import DataSchema, InvalidDataError, SchemaError, load_csv, load_records

SCHEMA_TOML = """
mrn_column = "mrn"
label_column = "malignant"

[[features]]
name = "radius"
unit = "mm"
min = 0
max = 50

[[features]]
name = "texture"
type = "float"
"""


@pytest.fixture
def schema(tmp_path: Path) -> DataSchema:
    path = tmp_path / "schema.toml"
    path.write_text(SCHEMA_TOML)
    return DataSchema.from_toml(path)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_clean_csv_loads_every_row_in_order(tmp_path: Path, schema: DataSchema) -> None:
    path = write(tmp_path, "ok.csv", "mrn,malignant,radius,texture\nA1,1,12.5,20\nA2,0,9.0,15.5\n")
    report = load_csv(path, schema)
    assert report.ok
    records = report.usable_records()
    assert records.mrns == ("A1", "A2")
    np.testing.assert_allclose(records.features, [[12.5, 20.0], [9.0, 15.5]])
    np.testing.assert_array_equal(records.labels, [1.0, 0.0])


def test_every_bad_row_is_reported_with_line_column_and_reason(tmp_path: Path, schema: DataSchema) -> None:
    path = write(
        tmp_path,
        "bad.csv",
        "mrn,malignant,radius,texture\n"
        "A1,1,12.5,20\n"  # line 2 ok
        "A2,,9.0,15\n"  # line 3 missing label
        "A3,0,abc,15\n"  # line 4 non-numeric
        "A1,0,9.0,15\n"  # line 5 duplicate MRN
        "A4,0,99,15\n"  # line 6 out of range
        "A5,2,9,15\n",  # line 7 label not binary
    )
    report = load_csv(path, schema)
    found = {(p.location, p.column) for p in report.problems}
    assert found == {
        ("line 3", "malignant"),
        ("line 4", "radius"),
        ("line 5", "mrn"),
        ("line 6", "radius"),
        ("line 7", "malignant"),
    }
    reasons = " | ".join(str(p) for p in report.problems)
    for expected in ("missing label", "non-numeric value 'abc'", "duplicate MRN (first seen at line 2)", "above"):
        assert expected in reasons
    assert "A1" not in reasons, "problems must not echo MRN values"
    assert report.bad_records == 5
    with pytest.raises(InvalidDataError, match="5 problem"):
        report.usable_records()
    kept = report.usable_records(drop_bad_rows=True)
    assert kept.mrns == ("A1",)


def test_unknown_and_missing_columns_refuse_even_when_dropping_rows(tmp_path: Path, schema: DataSchema) -> None:
    path = write(tmp_path, "cols.csv", "mrn,malignant,radius,notes\nA1,1,12,hello\n")
    report = load_csv(path, schema)
    assert {(p.location, p.column) for p in report.file_problems} == {("line 1", "notes"), ("line 1", "texture")}
    with pytest.raises(InvalidDataError, match="unknown column"):
        report.usable_records(drop_bad_rows=True)


def test_line_numbers_follow_quoted_multiline_fields(tmp_path: Path, schema: DataSchema) -> None:
    path = write(tmp_path, "ml.csv", 'mrn,malignant,radius,texture\n"A\n1",1,1,1\nA2,1,x,1\n')
    (problem,) = load_csv(path, schema).problems
    assert problem.location == "line 4"


def test_schema_errors_name_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "s.toml", 'mrn_column = "m"\nlabel_column = "y"\n[[features]]\nname = "a"\ntype = "text"\n')
    with pytest.raises(SchemaError, match=r"features\.0\.type"):
        DataSchema.from_toml(path)
    path.write_text('mrn_column = "m"\nlabel_column = "m"\n[[features]]\nname = "a"\n')
    with pytest.raises(SchemaError, match="repeated: m"):
        DataSchema.from_toml(path)


def _patient(pid: str, mrn: str) -> dict:
    coding = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
    return {"resourceType": "Patient", "id": pid, "identifier": [{"type": {"coding": [coding]}, "value": mrn}]}


def _obs(oid: str, pid: str, code: str, value: dict) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "urn:carefed:feature", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        **value,
    }


def test_fhir_bundle_without_rules_reads_observations_named_like_columns(tmp_path: Path, schema: DataSchema) -> None:
    entries = [
        _patient("p1", "M1"),
        _obs("o1", "p1", "radius", {"valueQuantity": {"value": 11.5, "unit": "mm"}}),
        _obs("o2", "p1", "texture", {"valueQuantity": {"value": 20}}),
        _obs("o3", "p1", "malignant", {"valueBoolean": True}),
        _patient("p2", "M2"),
        _obs("o4", "p2", "radius", {"valueQuantity": {"value": 11.5, "unit": "cm"}}),  # 115 mm: above the maximum
        _obs("o5", "p2", "texture", {"valueString": "high"}),  # non-numeric
        _obs("o6", "p2", "malignant", {"valueInteger": 0}),
        _obs("o7", "p2", "heart rate", {"valueQuantity": {"value": 80}}),  # not in the schema: skipped
        {"resourceType": "Claim", "id": "c1"},  # a type the schema does not use: counted and skipped
    ]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in entries]}
    path = write(tmp_path, "b.json", json.dumps(bundle))
    report = load_records(path, schema)
    located = {(p.location.removeprefix(f"{path} "), p.column) for p in report.problems}
    assert located == {("entry 6 Observation/o5", "texture")}
    assert report.ehr is not None and report.ehr.skipped_types == {"Claim": 1}
    records = report.usable_records(drop_bad_rows=True)
    assert records.mrns == ("M1",)
    np.testing.assert_allclose(records.features, [[11.5, 20.0]])
    assert records.labels.tolist() == [1.0]
    entries[6] = _obs("o5", "p2", "texture", {"valueQuantity": {"value": 15}})  # then p2's radius, in cm, is 115 mm
    path.write_text(json.dumps({"resourceType": "Bundle", "entry": [{"resource": r} for r in entries]}))
    (problem,) = load_records(path, schema).problems
    assert problem.column == "radius" and "above the declared maximum" in problem.reason


def test_malformed_fhir_is_a_file_problem(tmp_path: Path, schema: DataSchema) -> None:
    observation = {"resourceType": "Observation", "id": "o1"}  # no code, no status
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": observation}]}
    path = write(tmp_path, "b.json", json.dumps(bundle))
    report = load_records(path, schema)
    assert [p.location for p in report.file_problems] == [f"{path} entry 0 Observation/o1"]
    assert "without a code" in report.file_problems[0].reason
    with pytest.raises(InvalidDataError):
        report.usable_records(drop_bad_rows=True)


def test_a_utf8_bom_from_a_spreadsheet_export_is_not_part_of_the_first_column(
    tmp_path: Path, schema: DataSchema
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffmrn,malignant,radius,texture\nA1,1,12.5,20\n".encode())
    report = load_csv(path, schema)
    assert report.ok, [str(p) for p in report.problems]
    assert report.usable_records().mrns == ("A1",)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_nan_and_infinite_values_are_refused_naming_line_and_column(
    tmp_path: Path, schema: DataSchema, value: str
) -> None:
    path = write(tmp_path, "nan.csv", f"mrn,malignant,radius,texture\nA1,1,12.5,20\nA2,0,{value},15\n")
    report = load_csv(path, schema)
    assert [(p.location, p.column) for p in report.problems] == [("line 3", "radius")]
    with pytest.raises(InvalidDataError):
        report.usable_records()
