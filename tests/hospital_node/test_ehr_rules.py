"""FHIR R4 input and the schema's rules on small hand-made exports: each rule changes the matrix as documented."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hospital_node.data import DataSchema, SchemaError, load_records
from hospital_node.units import UnitError, conversion

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}

HEADER = """
mrn_column = "mrn"
label_column = "diabetes"

[index]
date = 2018-01-01
"""


def patient(pid: str, mrn: str, birth: str = "1960-05-01", gender: str = "female", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"type": MR, "value": mrn}],
        "birthDate": birth,
        "gender": gender,
        **extra,
    }


def obs(oid: str, ref: str, code: str, day: str, value: Any, unit: str | None = None, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": ref},
        "effectiveDateTime": f"{day}T10:00:00+00:00",
        **extra,
    }
    if value is not None:
        resource["valueQuantity"] = {"value": value, **({"code": unit, "unit": unit} if unit else {})}
    return resource


def condition(cid: str, ref: str, code: str, onset: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "verificationStatus": {"coding": [{"code": "confirmed"}]},
        "code": {"coding": [{"system": SNOMED, "code": code}]},
        "subject": {"reference": ref},
        "onsetDateTime": f"{onset}T00:00:00+00:00",
        **extra,
    }


def bundle(path: Path, resources: list[dict[str, Any]]) -> Path:
    entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    return path


def schema(tmp_path: Path, body: str) -> DataSchema:
    path = tmp_path / "schema.toml"
    path.write_text(HEADER + body)
    return DataSchema.from_toml(path)


LABEL = f"""
[label]
codes = ["{SNOMED}|44054006"]
"""


def test_aggregates_over_the_look_back_window_and_unit_conversion(tmp_path: Path) -> None:
    rules = schema(
        tmp_path,
        LABEL
        + "".join(
            f"""
[[features]]
name = "glucose_{agg}"
codes = ["loinc|2339-0"]
aggregate = "{agg}"
window_days = 730
unit = "mmol/L"
molar_mass = 180.156
"""
            for agg in ("latest", "mean", "min", "max", "count", "slope")
        ),
    )
    resources = [
        patient("p1", "M1"),
        obs("o0", "urn:uuid:p1", "2339-0", "2014-01-01", 500, "mg/dL"),  # before the 2-year window: ignored
        obs("o1", "urn:uuid:p1", "2339-0", "2016-06-01", 90.0816, "mg/dL"),  # 5 mmol/L
        obs("o2", "urn:uuid:p1", "2339-0", "2017-06-01", 7.0, "mmol/L"),
        obs("o3", "urn:uuid:p1", "2339-0", "2018-06-01", 20.0, "mmol/L"),  # after the index date: ignored
        obs("o4", "urn:uuid:p1", "2339-0", "2017-01-01", 6.0, "mmol/L", status="entered-in-error"),
    ]
    report = load_records(bundle(tmp_path / "b.json", resources), rules)
    assert report.ok, report.problems
    (row,) = report.records.features
    latest, mean, low, high, count, slope = row
    assert latest == pytest.approx(7.0) and mean == pytest.approx(6.0, rel=1e-4)
    assert (low, high, count) == (pytest.approx(5.0, rel=1e-4), pytest.approx(7.0), 2.0)
    assert slope == pytest.approx(2.0 / (365 / 365.25), rel=1e-3), "mmol/L per year"
    assert report.ehr is not None and report.ehr.ignored["glucose_latest: outside the look-back window"] == 2


def test_units_convert_through_ucum_and_refuse_what_cannot_convert(tmp_path: Path) -> None:
    assert conversion("mL/min/{1.73_m2}", "mL/min").apply(60) == pytest.approx(60)
    assert conversion("%", "mmol/mol", analyte="hba1c").apply(6.5) == pytest.approx(47.5, abs=0.1)
    assert conversion("mmol/mol", "%", analyte="hba1c").apply(47.5) == pytest.approx(6.5, abs=0.01)
    assert conversion("[lb_av]", "kg").apply(100) == pytest.approx(45.359, rel=1e-4)
    with pytest.raises(UnitError, match="molar_mass"):
        conversion("mg/dL", "mmol/L")
    rules = schema(tmp_path, LABEL + '[[features]]\nname = "egfr"\ncodes = ["33914-3"]\nunit = "mL/min"\n')
    resources = [
        patient("p1", "M1"),
        obs("o1", "Patient/p1", "33914-3", "2017-01-01", 70, "mL/min/{1.73_m2}"),
        patient("p2", "M2"),
        obs("o2", "Patient/p2", "33914-3", "2017-01-01", 70, "mg/dL"),
    ]
    report = load_records(bundle(tmp_path / "b.json", resources), rules)
    (problem,) = report.problems
    assert problem.column == "egfr" and "Observation/o2" in problem.location and "cannot convert" in problem.reason
    assert report.usable_records(drop_bad_rows=True).mrns == ("M1",)


def test_blood_pressure_components_coded_values_and_patient_derived_features(tmp_path: Path) -> None:
    rules = schema(
        tmp_path,
        LABEL
        + """
[[features]]
name = "age"
source = "age"

[[features]]
name = "female"
source = "sex"

[[features]]
name = "systolic"
codes = ["loinc|8480-6"]
unit = "mm[Hg]"

[[features]]
name = "smoking"
codes = ["loinc|72166-2"]
value = "coded"
categories = ["snomed|266919005", "snomed|8517006", "snomed|77176002"]

[[features]]
name = "smoking_level"
codes = ["loinc|72166-2"]
value = "coded"
encoding = "ordinal"
categories = ["snomed|266919005", "snomed|8517006", "snomed|77176002"]
""",
    )
    panel = obs("bp", "urn:uuid:p1", "55284-4", "2017-01-01", None)
    panel["component"] = [
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": {"value": 80, "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": {"value": 16, "code": "kPa"}},
    ]
    smoking = obs("s", "urn:uuid:p1", "72166-2", "2017-01-01", None)
    smoking["valueCodeableConcept"] = {"coding": [{"system": SNOMED, "code": "8517006"}]}
    resources = [patient("p1", "M1", birth="1968-01-01", gender="female"), panel, smoking]
    report = load_records(bundle(tmp_path / "b.json", resources), rules)
    assert report.ok, report.problems
    assert report.records.feature_names == (
        "age",
        "female",
        "systolic",
        "smoking=snomed|266919005",
        "smoking=snomed|8517006",
        "smoking=snomed|77176002",
        "smoking_level",
    )
    age, female, systolic, *onehot, level = report.records.features[0]
    assert age == pytest.approx(50.0, abs=0.01) and female == 1.0
    assert systolic == pytest.approx(120.0, rel=1e-3), "16 kPa in the panel's component = 120 mmHg"
    assert onehot == [0.0, 1.0, 0.0] and level == 1.0


def test_labels_honour_onset_status_and_incident_horizon(tmp_path: Path) -> None:
    body = '[[features]]\nname = "age"\nsource = "age"\n'
    people = [
        patient("p1", "M1"),
        condition("c1", "urn:uuid:p1", "44054006", "2015-01-01"),  # prevalent
        patient("p2", "M2"),
        condition("c2", "urn:uuid:p2", "44054006", "2018-06-01"),  # incident within a year
        patient("p3", "M3"),
        condition("c3", "urn:uuid:p3", "44054006", "2015-01-01", verificationStatus={"coding": [{"code": "refuted"}]}),
        patient("p4", "M4"),
        condition("c4", "urn:uuid:p4", "44054006", "2010-01-01", abatementDateTime="2012-01-01T00:00:00+00:00"),
        patient("p5", "M5"),  # no Condition at all: 0
    ]
    path = bundle(tmp_path / "b.json", people)
    prevalent = load_records(path, schema(tmp_path, LABEL + body)).usable_records()
    assert dict(zip(prevalent.mrns, prevalent.labels.tolist(), strict=True)) == {
        "M1": 1.0,
        "M2": 0.0,
        "M3": 0.0,
        "M4": 0.0,
        "M5": 0.0,
    }
    incident_rules = schema(tmp_path, LABEL + 'mode = "incident"\nhorizon_days = 365\n' + body)
    report = load_records(path, incident_rules)
    incident = report.usable_records()
    assert dict(zip(incident.mrns, incident.labels.tolist(), strict=True)) == {"M2": 1.0, "M3": 0.0, "M5": 0.0}
    assert report.ehr is not None, "M1 (prevalent) and M4 (abated history) cannot have an incident onset"
    assert report.ehr.dropped == {"label condition on or before the index date (incident label)": 2}


def test_observation_threshold_label(tmp_path: Path) -> None:
    rules = schema(
        tmp_path,
        """
[label]
source = "observation"
codes = ["loinc|4548-4"]
threshold = 6.5
unit = "%"
analyte = "hba1c"

[[features]]
name = "age"
source = "age"
""",
    )
    resources = [
        patient("p1", "M1"),
        obs("h1", "Patient/p1", "4548-4", "2017-01-01", 53.0, "mmol/mol"),  # 7.0 %
        patient("p2", "M2"),
        obs("h2", "Patient/p2", "4548-4", "2017-01-01", 5.6, "%"),
        patient("p3", "M3"),  # no reading: cannot be labelled
    ]
    report = load_records(bundle(tmp_path / "b.json", resources), rules)
    records = report.usable_records()
    assert dict(zip(records.mrns, records.labels.tolist(), strict=True)) == {"M1": 1.0, "M2": 0.0}
    assert report.ehr is not None and report.ehr.dropped == {"no label reading": 1}


def test_cohort_funnel_counts_every_drop_reason(tmp_path: Path) -> None:
    rules = schema(
        tmp_path,
        LABEL
        + f"""
[cohort]
min_age = 18
max_age = 80
min_history_days = 365
exclude_conditions = ["{SNOMED}|46177005"]

[[features]]
name = "bmi"
codes = ["39156-5"]
window_days = 1095
""",
    )
    resources = [
        patient("ok", "M1"),
        obs("b1", "Patient/ok", "39156-5", "2016-01-01", 25),
        patient("young", "M2", birth="2010-01-01"),
        patient("old", "M3", birth="1920-01-01"),
        patient("dead", "M4", deceasedDateTime="2016-01-01T00:00:00+00:00"),
        patient("new", "M5"),
        obs("b5", "Patient/new", "39156-5", "2017-10-01", 25),
        patient("renal", "M6"),
        obs("b6", "Patient/renal", "39156-5", "2016-01-01", 25),
        condition("c6", "Patient/renal", "46177005", "2016-01-01"),
        patient("nobmi", "M7"),
        obs("b7", "Patient/nobmi", "39156-5", "2010-01-01", 25),  # only outside the window
        obs("orphan", "Patient/nobody", "39156-5", "2017-01-01", 25),
    ]
    report = load_records(bundle(tmp_path / "b.json", resources), rules)
    assert report.ehr is not None
    assert report.usable_records().mrns == ("M1",), report.ehr.dropped
    assert report.ehr.patients_read == 7
    assert report.ehr.dropped == {
        "younger than 18 at index": 1,
        "older than 80 at index": 1,
        "died before the index date": 1,
        "less than 365 days of history before index": 1,
        "excluded condition at index": 1,
        "resources whose Patient is not in the export": 1,
        "no bmi in the look-back window": 1,
    }


def test_missing_values_imputed_with_median_and_indicator(tmp_path: Path) -> None:
    rules = schema(
        tmp_path,
        LABEL + '[[features]]\nname = "bmi"\ncodes = ["39156-5"]\nmissing = "indicator"\n',
    )
    resources = [patient("a", "M1"), patient("b", "M2"), patient("c", "M3"), patient("d", "M4")]
    for number, (pid, value) in enumerate((("a", 20), ("b", 30), ("c", 40))):
        resources.append(obs(f"o{number}", f"Patient/{pid}", "39156-5", "2017-01-01", value))
    records = load_records(bundle(tmp_path / "b.json", resources), rules).usable_records()
    assert records.feature_names == ("bmi", "bmi_missing")
    np.testing.assert_allclose(records.features, [[20, 0], [30, 0], [40, 0], [30, 1]])


def test_references_in_every_form_reach_the_patient(tmp_path: Path) -> None:
    rules = schema(tmp_path, LABEL + '[[features]]\nname = "n"\ncodes = ["39156-5"]\naggregate = "count"\n')
    refs = ["urn:uuid:p1", "Patient/p1", "https://ehr.example.org/fhir/Patient/p1", "Patient/p1/_history/3"]
    resources = [patient("p1", "M1")] + [obs(f"o{i}", r, "39156-5", "2017-01-01", 25) for i, r in enumerate(refs)]
    (path := tmp_path / "export").mkdir()
    lines = "\n".join(json.dumps(r) for r in resources)
    (path / "all.ndjson.gz").write_bytes(gzip.compress(lines.encode()))
    records = load_records(path, rules).usable_records()
    assert records.features.tolist() == [[4.0]]


def test_malformed_resources_name_file_line_entry_and_id(tmp_path: Path) -> None:
    rules = schema(tmp_path, LABEL + '[[features]]\nname = "bmi"\ncodes = ["39156-5"]\n')
    export = tmp_path / "export"
    export.mkdir()
    good = obs("o1", "Patient/p1", "39156-5", "2017-01-01", 25)
    no_date = {**good, "id": "o2"}
    del no_date["effectiveDateTime"]
    (export / "Observation.ndjson").write_text(
        "\n".join([json.dumps(good), "{not json", json.dumps(no_date), json.dumps({"id": "x"})]) + "\n"
    )
    (export / "Patient.ndjson").write_text(json.dumps(patient("p1", "M1", birth="not-a-date")) + "\n")
    bundle(export / "b.json", [patient("p2", "M2"), {"resourceType": "Observation", "id": "o9"}])
    report = load_records(export, rules)
    where = [p.location for p in report.file_problems]
    observations = str(export / "Observation.ndjson")
    assert f"{observations} line 2" in where
    assert f"{observations} line 3 Observation/o2" in where
    assert f"{observations} line 4 ?/x" in where
    assert f"{export / 'Patient.ndjson'} line 1 Patient/p1" in where
    assert f"{export / 'b.json'} entry 1 Observation/o9" in where
    reasons = " | ".join(str(p) for p in report.file_problems)
    assert "birthDate" in reasons and "effective" in reasons and "M1" not in reasons
    with pytest.raises(Exception, match="nothing trained"):
        report.usable_records(drop_bad_rows=True)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[[features]]\nname = "a"\naggregate = "median"\n', "features.0.aggregate"),
        ('[[features]]\nname = "a"\nvalue = "coded"\n', "categories"),
        ('[label]\ncodes = []\n[[features]]\nname = "a"\n', "label"),
        ('[label]\ncodes = ["x|"]\n[[features]]\nname = "a"\n', "label.codes"),
        ('[label]\ncodes = ["x"]\nmode = "incident"\n[[features]]\nname = "a"\n', "horizon_days"),
        ('[cohort]\nmin_age = 50\nmax_age = 20\n[[features]]\nname = "a"\n', "cohort"),
    ],
)
def test_schema_rule_errors_name_the_field(tmp_path: Path, body: str, field: str) -> None:
    with pytest.raises(SchemaError, match=field):
        schema(tmp_path, body)


def test_windows_and_age_need_an_index_date(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('mrn_column = "m"\nlabel_column = "y"\n[[features]]\nname = "age"\nsource = "age"\n')
    with pytest.raises(SchemaError, match=r"features\.0 \(age\).*\[index\]"):
        DataSchema.from_toml(path)
