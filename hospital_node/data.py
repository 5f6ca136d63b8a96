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
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hospital_node.rules import CohortRule, FeatureRule, IndexRule, LabelRule

if TYPE_CHECKING:
    from hospital_node.ehr import EhrSummary

RawValue = str | int | float | Decimal | bool | None


class SchemaError(ValueError):
    """The schema TOML is unreadable or declares something impossible; the message names the field."""


FeatureSpec = FeatureRule  # one model input; the FHIR extraction fields are ignored for CSV input


class DataSchema(BaseModel):
    """What a hospital declares about its file: which column is the MRN, which the label, which the features."""

    model_config = ConfigDict(extra="forbid")

    mrn_column: str = Field(min_length=1)
    label_column: str = Field(min_length=1)
    features: list[FeatureSpec] = Field(min_length=1)
    index: IndexRule | None = None
    cohort: CohortRule | None = None
    label: LabelRule | None = None

    @model_validator(mode="after")
    def _columns_are_distinct(self) -> DataSchema:
        names = [self.mrn_column, self.label_column, *self.feature_names]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"column names must be distinct; repeated: {', '.join(duplicates)}")
        return self

    @model_validator(mode="after")
    def _dates_are_declared(self) -> DataSchema:
        if self.index is None:
            for number, rule in enumerate(self.features):
                if rule.source == "age" or rule.window_days is not None:
                    raise ValueError(f"features.{number} ({rule.name}): age and look-back windows need an [index] date")
            if self.cohort is not None:
                raise ValueError("cohort: a cohort is judged at the index date; declare [index] date = YYYY-MM-DD")
            if self.label is not None and self.label.mode == "incident":
                raise ValueError("label.mode: an incident label needs an [index] date")
        return self

    @property
    def label_rule(self) -> LabelRule:
        """The declared label, or (FHIR without [label]) an Observation coded with the label column's name, 0/1."""
        if self.label is not None:
            return self.label
        return LabelRule(source="observation", codes=[self.label_column], threshold=0.5)

    @property
    def feature_names(self) -> list[str]:
        """The model's columns, in order (a one-hot feature gives one column per category)."""
        return [column for f in self.features for column in f.columns]

    def column_checks(self) -> list[tuple[str, str, float | None, float | None]]:
        """(column, type, min, max) of each model column, in `feature_names` order: what validation checks."""
        return [check for f in self.features for check in f.column_checks()]

    def column_ranges(self) -> list[tuple[float, float]]:
        """Declared [min, max] of each model column, in `feature_names` order."""
        return [r for f in self.features for r in f.column_ranges()]

    @property
    def columns(self) -> list[str]:
        return [self.mrn_column, self.label_column, *self.feature_names]

    @classmethod
    def from_toml(cls, path: Path) -> DataSchema:
        """Read and check a schema file; errors name the TOML field to fix."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise SchemaError(f"schema file {path} does not exist") from exc
        return cls.from_text(text, f"schema file {path}")

    @classmethod
    def from_text(cls, text: str, source: str) -> DataSchema:
        """Parse and check schema TOML text (e.g. a query's cohort); errors start with `source` and name the field."""
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SchemaError(f"{source} is not valid TOML: {exc}") from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
            )
            raise SchemaError(f"{source}: {reasons}") from exc


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
    ehr: EhrSummary | None = None  # FHIR input: the cohort funnel, coverage and leakage (`node check`)

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
        for column, kind, low, high in self.schema.column_checks():
            number = _parse_number(values.get(column))
            reason: str | None = None
            if number is None:
                reason = "missing value"
            elif isinstance(number, str):
                reason = number
            elif kind == "int" and not number.is_integer():
                reason = f"expected an integer, got {number}"
            elif low is not None and number < low:
                reason = f"value {number} below the declared minimum {low}"
            elif high is not None and number > high:
                reason = f"value {number} above the declared maximum {high}"
            if reason is not None:
                problems.append(DataProblem(at(column), column, reason))
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
        width = len(self.schema.feature_names)
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
        if len(header) == 1 and len(schema.columns) > 1:
            return collector.report(str(path), [_one_column_header(header[0], len(schema.columns))])
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
    if collector.total == 0:
        file_problems.append(DataProblem("line 2", "*", "no records after the header: nothing to train on"))
    return collector.report(str(path), file_problems)


def _one_column_header(header: str, expected: int) -> DataProblem:
    """A header read as one column where the schema has several: name the separator the file seems to use."""
    found = [name for sep, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'")) if sep in header]
    looks = f"the file looks {found[0]}-separated; save it comma-separated" if found else "check the separator"
    return DataProblem(
        "line 1", "*", f"the header has one column but the schema declares {expected}: {looks} (RFC 4180 CSV)"
    )


def load_records(path: Path, schema: DataSchema) -> ValidationReport:
    """Dispatch on the input: `.csv`, or FHIR R4 (a Bundle `.json`, NDJSON, or a directory of either)."""
    from hospital_node.fhir_input import is_fhir_path

    if not path.exists():
        raise FileNotFoundError(f"data {path} does not exist")
    if path.suffix.lower() == ".csv":
        return load_csv(path, schema)
    if is_fhir_path(path):
        from hospital_node.ehr import load_fhir

        return load_fhir(path, schema)
    raise ValueError(
        f"data {path}: unsupported type {path.suffix!r}; use .csv, a FHIR Bundle .json, Bulk Data .ndjson(.gz) "
        "or a directory of them"
    )
