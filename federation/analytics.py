"""A federated cohort query as it crosses between the consortium and the hospitals, and how its totals read.

A query names a cohort in the schema language of training (the TOML text itself travels, so every hospital
applies the same rules to its own data), the statistic, the variable with its declared range (values are
clipped to it, which bounds the sensitivity), bins, optional strata, and its privacy parameters. Both sides
import this module; the consortium never imports the hospital's code nor the hospital the aggregator's.

Phases (`QueryRequest.phase`), each one Flower message per hospital:
1. ``count``: each hospital sends its noisy cohort count per stratum, encrypted; the aggregator adds them.
2. ``statistic``: each hospital decrypts the summed counts and applies the small-cell rule; strata whose noisy
   count is below `min_count` are suppressed. If none is left, or the query is a count, it answers with the
   released counts only. Otherwise it sends its noisy statistic, encrypted, and the aggregator adds them.
3. ``decrypt``: the hospitals decrypt the summed statistic; the aggregator turns totals into the result.

Values inside the totals vector (S strata, B bins; x clipped to [lo, hi], c = (lo + hi)/2, R = (hi − lo)/2):
count: S counts · mean: S sums of (x − c)/R · stddev: those and S sums of ((x − c)/R)² · histogram, quantiles:
S·B bin counts · table: S·B·2 counts (bin × label). One patient changes one stratum, so the L2 sensitivity is 1,
except stddev's pair (√2).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from privacy.queries import PhaseNoise, interval_halfwidth, quantiles_from_histogram, split_noise

KINDS = ("count", "mean", "stddev", "histogram", "quantiles", "table", "moments")
FEATURE_KINDS = KINDS[1:6]
BINNED_KINDS = ("histogram", "quantiles", "table")
PHASE_COUNT = "count"
PHASE_STATISTIC = "statistic"
PHASE_DECRYPT = "decrypt"
STATUS_SUPPRESSED = "suppressed"
DEFAULT_QUANTILES = (0.25, 0.5, 0.75)
#: Above ε ≈ 21 the accountant's smallest noise multiplier (0.3) is reached, so a larger ε would be charged less
#: than it says; and at ε = 20 a count's noise is already below one patient.
MAX_QUERY_EPSILON = 20.0


class QueryError(ValueError):
    """A query is malformed; the message names the field and the fix."""


@dataclass(frozen=True)
class Strata:
    """Stratify by a cohort column's bins: value v falls in [edges[i], edges[i+1]) (the last bin closed)."""

    column: str
    edges: tuple[float, ...]

    def labels(self) -> list[str]:
        return [f"{self.column} {_bin_label(self.edges, i)}" for i in range(len(self.edges) - 1)]


@dataclass(frozen=True)
class QuerySpec:
    """What a researcher asks of the consortium; its SHA-256 is registered on the ledger before it runs."""

    query_id: str
    kind: str
    purpose: str
    cohort: str  # the cohort's schema TOML text (docs/ehr.md)
    epsilon: float
    delta: float = 1e-5
    min_count: int = 10
    count_share: float = 0.25  # share of the RDP budget for the count phase (1 for a count query)
    column: str = ""  # the variable: a column of the cohort's feature matrix
    low: float = 0.0  # its declared range; values are clipped to it
    high: float = 0.0
    bins: tuple[float, ...] = ()  # bin edges (histogram, quantiles, table)
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    by: Strata | None = None
    # moments: mean and std of several columns at once (the consortium's feature standardisation, #ehr-data)
    columns: tuple[str, ...] = ()
    ranges: tuple[tuple[float, float], ...] = ()
    requester: str = "researcher"
    role: str = "researcher"
    metadata: dict[str, str] = field(default_factory=dict)  # e.g. the cohort file's name, for the report

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise QueryError("; ".join(problems))

    def problems(self) -> list[str]:
        """Every reason this query cannot run, each naming its field."""
        found: list[str] = []
        if self.kind not in KINDS:
            found.append(f"kind: must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.cohort.strip():
            found.append("cohort: the cohort's schema TOML is empty")
        if not (math.isfinite(self.epsilon) and 0 < self.epsilon <= MAX_QUERY_EPSILON):
            found.append(f"epsilon: must be in (0, {MAX_QUERY_EPSILON:g}], got {self.epsilon!r}")
        if not 0 < self.delta <= 0.01:
            found.append(f"delta: must be in (0, 0.01], got {self.delta!r}")
        if self.min_count < 0:
            found.append(f"min_count: must be ≥ 0, got {self.min_count!r}")
        if not 0 < self.count_share <= 1 or (self.kind == "count" and self.count_share != 1):
            found.append(f"count_share: must be in (0, 1) (exactly 1 for a count query), got {self.count_share!r}")
        if self.kind in FEATURE_KINDS:
            if not self.column:
                found.append(f"column: a {self.kind} query needs the variable (a column of the cohort)")
            if not (math.isfinite(self.low) and math.isfinite(self.high) and self.high > self.low):
                found.append(f"low/high: the variable's declared range needs low < high, got [{self.low}, {self.high}]")
        if self.kind in BINNED_KINDS:
            found += _edges_problems("bins", self.bins)
        if self.kind == "quantiles" and not all(0 < q < 1 for q in self.quantiles):
            found.append(f"quantiles: each must be in (0, 1), got {list(self.quantiles)}")
        if self.kind == "moments":
            if not self.columns or len(self.ranges) != len(self.columns):
                found.append("columns/ranges: a moments query names its columns, each with its declared range")
            elif not all(high > low for low, high in self.ranges):
                found.append(f"ranges: each needs low < high, got {list(self.ranges)}")
            if self.by is not None:
                found.append("by: a moments query is not stratified")
        if self.by is not None:
            found += _edges_problems("by.edges", self.by.edges)
            if not self.by.column:
                found.append("by.column: name the column to stratify by")
        return found

    # -- layout -------------------------------------------------------------------------------------------------
    @property
    def strata(self) -> int:
        return 1 if self.by is None else len(self.by.edges) - 1

    @property
    def stratum_labels(self) -> list[str]:
        return ["all"] if self.by is None else self.by.labels()

    @property
    def bin_count(self) -> int:
        return len(self.bins) - 1

    @property
    def statistic_sensitivity(self) -> float:
        """L2 sensitivity of the statistic vector (in its scaled units)."""
        if self.kind == "moments":
            return math.sqrt(2.0 * len(self.columns))
        return math.sqrt(2.0) if self.kind == "stddev" else 1.0

    @property
    def centre(self) -> float:
        return (self.low + self.high) / 2

    @property
    def half_range(self) -> float:
        return (self.high - self.low) / 2

    # -- encoding -----------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> QuerySpec:
        raw = json.loads(text)
        by = raw.pop("by", None)
        for name in ("bins", "quantiles", "columns"):
            raw[name] = tuple(raw.get(name, ()))
        raw["ranges"] = tuple((float(low), float(high)) for low, high in raw.get("ranges", ()))
        strata = Strata(str(by["column"]), tuple(float(e) for e in by["edges"])) if by else None
        return cls(**raw, by=strata)

    @property
    def sha256(self) -> str:
        """What the ledger registers and every hospital checks before it computes or charges anything."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def ledger_record(self, hospitals: list[str]) -> dict[str, Any]:
        """`AnalyticsContract:register_query`'s argument (hospitals as MSP ids)."""
        return {
            "requester": self.requester,
            "role": self.role,
            "purpose": self.purpose,
            "kind": self.kind,
            "query_sha256": self.sha256,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "min_count": self.min_count,
            "hospitals": hospitals,
        }

    def with_id(self, query_id: str) -> QuerySpec:
        return replace(self, query_id=query_id)


def _edges_problems(name: str, edges: tuple[float, ...]) -> list[str]:
    if len(edges) < 2:
        return [f"{name}: give at least two edges (one bin), e.g. 18,40,65,90"]
    if not all(math.isfinite(e) for e in edges) or any(b <= a for a, b in itertools.pairwise(edges)):
        return [f"{name}: edges must be finite and strictly increasing, got {list(edges)}"]
    return []


def _bin_label(edges: tuple[float, ...], index: int) -> str:
    closing = "]" if index == len(edges) - 2 else ")"
    return f"[{edges[index]:g}, {edges[index + 1]:g}{closing}"


def bin_index(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Bin of each value (−1 outside the edges); the last bin includes its right edge."""
    bounds = np.asarray(edges, dtype=np.float64)
    index = np.searchsorted(bounds, values, side="right") - 1
    index[values == bounds[-1]] = len(bounds) - 2
    index[(values < bounds[0]) | (values > bounds[-1])] = -1
    return np.asarray(index, dtype=np.int64)


@dataclass(frozen=True)
class QueryRequest:
    """One phase of a query, as the aggregator sends it (the message's ConfigRecord)."""

    spec: QuerySpec
    phase: str
    aggregate: bytes = b""  # the previous phase's encrypted sum (statistic: the counts; decrypt: the statistic)

    def to_config(self) -> dict[str, Any]:
        return {"query": self.spec.to_json(), "phase": self.phase, "aggregate": self.aggregate}

    @classmethod
    def from_config(cls, config: Any) -> QueryRequest:
        return cls(QuerySpec.from_json(str(config["query"])), str(config["phase"]), bytes(config["aggregate"]))


def phase_noise(spec: QuerySpec) -> tuple[PhaseNoise, PhaseNoise]:
    """The Gaussian noise each hospital adds in the count and the statistic phase for the query's ε."""
    count_z, statistic_z = split_noise(spec.epsilon, spec.delta, spec.count_share)
    return PhaseNoise(count_z, 1.0), PhaseNoise(statistic_z, spec.statistic_sensitivity)


def registration_problem(spec: QuerySpec, record: dict[str, Any], msp_id: str = "") -> str | None:
    """Why the ledger's record of a query forbids running it as `spec` says (None when it allows it): the
    aggregator and every hospital (`msp_id`: which must be asked) apply this one rule before anything is sent
    or charged."""
    if record["query_sha256"] != spec.sha256:
        return f"query {spec.query_id} differs from the one registered on the ledger"
    if record["status"] != "registered":
        return f"query {spec.query_id} is closed on the ledger ({record['status']})"
    if msp_id and msp_id not in record["hospitals"]:
        return f"query {spec.query_id} does not ask {msp_id}"
    return None


def released_counts(spec: QuerySpec, noisy: np.ndarray) -> list[float | None]:
    """The small-cell rule on the consortium's noisy counts: a stratum below `min_count` is withheld (None)."""
    return [float(n) if n >= spec.min_count else None for n in noisy]


def summarise(
    spec: QuerySpec,
    counts: list[float | None],
    totals: np.ndarray | None,
    count_sigma: float,
    statistic_sigma: float,
    hospitals: int,
) -> dict[str, Any]:
    """The released result: per stratum the noisy statistic and its 95 % interval (post-processing only).

    `counts` are the released noisy counts (None = suppressed), `totals` the decrypted statistic vector (None when
    nothing but counts was released), the σ's those each hospital added.
    """
    count_hw = interval_halfwidth(count_sigma, hospitals)
    strata: list[dict[str, Any]] = []
    for index, label in enumerate(spec.stratum_labels):
        n = counts[index]
        if n is None:
            strata.append({"stratum": label, "suppressed": True})
            continue
        row: dict[str, Any] = {"stratum": label, "suppressed": False, "count": n, "count_ci95": count_hw}
        if totals is not None:
            row.update(_statistic(spec, index, n, totals, statistic_sigma, hospitals, count_hw))
        strata.append(row)
    released = [s for s in strata if not s["suppressed"]]
    return {
        "query_id": spec.query_id,
        "kind": spec.kind,
        "status": "answered" if released else STATUS_SUPPRESSED,
        "column": spec.column,
        "range": [spec.low, spec.high] if spec.kind in FEATURE_KINDS else None,
        "bins": list(spec.bins) if spec.kind in BINNED_KINDS else None,
        "min_count": spec.min_count,
        "epsilon": spec.epsilon,
        "delta": spec.delta,
        "hospitals": hospitals,
        "noise": {
            "mechanism": "gaussian",
            "count_sigma_per_hospital": count_sigma,
            "statistic_sigma_per_hospital": statistic_sigma if totals is not None else None,
        },
        "strata": strata,
    }


def _statistic(
    spec: QuerySpec, index: int, n: float, totals: np.ndarray, sigma: float, hospitals: int, count_hw: float
) -> dict[str, Any]:
    """One stratum's statistic from the totals vector (layout in the module doc)."""
    strata, bins = spec.strata, spec.bin_count
    hw = interval_halfwidth(sigma, hospitals)
    if spec.kind == "moments":
        return {"moments": moments_of(spec, n, totals), "moment_ci95_scaled": hw / n}
    r, c = spec.half_range, spec.centre
    if spec.kind in ("mean", "stddev"):
        scaled_sum = float(totals[index])
        mean = c + r * scaled_sum / n
        # Delta method on c + r·S/N, independent noise on S and N: half-width √((r·hw_S)² + ((mean − c)·hw_N)²)/N.
        half_width = math.hypot(r * hw, (mean - c) * count_hw) / n
        row: dict[str, Any] = {"mean": mean, "mean_ci95": half_width, "sum": n * mean}
        if spec.kind == "stddev":
            squares = float(totals[strata + index])
            variance = r * r * max(squares / n - (scaled_sum / n) ** 2, 0.0)
            row.update(variance=variance, stddev=math.sqrt(variance))
        return row
    if spec.kind == "table":
        cells = totals[index * bins * 2 : (index + 1) * bins * 2].reshape(bins, 2)
        return {
            "table": [
                {"bin": _bin_label(spec.bins, b), "label_0": float(cells[b, 0]), "label_1": float(cells[b, 1])}
                for b in range(bins)
            ],
            "cell_ci95": hw,
        }
    histogram = totals[index * bins : (index + 1) * bins]
    row = {
        "histogram": [{"bin": _bin_label(spec.bins, b), "count": float(histogram[b])} for b in range(bins)],
        "bin_ci95": hw,
    }
    if spec.kind == "quantiles":
        values = quantiles_from_histogram(spec.bins, histogram, spec.quantiles)
        row["quantiles"] = {f"{q:g}": float(v) for q, v in zip(spec.quantiles, values, strict=True)}
    return row


def moments_of(spec: QuerySpec, n: float, totals: np.ndarray) -> list[dict[str, Any]]:
    """Per column the mean and standard deviation from the summed scaled values and squares (layout: S…, Q…)."""
    d = len(spec.columns)
    rows = []
    for j, (column, (low, high)) in enumerate(zip(spec.columns, spec.ranges, strict=True)):
        centre, half = (low + high) / 2, (high - low) / 2
        s, q = float(totals[j]) / n, float(totals[d + j]) / n
        rows.append({"column": column, "mean": centre + half * s, "stddev": half * math.sqrt(max(q - s * s, 0.0))})
    return rows


#: A standard deviation is never taken below this share of the column's declared range: on a small cohort the DP
#: noise on the sum of squares can push the estimated variance to zero, which would blow up the scaled feature.
STD_FLOOR_SHARE = 0.05


def standardisation_from(spec: QuerySpec, result: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Column → (mean, std) from an answered moments query, each std floored at STD_FLOOR_SHARE of its range."""
    if spec.kind != "moments" or result.get("status") != "answered":
        raise QueryError(f"standardisation: needs an answered moments query, got {spec.kind} {result.get('status')}")
    floors = {c: STD_FLOOR_SHARE * (high - low) for c, (low, high) in zip(spec.columns, spec.ranges, strict=True)}
    return {
        row["column"]: (row["mean"], max(row["stddev"], floors[row["column"]]))
        for row in result["strata"][0]["moments"]
    }


def result_sha256(result: dict[str, Any]) -> str:
    """The hash the ledger records for a released result (canonical JSON)."""
    return hashlib.sha256(json.dumps(result, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def result_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """A released result as (stratum, statistic, value, ± 95 %) rows: what the CLI and the web page show."""
    rows: list[tuple[str, str, str, str]] = []
    for stratum in result.get("strata", []):
        name = stratum["stratum"]
        if stratum["suppressed"]:
            rows.append((name, "suppressed", f"noisy count < {result['min_count']}", ""))
            continue
        rows.append((name, "count", _number(stratum["count"]), _number(stratum["count_ci95"])))
        for key in ("mean", "stddev"):
            if key in stratum:
                rows.append((name, key, _number(stratum[key], 2), _number(stratum.get(f"{key}_ci95"), 2)))
        for row in stratum.get("histogram", []):
            rows.append((name, f"bin {row['bin']}", _number(row["count"]), _number(stratum["bin_ci95"])))
        for q, value in stratum.get("quantiles", {}).items():
            rows.append((name, f"quantile {q}", _number(value, 2), ""))
        for row in stratum.get("moments", []):
            rows.append((name, f"{row['column']} mean", _number(row["mean"], 3), ""))
            rows.append((name, f"{row['column']} stddev", _number(row["stddev"], 3), ""))
        for row in stratum.get("table", []):
            for label in ("label_0", "label_1"):
                rows.append((name, f"{row['bin']} {label}", _number(row[label]), _number(stratum["cell_ci95"])))
    return rows
