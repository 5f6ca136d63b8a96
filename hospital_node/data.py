"""A hospital's input data: the declared schema, CSV and FHIR R4 loaders, and validation naming every problem.

Nothing trains on data that has not passed through here. Validation never stops at the first problem: hospital IT
fixes a file in one pass only if every bad row is reported at once, with where it is (CSV line or FHIR resource
id), which column, and why. Problems name positions, never values from the MRN column, so a report can be pasted
into a ticket without leaking an identifier.
"""

from __future__ import annotations

import csv
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

RawValue = str | int | float | Decimal | bool | None


class SchemaError(ValueError):
    """The schema TOML is unreadable or declares something impossible; the message names the field."""


class FeatureSpec(BaseModel):
    """One model input: its column name, numeric type, optional unit and plausible range."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    type: Literal["float", "int"] = "float"
    unit: str | None = None
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _range_is_ordered(self) -> FeatureSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature '{self.name}': min {self.min} is greater than max {self.max}")
        return self


class DataSchema(BaseModel):
    """What a hospital declares about its file: which column is the MRN, which the label, which the features."""

    model_config = ConfigDict(extra="forbid")

    mrn_column: str = Field(min_length=1)
    label_column: str = Field(min_length=1)
    features: list[FeatureSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _columns_are_distinct(self) -> DataSchema:
        names = [self.mrn_column, self.label_column, *self.feature_names]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"column names must be distinct; repeated: {', '.join(duplicates)}")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def columns(self) -> list[str]:
        return [self.mrn_column, self.label_column, *self.feature_names]

    @classmethod
    def from_toml(cls, path: Path) -> DataSchema:
        """Read and check a schema file; errors name the TOML field to fix."""
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SchemaError(f"schema file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SchemaError(f"schema file {path} is not valid TOML: {exc}") from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
            )
            raise SchemaError(f"schema file {path}: {reasons}") from exc


@dataclass(frozen=True)
class DataProblem:
    """One reason a record (or the whole file) cannot be used."""

    location: str  # "line 7", "Observation/obs-12", "header"
    column: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: column '{self.column}': {self.reason}"


@dataclass(frozen=True)
class PatientRecords:
    """Validated rows, in file order: the MRNs stay local and are replaced by pseudonyms before anything leaves."""

    mrns: tuple[str, ...]
    features: np.ndarray  # (n, d) float32, columns in schema order
    labels: np.ndarray  # (n,) float32, 0 or 1
    feature_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.mrns)

    def select(self, mrns: Iterable[str]) -> PatientRecords:
        """The subset of records whose MRN is in `mrns`, order kept (used by the consent filter)."""
        wanted = set(mrns)
        keep = [i for i, m in enumerate(self.mrns) if m in wanted]
        return PatientRecords(
            mrns=tuple(self.mrns[i] for i in keep),
            features=self.features[keep],
            labels=self.labels[keep],
            feature_names=self.feature_names,
        )


class InvalidDataError(ValueError):
    """Raised instead of training on data with problems; carries every problem."""

    def __init__(self, source: str, problems: list[DataProblem], hint: str) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s), nothing trained:\n{lines}\n{hint}")


@dataclass
class ValidationReport:
    """The outcome of reading one input: the usable records and every problem found.

    `file_problems` concern the file as a whole (unknown or missing columns, unparseable bundle): dropping rows
    cannot fix those, so they always refuse. `row_problems` belong to individual records, counted in
    `bad_records`.
    """

    source: str
    records: PatientRecords
    total_records: int
    file_problems: list[DataProblem] = field(default_factory=list)
    row_problems: list[DataProblem] = field(default_factory=list)
    bad_records: int = 0

    @property
    def problems(self) -> list[DataProblem]:
        return [*self.file_problems, *self.row_problems]

    @property
    def ok(self) -> bool:
        return not self.problems

    def usable_records(self, drop_bad_rows: bool = False) -> PatientRecords:
        """The records to train on; refuses when anything is wrong unless bad rows may be dropped."""
        if self.file_problems:
            raise InvalidDataError(self.source, self.problems, "Fix the file's columns to match the schema.")
        if self.row_problems and not drop_bad_rows:
            raise InvalidDataError(
                self.source, self.problems, "Fix these rows, or pass --drop-bad-rows to train without them."
            )
        if len(self.records) == 0:
            raise InvalidDataError(
                self.source,
                [DataProblem("file", "*", "no valid records left to train on")],
                "Provide a file with at least one valid record.",
            )
        return self.records


def _parse_number(value: RawValue) -> float | str | None:
    """A finite float, None when missing, or the reason it is not a number."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        return "is a boolean, not a number"
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return f"non-numeric value {str(value)[:40]!r}"
    if not math.isfinite(number):
        return f"not a finite number ({value!s})"
    return number


def _parse_label(value: RawValue) -> float | str:
    """0.0 or 1.0, or the reason the label is unusable (binary diagnostic labels only)."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return "missing label"
    if isinstance(value, bool):
        return float(value)
    number = _parse_number(value)
    if isinstance(number, float) and number in (0.0, 1.0):
        return number
    return f"label must be 0 or 1, got {str(value)[:40]!r}"


class _RecordCollector:
    """Shared by both loaders: checks one record at a time against the schema and keeps the good ones."""

    def __init__(self, schema: DataSchema) -> None:
        self.schema = schema
        self.mrns: list[str] = []
        self.rows: list[list[float]] = []
        self.labels: list[float] = []
        self.problems: list[DataProblem] = []
        self.bad_records = 0
        self.total = 0
        self._first_seen: dict[str, str] = {}

    def add(self, where: str, values: Mapping[str, RawValue], locate: Callable[[str], str] | None = None) -> None:
        """Validate one record. `locate(column)` refines where a column's value came from (a FHIR Observation)."""
        self.total += 1
        at = locate or (lambda _column: where)
        problems: list[DataProblem] = []
        mrn_raw = values.get(self.schema.mrn_column)
        mrn = str(mrn_raw).strip() if mrn_raw is not None else ""
        if not mrn:
            problems.append(DataProblem(at(self.schema.mrn_column), self.schema.mrn_column, "missing MRN"))
        elif mrn in self._first_seen:
            problems.append(
                DataProblem(where, self.schema.mrn_column, f"duplicate MRN (first seen at {self._first_seen[mrn]})")
            )
        else:
            self._first_seen[mrn] = where
        label = _parse_label(values.get(self.schema.label_column))
        if isinstance(label, str):
            problems.append(DataProblem(at(self.schema.label_column), self.schema.label_column, label))
        row: list[float] = []
        for spec in self.schema.features:
            number = _parse_number(values.get(spec.name))
            reason: str | None = None
            if number is None:
                reason = "missing value"
            elif isinstance(number, str):
                reason = number
            elif spec.type == "int" and not number.is_integer():
                reason = f"expected an integer, got {number}"
            elif spec.min is not None and number < spec.min:
                reason = f"value {number} below the declared minimum {spec.min}"
            elif spec.max is not None and number > spec.max:
                reason = f"value {number} above the declared maximum {spec.max}"
            if reason is not None:
                problems.append(DataProblem(at(spec.name), spec.name, reason))
            else:
                row.append(float(number))  # type: ignore[arg-type]
        if problems:
            self.problems.extend(problems)
            self.bad_records += 1
            return
        self.mrns.append(mrn)
        self.rows.append(row)
        self.labels.append(float(label))

    def report(self, source: str, file_problems: list[DataProblem]) -> ValidationReport:
        width = len(self.schema.features)
        return ValidationReport(
            source=source,
            records=PatientRecords(
                mrns=tuple(self.mrns),
                features=np.asarray(self.rows, dtype=np.float32).reshape(len(self.rows), width),
                labels=np.asarray(self.labels, dtype=np.float32),
                feature_names=tuple(self.schema.feature_names),
            ),
            total_records=self.total,
            file_problems=file_problems,
            row_problems=self.problems,
            bad_records=self.bad_records,
        )


def load_csv(path: Path, schema: DataSchema) -> ValidationReport:
    """Read a CSV whose first line is the header; line numbers in problems are the file's own (header = 1)."""
    collector = _RecordCollector(schema)
    file_problems: list[DataProblem] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return collector.report(str(path), [DataProblem("line 1", "*", "empty file: no header line")])
        header = [h.strip() for h in header]
        for name in header:
            if name not in schema.columns:
                file_problems.append(
                    DataProblem("line 1", name, "unknown column: not declared in the schema (declare it or remove it)")
                )
        for name in schema.columns:
            if name not in header:
                file_problems.append(DataProblem("line 1", name, "column declared in the schema is missing"))
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            where = f"line {reader.line_num}"
            if len(fields) != len(header):
                collector.total += 1
                collector.bad_records += 1
                collector.problems.append(
                    DataProblem(where, "*", f"row has {len(fields)} fields but the header has {len(header)}")
                )
                continue
            collector.add(where, dict(zip(header, fields, strict=True)))
    return collector.report(str(path), file_problems)


def _observation_value(observation: object) -> tuple[RawValue, str | None]:
    """The value of an Observation and its unit, whatever value[x] it uses."""
    quantity = getattr(observation, "valueQuantity", None)
    if quantity is not None:
        return quantity.value, quantity.unit or quantity.code
    for attr in ("valueInteger", "valueBoolean", "valueString"):
        value = getattr(observation, attr, None)
        if value is not None:
            return value, None
    return None, None


def _patient_mrn(patient: object) -> str | None:
    """The identifier typed MR (HL7 v2-0203), else the patient's first identifier."""
    identifiers = getattr(patient, "identifier", None) or []
    for ident in identifiers:
        codings = ident.type.coding if ident.type is not None and ident.type.coding else []
        if any(c.code == "MR" for c in codings):
            return str(ident.value) if ident.value is not None else None
    return str(identifiers[0].value) if identifiers and identifiers[0].value is not None else None


def _observation_column(observation: object) -> str | None:
    code = getattr(observation, "code", None)
    if code is None:
        return None
    for coding in code.coding or []:
        if coding.code:
            return str(coding.code)
    return str(code.text) if code.text else None


def load_fhir_bundle(path: Path, schema: DataSchema) -> ValidationReport:
    """Read a FHIR R4 Bundle of Patient and Observation resources (parsed and checked by `fhir.resources`).

    An Observation's code (first coding's code, else its text) names the schema column it fills; its subject
    references the Patient, whose MR identifier is the MRN. Problems name the offending resource.
    """
    from fhir.resources.bundle import Bundle

    collector = _RecordCollector(schema)
    source = str(path)
    try:
        bundle = Bundle.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        problems = [
            DataProblem(".".join(str(p) for p in err["loc"]) or "bundle", "*", err["msg"]) for err in exc.errors()
        ]
        return collector.report(source, problems)
    patients: dict[str, dict[str, RawValue]] = {}
    origins: dict[str, dict[str, str]] = {}
    row_problems: list[DataProblem] = []
    bad_patients: set[str] = set()
    observations: list[Any] = []
    for entry in bundle.entry or []:
        resource: Any = entry.resource
        if resource is None:
            continue
        kind = resource.get_resource_type()
        if kind == "Patient":
            pid = f"Patient/{resource.id}"
            patients[pid] = {schema.mrn_column: _patient_mrn(resource)}
            origins[pid] = {}
        elif kind == "Observation":
            observations.append(resource)
        else:
            row_problems.append(DataProblem(f"{kind}/{resource.id}", "*", f"unsupported resource type {kind}"))
    for obs in observations:
        where = f"Observation/{obs.id}"
        column = _observation_column(obs)
        subject = obs.subject.reference if obs.subject is not None else None
        if subject not in patients:
            row_problems.append(
                DataProblem(where, column or "*", f"subject {subject!r} is not a Patient in the bundle")
            )
            continue
        if column is None or column not in schema.columns or column == schema.mrn_column:
            row_problems.append(
                DataProblem(where, column or "*", "unknown column: the Observation's code is not in the schema")
            )
            bad_patients.add(subject)
            continue
        if column in patients[subject]:
            row_problems.append(
                DataProblem(where, column, f"second value for the same patient (first in {origins[subject][column]})")
            )
            bad_patients.add(subject)
            continue
        value, unit = _observation_value(obs)
        spec = next((f for f in schema.features if f.name == column), None)
        if spec is not None and spec.unit is not None and unit is not None and unit != spec.unit:
            row_problems.append(DataProblem(where, column, f"unit {unit!r} but the schema declares {spec.unit!r}"))
            bad_patients.add(subject)
            continue
        patients[subject][column] = value
        origins[subject][column] = where
    for pid, values in patients.items():
        before = len(collector.problems)
        located = origins[pid]

        def locate(column: str, pid: str = pid, located: dict[str, str] = located) -> str:
            return located.get(column, pid)

        collector.add(pid, values, locate=locate)
        if pid in bad_patients and len(collector.problems) == before:
            # Its record looked complete, but one of its Observations was rejected above: drop it too.
            collector.mrns.pop()
            collector.rows.pop()
            collector.labels.pop()
            collector.bad_records += 1
    collector.problems = row_problems + collector.problems
    return collector.report(source, [])


def load_records(path: Path, schema: DataSchema) -> ValidationReport:
    """Dispatch on the file type: `.csv` or a FHIR Bundle in `.json`."""
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.suffix.lower() == ".csv":
        return load_csv(path, schema)
    if path.suffix.lower() == ".json":
        return load_fhir_bundle(path, schema)
    raise ValueError(f"data file {path}: unsupported type {path.suffix!r}; use .csv or a FHIR Bundle .json")
