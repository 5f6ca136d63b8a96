"""The schema's rules for FHIR input: index date, cohort, label and per-feature extraction (docs/ehr.md).

Why rules and not columns: in an EHR a "feature" is a choice — which codes, which of many readings over years,
in which unit, measured before which date — and the label is a diagnosis (a Condition), not a 0/1 column. Each
rule is declared once in the consortium's schema TOML, so every hospital derives the same matrix from its own
export, and a mistake is reported naming the TOML field (pydantic `loc`).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Short names accepted before "|" in a code; anything else is taken as the system URI itself.
SYSTEM_ALIASES = {
    "loinc": "http://loinc.org",
    "snomed": "http://snomed.info/sct",
    "sct": "http://snomed.info/sct",
    "ucum": "http://unitsofmeasure.org",
}
ANY_SYSTEM = "*"
DEFAULT_OBSERVATION_STATUSES = ("final", "amended", "corrected")
DEFAULT_VERIFICATION_STATUSES = ("confirmed",)
DEFAULT_CLINICAL_STATUSES = ("active", "recurrence", "relapse", "inactive", "remission", "resolved")
Aggregate = Literal["latest", "mean", "min", "max", "count", "slope"]


def parse_code(text: str) -> tuple[str, str]:
    """`"http://loinc.org|39156-5"`, `"loinc|39156-5"` or `"39156-5"` (any system) → (system, code)."""
    system, sep, code = text.strip().rpartition("|")
    if not code:
        raise ValueError(f"code {text!r} is empty after '|'")
    if not sep:
        return ANY_SYSTEM, code
    return SYSTEM_ALIASES.get(system.lower(), system), code


def _check_codes(codes: list[str]) -> list[str]:
    for code in codes:
        parse_code(code)
    return codes


class CodeSet(BaseModel):
    """A set of system-qualified codes (LOINC, SNOMED CT, …) that select resources."""

    model_config = ConfigDict(extra="forbid")

    codes: list[str] = Field(default_factory=list, description='"system|code", "loinc|code" or a bare code')

    @field_validator("codes")
    @classmethod
    def _codes_parse(cls, codes: list[str]) -> list[str]:
        return _check_codes(codes)

    @property
    def parsed(self) -> list[tuple[str, str]]:
        return [parse_code(c) for c in self.codes]


class IndexRule(BaseModel):
    """The date the prediction is made at: features look back from it, the label is judged at (or after) it."""

    model_config = ConfigDict(extra="forbid")

    date: dt.date


class CohortRule(BaseModel):
    """Who is in the study; every patient left out is counted under the reason (the preflight's funnel)."""

    model_config = ConfigDict(extra="forbid")

    min_age: float | None = Field(default=None, ge=0)
    max_age: float | None = Field(default=None, ge=0)
    alive_at_index: bool = True
    min_history_days: int = Field(default=0, ge=0, description="earliest record at least this long before index")
    exclude_conditions: list[str] = Field(default_factory=list, description="Condition codes present at index")

    @field_validator("exclude_conditions")
    @classmethod
    def _codes_parse(cls, codes: list[str]) -> list[str]:
        return _check_codes(codes)

    @model_validator(mode="after")
    def _ages_ordered(self) -> CohortRule:
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError(f"min_age {self.min_age} is greater than max_age {self.max_age}")
        return self


class Measured(CodeSet):
    """What reading a value from an Observation needs: codes, the unit to convert to, accepted statuses."""

    unit: str | None = Field(default=None, description="UCUM unit the values are converted to")
    statuses: list[str] = Field(default_factory=lambda: list(DEFAULT_OBSERVATION_STATUSES))
    molar_mass: float | None = Field(default=None, gt=0, description="g/mol, for mass ↔ substance units")
    analyte: Literal["hba1c"] | None = Field(default=None, description="hba1c: % (NGSP) ↔ mmol/mol (IFCC)")


class LabelRule(Measured):
    """The outcome: a Condition from a code set, or an Observation past a threshold.

    prevalent = present at the index date (onset ≤ index, not abated by then); incident = onset within
    `horizon_days` after index (patients with it already at index leave the cohort). No matching Condition = 0.
    """

    source: Literal["condition", "observation"] = "condition"
    mode: Literal["prevalent", "incident"] = "prevalent"
    horizon_days: int | None = Field(default=None, gt=0)
    clinical_status: list[str] = Field(default_factory=lambda: list(DEFAULT_CLINICAL_STATUSES))
    verification_status: list[str] = Field(default_factory=lambda: list(DEFAULT_VERIFICATION_STATUSES))
    threshold: float | None = Field(default=None, description="observation labels: positive when value ≥ threshold")

    @model_validator(mode="after")
    def _consistent(self) -> LabelRule:
        if not self.codes:
            raise ValueError("codes: the label needs at least one code")
        if self.mode == "incident" and self.horizon_days is None:
            raise ValueError("horizon_days: an incident label needs a horizon after the index date")
        if self.source == "observation" and self.threshold is None:
            raise ValueError("threshold: an observation label needs a threshold")
        return self


class FeatureRule(Measured):
    """How one feature is read from FHIR. Only `name`/`type`/`unit`/`min`/`max` apply to CSV input."""

    name: str = Field(min_length=1)
    type: Literal["float", "int"] = "float"
    min: float | None = None
    max: float | None = None
    source: Literal["observation", "age", "sex", "condition"] = "observation"
    aggregate: Aggregate = "latest"
    window_days: int | None = Field(default=None, gt=0, description="look-back before the index date")
    value: Literal["quantity", "coded"] = "quantity"
    categories: list[str] = Field(default_factory=list, description="coded values: the codes, in order")
    encoding: Literal["onehot", "ordinal"] = "onehot"
    missing: Literal["drop", "median", "indicator"] = "drop"

    @field_validator("categories")
    @classmethod
    def _categories_parse(cls, codes: list[str]) -> list[str]:
        return _check_codes(codes)

    @model_validator(mode="after")
    def _consistent(self) -> FeatureRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature '{self.name}': min {self.min} is greater than max {self.max}")
        if self.value == "coded" and not self.categories:
            raise ValueError(f"feature '{self.name}': categories: a coded feature lists its category codes")
        if self.value == "coded" and self.aggregate not in ("latest", "count"):
            raise ValueError(f"feature '{self.name}': aggregate: a coded feature takes 'latest' (or 'count')")
        if self.source == "condition" and not self.codes:
            raise ValueError(f"feature '{self.name}': codes: a condition feature needs its Condition codes")
        return self

    @property
    def match_codes(self) -> list[tuple[str, str]]:
        """The Observation (or component) codes selecting this feature (its name when none are declared)."""
        return self.parsed if self.codes else [(ANY_SYSTEM, self.name)]

    @property
    def onehot(self) -> bool:
        return self.value == "coded" and self.encoding == "onehot" and self.aggregate == "latest"

    @property
    def columns(self) -> list[str]:
        """The model columns this feature becomes: one, one per category (one-hot), plus a missing indicator."""
        names = [f"{self.name}={code}" for code in self.categories] if self.onehot else [self.name]
        return [*names, f"{self.name}_missing"] if self.missing == "indicator" else names

    def column_checks(self) -> list[tuple[str, str, float | None, float | None]]:
        """(column, type, min, max) each value is validated against; derived 0/1 columns are floats in [0, 1]."""
        checks: list[tuple[str, str, float | None, float | None]]
        if self.onehot:
            checks = [(column, "float", 0.0, 1.0) for column in self.columns[: len(self.categories)]]
        else:
            checks = [(self.name, self.type, self.min, self.max)]
        return [*checks, (f"{self.name}_missing", "float", 0.0, 1.0)] if self.missing == "indicator" else checks

    def column_ranges(self) -> list[tuple[float, float]]:
        """Declared [min, max] per column (0..1 for one-hot and indicators; ordinal: 0..categories-1)."""
        if self.onehot:
            ranges = [(0.0, 1.0)] * len(self.categories)
        elif self.value == "coded" and self.aggregate == "latest":
            ranges = [(0.0, float(len(self.categories) - 1))]
        elif self.source in ("sex", "condition"):
            ranges = [(0.0, 1.0)]
        else:
            ranges = [(self.min if self.min is not None else 0.0, self.max if self.max is not None else 1.0)]
        return [*ranges, (0.0, 1.0)] if self.missing == "indicator" else ranges
