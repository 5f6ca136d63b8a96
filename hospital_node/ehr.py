"""From a FHIR R4 export to the feature matrix: the schema's index date, cohort, label and feature rules applied.

One pass over the resources (`hospital_node/fhir_input.py`), keeping per patient only what the rules need —
the in-window readings of each declared code as (day, value), the first day each was measured (for the leakage
check), the dates of label and exclusion Conditions — so memory follows the data the model uses, not the size
of the export. Resource types no rule uses are counted and skipped.

At the end each patient walks the cohort funnel; whoever leaves it is counted under the first reason that
applies (`carefed node check` prints the funnel). Problems name file, NDJSON line or Bundle entry, and resource
id; they never contain an MRN (any MRN that appears in a path is masked).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hospital_node.fhir_input import Origin, Unreadable, read_resources, reference_id
from hospital_node.rules import ANY_SYSTEM, FeatureRule, LabelRule, parse_code
from hospital_node.units import UnitError, conversion

if TYPE_CHECKING:
    from hospital_node.data import DataProblem, DataSchema, ValidationReport

DAYS_PER_YEAR = 365.25
LEAKAGE_SHARE = 0.5  # a feature first measured on or after the label's onset for more positives than this leaks
LEAKAGE_MIN_PATIENTS = 2  # positives with readings from before their onset
LEAKAGE_COVERAGE_RATIO = 3.0  # … or positives have the feature this many times as often as negatives
LEAKAGE_MIN_MEASURED = 5  # (with at least this many positives measured)
HISTOGRAM_BINS = 10
# Condition verification statuses that never count, whatever the schema accepts.
_NEVER_VERIFIED = {"refuted", "entered-in-error"}


def _day(value: Any) -> int | None:
    """A FHIR date/dateTime/instant as a proleptic ordinal day (partial dates: first day); None if unusable."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value[:10]
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text).toordinal()
        if len(text) == 7:
            return dt.date.fromisoformat(text + "-01").toordinal()
        return dt.date(int(text[:4]), 1, 1).toordinal()
    except ValueError:
        return None


def _first_code(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return str(coding["code"])
    return None


def _codings(concept: Any) -> list[tuple[str, str]]:
    """(system, code) pairs of a CodeableConcept; malformed codings are ignored (they cannot match)."""
    if not isinstance(concept, dict):
        return []
    pairs = []
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            pairs.append((str(coding.get("system") or ""), coding["code"]))
    return pairs


class _CodeIndex:
    """(system, code) → targets, with bare codes matching any system."""

    def __init__(self) -> None:
        self._table: dict[tuple[str, str], list[int]] = defaultdict(list)

    def add(self, codes: Iterable[tuple[str, str]], target: int) -> None:
        for pair in codes:
            if target not in self._table[pair]:
                self._table[pair].append(target)

    def match(self, pairs: list[tuple[str, str]]) -> list[int]:
        found: list[int] = []
        for system, code in pairs:
            for key in ((system, code), (ANY_SYSTEM, code)):
                for target in self._table.get(key, ()):
                    if target not in found:
                        found.append(target)
        return found

    def __bool__(self) -> bool:
        return bool(self._table)


LABEL = -1  # target index of the label in the Observation code index


@dataclass
class _PatientState:
    """What is kept of one patient while streaming; ids are FHIR logical ids, never MRNs."""

    origin: str = ""
    mrn: str | None = None
    birth: int | None = None
    gender: str | None = None
    deceased: int | None = None  # day of death; 0 when deceasedBoolean is true without a date
    first_day: int | None = None  # earliest record of any kind (minimum history)
    first_reading: int | None = None  # earliest Observation read (leakage: is there history before the onset?)
    readings: dict[int, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    first_measured: dict[int, int] = field(default_factory=dict)
    label_onsets: list[int] = field(default_factory=list)
    exclusions: list[int] = field(default_factory=list)
    condition_features: dict[int, int] = field(default_factory=dict)  # feature → earliest onset
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (where, column, reason)

    def saw(self, day: int | None) -> None:
        if day is not None and (self.first_day is None or day < self.first_day):
            self.first_day = day


@dataclass
class FeatureStats:
    """Coverage and distribution of one model column over the patients trained on."""

    name: str
    coverage: float  # share of cohort patients with a value before imputation
    minimum: float | None
    maximum: float | None
    declared: tuple[float | None, float | None]
    histogram: list[int]  # HISTOGRAM_BINS counts over the declared (else observed) range
    edges: tuple[float, float]


@dataclass
class EhrSummary:
    """What `carefed node check` teaches: the funnel, label balance, coverage, leakage, skipped types."""

    resources_read: int = 0
    resources_by_type: Counter[str] = field(default_factory=Counter)
    skipped_types: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)  # readings not used, by reason
    patients_read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason → patients, in funnel order
    in_cohort: int = 0
    with_feature: dict[str, int] = field(default_factory=dict)
    trained_on: int = 0
    positives: int = 0
    features: list[FeatureStats] = field(default_factory=list)
    leakage: dict[str, dict[str, Any]] = field(default_factory=dict)  # feature → the two leakage signals
    leaking: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "resources_read": self.resources_read,
            "resources_by_type": dict(self.resources_by_type),
            "skipped_types": dict(self.skipped_types),
            "ignored_readings": dict(self.ignored),
            "funnel": {
                "patients_read": self.patients_read,
                "dropped": self.dropped,
                "in_cohort": self.in_cohort,
                "with_feature": self.with_feature,
                "trained_on": self.trained_on,
            },
            "label": {"positive": self.positives, "negative": self.trained_on - self.positives},
            "features": [
                {
                    "name": f.name,
                    "coverage": f.coverage,
                    "min": f.minimum,
                    "max": f.maximum,
                    "declared": list(f.declared),
                    "histogram": f.histogram,
                    "edges": list(f.edges),
                }
                for f in self.features
            ],
            "leakage": self.leakage,
            "leaking": self.leaking,
        }


class _Extractor:
    """One streaming pass collecting per-patient state for the schema's rules."""

    def __init__(self, schema: DataSchema) -> None:
        self.schema = schema
        self.index_day = schema.index.date.toordinal() if schema.index is not None else None
        self.label: LabelRule = schema.label_rule
        self.obs_index = _CodeIndex()
        self.condition_index = _CodeIndex()  # targets: feature index, LABEL, or EXCLUDE
        for number, rule in enumerate(schema.features):
            if rule.source == "observation":
                self.obs_index.add(rule.match_codes, number)
            elif rule.source == "condition":
                self.condition_index.add(rule.match_codes, number)
        if self.label.source == "observation":
            self.obs_index.add(self.label.parsed, LABEL)
        else:
            self.condition_index.add(self.label.parsed, LABEL)
        self.exclude_index = _CodeIndex()
        if schema.cohort is not None:
            self.exclude_index.add((parse_code(c) for c in schema.cohort.exclude_conditions), 0)
        self.wants_encounters = schema.cohort is not None and schema.cohort.min_history_days > 0
        self.patients: dict[str, _PatientState] = defaultdict(_PatientState)
        self.aliases: dict[str, str] = {}
        self.file_problems: list[DataProblem] = []
        self.summary = EhrSummary()

    # -- streaming ---------------------------------------------------------------------------------------------

    def read(self, path: Path) -> None:
        from hospital_node.data import DataProblem

        handlers = {
            "Patient": self._patient,
            "Observation": self._observation,
            "Condition": self._condition,
        }
        if self.wants_encounters:
            handlers["Encounter"] = self._encounter
        summary = self.summary
        for item in read_resources(path):
            if isinstance(item, Unreadable):
                self.file_problems.append(DataProblem(item.origin.describe(item.resource), "*", item.reason))
                continue
            origin, resource = item
            kind = resource["resourceType"]
            summary.resources_read += 1
            summary.resources_by_type[kind] += 1
            handler = handlers.get(kind)
            if handler is None:
                summary.skipped_types[kind] += 1
                continue
            reason = handler(resource, origin)
            if reason is not None:
                self.file_problems.append(DataProblem(origin.describe(resource), "*", reason))

    def _subject(self, resource: dict[str, Any]) -> str | None:
        subject = resource.get("subject")
        return reference_id(subject.get("reference")) if isinstance(subject, dict) else None

    def _patient(self, resource: dict[str, Any], origin: Origin) -> str | None:
        from fhir.resources.R4B.patient import Patient
        from pydantic import ValidationError

        full_url = resource.pop("_fullUrl", None)
        try:
            patient = Patient.model_validate(resource)
        except ValidationError as exc:
            first = exc.errors()[0]
            return f"invalid R4 Patient: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        if not patient.id:
            return "Patient without an id: references cannot point at it"
        state = self.patients[patient.id]
        state.origin = origin.describe(resource)
        state.mrn = _patient_mrn(patient)
        state.birth = patient.birthDate.toordinal() if patient.birthDate is not None else None
        state.gender = patient.gender
        if patient.deceasedDateTime is not None:
            state.deceased = patient.deceasedDateTime.date().toordinal()
        elif patient.deceasedBoolean:
            state.deceased = 0
        alias = reference_id(full_url)
        if alias and alias != patient.id:
            self.aliases[alias] = patient.id
        return None

    def _encounter(self, resource: dict[str, Any], origin: Origin) -> str | None:
        subject = self._subject(resource)
        period = resource.get("period")
        if subject is not None and isinstance(period, dict):
            self.patients[subject].saw(_day(period.get("start")))
        return None

    def _observation(self, resource: dict[str, Any], origin: Origin) -> str | None:
        code = resource.get("code")
        if not isinstance(code, dict):
            return "Observation without a code (Observation.code is required)"
        targets = self.obs_index.match(_codings(code))
        components: list[tuple[list[int], dict[str, Any]]] = []
        for component in resource.get("component") or ():
            if isinstance(component, dict):
                found = self.obs_index.match(_codings(component.get("code")))
                if found:
                    components.append((found, component))
        if not targets and not components:
            return None
        subject = self._subject(resource)
        if subject is None:
            return "Observation without a subject reference: cannot tell whose reading it is"
        day = _day(resource.get("effectiveDateTime") or resource.get("effectiveInstant") or resource.get("issued"))
        if day is None and isinstance(resource.get("effectivePeriod"), dict):
            day = _day(resource["effectivePeriod"].get("start"))
        if day is None:
            if self.index_day is not None:
                return "Observation without a usable effective[x] date: cannot place it before or after the index date"
            day = 0  # no index date declared: undated readings are usable (latest = last in file order)
        status = resource.get("status")
        state = self.patients[subject]
        state.saw(day)
        if state.first_reading is None or day < state.first_reading:
            state.first_reading = day
        where = origin.describe(resource)
        for found, element in [(targets, resource), *components]:
            for target in found:
                self._reading(state, target, element, status, day, where)
        return None

    def _reading(
        self, state: _PatientState, target: int, element: dict[str, Any], status: Any, day: int, where: str
    ) -> None:
        rule: FeatureRule | LabelRule = self.label if target == LABEL else self.schema.features[target]
        column = self.schema.label_column if target == LABEL else rule.name  # type: ignore[union-attr]
        if status not in rule.statuses:
            self.summary.ignored[f"{column}: status {status!r} not accepted"] += 1
            return
        if target != LABEL and (self.index_day is None or day <= self.index_day):
            first = state.first_measured.get(target)
            if first is None or day < first:
                state.first_measured[target] = day
        if self.index_day is not None:
            window = getattr(rule, "window_days", None)
            if target != LABEL and (day > self.index_day or (window is not None and day <= self.index_day - window)):
                self.summary.ignored[f"{column}: outside the look-back window"] += 1
                return
        value = self._value(rule, element, column, where, state)
        if value is not None:
            state.readings[target].append((day, value))

    def _value(
        self, rule: FeatureRule | LabelRule, element: dict[str, Any], column: str, where: str, state: _PatientState
    ) -> float | None:
        if isinstance(rule, FeatureRule) and rule.value == "coded":
            found = [parse_code(c) for c in rule.categories]
            for system, code in _codings(element.get("valueCodeableConcept")):
                for position, (want_system, want_code) in enumerate(found):
                    if code == want_code and want_system in (ANY_SYSTEM, system):
                        return float(position)
            self.summary.ignored[f"{column}: coded value not among the declared categories"] += 1
            return None
        quantity = element.get("valueQuantity")
        if isinstance(quantity, dict):
            raw = quantity.get("value")
            unit = quantity.get("code") or quantity.get("unit")
        elif "valueBoolean" in element:
            raw, unit = element["valueBoolean"], None
            raw = float(raw) if isinstance(raw, bool) else raw
        elif "valueInteger" in element:
            raw, unit = element["valueInteger"], None
        elif "valueString" in element:
            state.problems.append((where, column, f"non-numeric value {str(element['valueString'])[:40]!r}"))
            return None
        else:
            self.summary.ignored[f"{column}: reading without a value"] += 1
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            state.problems.append((where, column, f"value {str(raw)[:40]!r} is not a finite number"))
            return None
        if rule.unit is not None and isinstance(unit, str) and unit != rule.unit:
            try:
                converter = conversion(unit, rule.unit, rule.molar_mass, rule.analyte)
            except UnitError as exc:
                state.problems.append((where, column, f"unit: {exc}"))
                return None
            return converter.apply(float(raw))
        return float(raw)

    def _condition(self, resource: dict[str, Any], origin: Origin) -> str | None:
        pairs = _codings(resource.get("code"))
        label = self.label.source == "condition" and LABEL in self.condition_index.match(pairs)
        features = [t for t in self.condition_index.match(pairs) if t != LABEL]
        excluded = bool(self.exclude_index.match(pairs))
        if not (label or features or excluded):
            return None
        from fhir.resources.R4B.condition import Condition
        from pydantic import ValidationError

        try:
            Condition.model_validate(resource)
        except ValidationError as exc:
            first = exc.errors()[0]
            return f"invalid R4 Condition: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        subject = self._subject(resource)
        if subject is None:
            return "Condition without a subject reference"
        verification = _first_code(resource.get("verificationStatus"))
        if verification in _NEVER_VERIFIED:
            self.summary.ignored[f"condition: verification {verification}"] += 1
            return None
        onset = _day(resource.get("onsetDateTime") or resource.get("recordedDate"))
        if onset is None and isinstance(resource.get("onsetPeriod"), dict):
            onset = _day(resource["onsetPeriod"].get("start"))
        if onset is None:
            return "Condition without onset[x] or recordedDate: cannot tell whether it is before the index date"
        abatement = _day(resource.get("abatementDateTime"))
        state = self.patients[subject]
        state.saw(onset)
        active_at_index = self.index_day is None or (
            onset <= self.index_day and (abatement is None or abatement > self.index_day)
        )
        if excluded and active_at_index:
            state.exclusions.append(onset)
        for target in features:
            if self.index_day is None or onset <= self.index_day:
                state.condition_features[target] = min(onset, state.condition_features.get(target, onset))
        if label:
            clinical = _first_code(resource.get("clinicalStatus"))
            if verification is not None and verification not in self.label.verification_status:
                self.summary.ignored[f"label: verification {verification} not accepted"] += 1
            elif clinical is not None and clinical not in self.label.clinical_status:
                self.summary.ignored[f"label: clinical status {clinical} not accepted"] += 1
            elif self.label.mode == "incident" or active_at_index:
                state.label_onsets.append(onset)
            else:
                self.summary.ignored["label: condition abated before the index date"] += 1
        return None

    # -- per patient ---------------------------------------------------------------------------------------------

    def merged_patients(self) -> dict[str, _PatientState]:
        """Patients by logical id, with states filed under a fullUrl alias folded into the Patient's."""
        for alias, pid in self.aliases.items():
            stray = self.patients.pop(alias, None)
            if stray is None:
                continue
            state = self.patients[pid]
            for target, readings in stray.readings.items():
                state.readings[target].extend(readings)
            for target, day in stray.first_measured.items():
                state.first_measured[target] = min(day, state.first_measured.get(target, day))
            state.label_onsets += stray.label_onsets
            state.exclusions += stray.exclusions
            for target, day in stray.condition_features.items():
                state.condition_features[target] = min(day, state.condition_features.get(target, day))
            state.problems += stray.problems
            state.saw(stray.first_day)
            if stray.first_reading is not None:
                state.first_reading = min(stray.first_reading, state.first_reading or stray.first_reading)
        return self.patients


def _patient_mrn(patient: Any) -> str | None:
    """The identifier typed MR (HL7 v2-0203), else the patient's first identifier."""
    identifiers = patient.identifier or []
    for ident in identifiers:
        codings = ident.type.coding if ident.type is not None and ident.type.coding else []
        if any(c.code == "MR" for c in codings):
            return str(ident.value) if ident.value is not None else None
    return str(identifiers[0].value) if identifiers and identifiers[0].value is not None else None


def _aggregate(rule: FeatureRule, readings: list[tuple[int, float]]) -> float | None:
    if not readings:
        return 0.0 if rule.aggregate == "count" else None
    if rule.aggregate == "count":
        return float(len(readings))
    if rule.aggregate == "latest":
        return max(enumerate(readings), key=lambda item: (item[1][0], item[0]))[1][1]  # same day: last read
    values = [v for _, v in readings]
    if rule.aggregate == "mean":
        return float(np.mean(values))
    if rule.aggregate == "min":
        return min(values)
    if rule.aggregate == "max":
        return max(values)
    # slope: least-squares change per year; needs readings on two different days
    days = np.array([d for d, _ in readings], dtype=np.float64) / DAYS_PER_YEAR
    if np.ptp(days) == 0:
        return None
    return float(np.polyfit(days, np.array(values), 1)[0])


def _feature_values(
    rule: FeatureRule, number: int, state: _PatientState, index_day: int | None
) -> tuple[list[float] | None, bool]:
    """The columns of one feature for one patient (None when missing) and whether a value was there."""
    value: float | None
    if rule.source == "age":
        value = None if state.birth is None or index_day is None else (index_day - state.birth) / DAYS_PER_YEAR
    elif rule.source == "sex":
        value = {"female": 1.0, "male": 0.0}.get(state.gender or "")
    elif rule.source == "condition":
        value = 1.0 if number in state.condition_features else 0.0
    else:
        value = _aggregate(rule, state.readings.get(number, []))
    if value is None:
        return None, False
    if rule.onehot:
        return [1.0 if position == int(value) else 0.0 for position in range(len(rule.categories))], True
    return [value], True


def _label_value(label: LabelRule, state: _PatientState, index_day: int | None) -> tuple[float | None, int | None]:
    """(label, onset day) — None when an observation label has no reading to judge by."""
    if label.source == "condition":
        onsets = sorted(state.label_onsets)
        if label.mode == "incident" and index_day is not None:
            horizon = index_day + (label.horizon_days or 0)
            later = [d for d in onsets if index_day < d <= horizon]
            return (1.0, later[0]) if later else (0.0, None)
        return (1.0, onsets[0]) if onsets else (0.0, None)
    readings = sorted(state.readings.get(LABEL, []))
    if index_day is not None:
        if label.mode == "incident":
            horizon = index_day + (label.horizon_days or 0)
            readings = [r for r in readings if index_day < r[0] <= horizon]
        else:
            readings = [r for r in readings if r[0] <= index_day]
    if not readings:
        return None, None
    threshold = label.threshold if label.threshold is not None else 0.5
    hits = [d for d, v in readings if v >= threshold]
    return (1.0, hits[0]) if hits else (0.0, None)


def _cohort_reason(schema: DataSchema, state: _PatientState, index_day: int | None) -> str | None:
    """The first funnel step a patient fails, or None when they are in the cohort."""
    cohort = schema.cohort
    if state.mrn is None and not state.origin:
        return "resources whose Patient is not in the export"
    label = schema.label_rule
    incident = label.mode == "incident" and label.source == "condition"
    if index_day is not None and incident and state.label_onsets and min(state.label_onsets) <= index_day:
        return "label condition on or before the index date (incident label)"
    if index_day is None or cohort is None:
        return None
    if state.birth is None:
        return "no birth date"
    if state.birth > index_day:
        return "born after the index date"
    if cohort.alive_at_index and state.deceased is not None and state.deceased <= index_day:
        return "died before the index date"
    age = (index_day - state.birth) / DAYS_PER_YEAR
    if cohort.min_age is not None and age < cohort.min_age:
        return f"younger than {cohort.min_age:g} at index"
    if cohort.max_age is not None and age > cohort.max_age:
        return f"older than {cohort.max_age:g} at index"
    if cohort.min_history_days and (state.first_day is None or state.first_day > index_day - cohort.min_history_days):
        return f"less than {cohort.min_history_days} days of history before index"
    if state.exclusions:
        return "excluded condition at index"
    return None


def _stats(name: str, column: np.ndarray, present: np.ndarray, declared: tuple[float | None, float | None]) -> Any:
    values = column[present]
    low = declared[0] if declared[0] is not None else (float(values.min()) if values.size else 0.0)
    high = declared[1] if declared[1] is not None else (float(values.max()) if values.size else 1.0)
    if high <= low:
        high = low + 1.0
    histogram = np.histogram(np.clip(values, low, high), bins=HISTOGRAM_BINS, range=(low, high))[0]
    return FeatureStats(
        name=name,
        coverage=float(present.mean()) if present.size else 0.0,
        minimum=float(values.min()) if values.size else None,
        maximum=float(values.max()) if values.size else None,
        declared=declared,
        histogram=[int(c) for c in histogram],
        edges=(low, high),
    )


def _mask(text: str, mrns: set[str]) -> str:
    """Hide MRNs, and the whole path component holding one: exporters (Synthea) name a patient's file
    `<Given>_<Family>_<MRN>.json`, so the name beside the MRN is as identifying. The location keeps the directory,
    the entry and the resource id, which is how hospital IT finds the record."""
    for mrn in mrns:
        if mrn and mrn in text:
            text = re.sub(rf"[^/\s]*{re.escape(mrn)}[^/\s]*", "<MRN>", text)
    return text


def load_fhir(path: Path, schema: DataSchema) -> ValidationReport:
    """Read FHIR R4 input (Bundle, directory of Bundles, NDJSON) and apply the schema's rules."""
    from hospital_node.data import DataProblem, _RecordCollector

    extractor = _Extractor(schema)
    extractor.read(path)
    summary = extractor.summary
    index_day = extractor.index_day
    patients = extractor.merged_patients()
    summary.patients_read = sum(1 for s in patients.values() if s.origin)
    dropped: Counter[str] = Counter()
    cohort: list[tuple[str, _PatientState]] = []
    for pid in sorted(patients):
        state = patients[pid]
        reason = _cohort_reason(schema, state, index_day)
        if reason is not None:
            dropped[reason] += 1
        else:
            cohort.append((pid, state))
    summary.in_cohort = len(cohort)
    columns = schema.feature_names
    rows: list[tuple[str, _PatientState, float, int | None, list[float | None]]] = []
    with_feature: Counter[str] = Counter()
    collector = _RecordCollector(schema)
    mrns = {s.mrn for s in patients.values() if s.mrn}
    for pid, state in cohort:
        if state.problems:  # a reading that cannot be used as declared: reported, never silently dropped
            collector.total += 1
            collector.bad_records += 1
            collector.problems += [DataProblem(_mask(w, mrns), c, r) for w, c, r in state.problems]
            continue
        label, onset = _label_value(schema.label_rule, state, index_day)
        row: list[float | None] = []
        missing_drop: str | None = None
        for number, rule in enumerate(schema.features):
            values, present = _feature_values(rule, number, state, index_day)
            with_feature[rule.name] += present
            if not present and rule.missing == "drop" and missing_drop is None:
                missing_drop = f"no {rule.name} in the look-back window"
            width = len(rule.columns) - (1 if rule.missing == "indicator" else 0)
            row += values if values is not None else [None] * width
            if rule.missing == "indicator":
                row.append(0.0 if present else 1.0)
        if missing_drop is not None:
            dropped[missing_drop] += 1
            continue
        if label is None:
            dropped["no label reading"] += 1
            continue
        rows.append((pid, state, label, onset, row))
    summary.with_feature = {rule.name: with_feature[rule.name] for rule in schema.features}
    matrix = np.array([[np.nan if v is None else v for v in r[4]] for r in rows], dtype=np.float64)
    matrix = matrix.reshape(len(rows), len(columns))
    measured = ~np.isnan(matrix)
    ranges = [(low, high) for _, _, low, high in schema.column_checks()]
    summary.features = [_stats(c, matrix[:, j], measured[:, j], ranges[j]) for j, c in enumerate(columns)]
    for j in range(len(columns)):
        if not measured[:, j].all():  # declared imputation: the cohort's median
            fill = float(np.median(matrix[measured[:, j], j])) if measured[:, j].any() else 0.0
            matrix[~measured[:, j], j] = fill
    _leakage(schema, summary, rows)
    for (pid, state, label, _onset, _), filled in zip(rows, matrix, strict=True):
        where = _mask(state.origin or f"Patient/{pid}", mrns)
        record = {schema.mrn_column: state.mrn, schema.label_column: label, **dict(zip(columns, filled, strict=True))}
        collector.add(where, record)
    dropped_invalid = collector.bad_records
    if dropped_invalid:
        dropped["invalid data (see problems)"] = dropped_invalid
    summary.dropped = dict(dropped)
    summary.trained_on = len(collector.rows)
    summary.positives = int(sum(collector.labels))
    file_problems = [DataProblem(_mask(p.location, mrns), p.column, p.reason) for p in extractor.file_problems]
    report = collector.report(str(path), file_problems)
    report.total_records = summary.patients_read
    report.ehr = summary
    return report


def _leakage(schema: DataSchema, summary: EhrSummary, rows: list[Any]) -> None:
    """Flag features measured because of the label rather than before it; two signals, either suffices.

    A lab that starts being ordered once the diagnosis is made (glucose, HbA1c for diabetes) predicts the label
    because the diagnosis caused the measurement: a model trained on it learns the care pathway and is useless
    before diagnosis. (1) Among positives with records from before their onset (an onset predating the whole
    record cannot tell), the share whose first reading of the feature is on or after the onset. (2) How much
    more often positives have the feature at all than negatives: a feature present for most positives and few
    negatives is mostly measured after the diagnosis even when the onset predates the record.
    """
    for number, rule in enumerate(schema.features):
        if rule.source != "observation":
            continue
        after = informative = 0
        measured = {0.0: 0, 1.0: 0}
        totals = {0.0: 0, 1.0: 0}
        for _, state, label, onset, _ in rows:
            has = bool(state.readings.get(number))
            totals[label] += 1
            measured[label] += has
            first = state.first_measured.get(number)
            earlier = state.first_reading is not None and onset is not None and state.first_reading < onset
            if label == 1.0 and has and first is not None and earlier:
                informative += 1
                after += first >= onset
        share = after / informative if informative else None
        positive = measured[1.0] / totals[1.0] if totals[1.0] else 0.0
        negative = measured[0.0] / totals[0.0] if totals[0.0] else 0.0
        ratio = positive / negative if negative else (math.inf if positive else 1.0)
        summary.leakage[rule.name] = {
            "first_after_onset": share,
            "positives_with_earlier_records": informative,
            "coverage_positive": positive,
            "coverage_negative": negative,
        }
        by_time = share is not None and informative >= LEAKAGE_MIN_PATIENTS and share > LEAKAGE_SHARE
        by_coverage = measured[1.0] >= LEAKAGE_MIN_MEASURED and ratio >= LEAKAGE_COVERAGE_RATIO
        if by_time or by_coverage:
            summary.leaking.append(rule.name)
