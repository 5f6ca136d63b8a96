"""One hospital's part of a federated cohort query: its local statistic, noised, charged, encrypted.

Order, as in a training round: check that the query is registered on the ledger with the exact hash of what
arrived (else nothing is read or charged); read the cohort from the hospital's own data with the query's rules;
keep the patients consenting to the query's purpose (fail closed); charge the phase's ε on the ledger before
computing anything from the data; add Gaussian noise for that ε (privacy.queries); encrypt under the
consortium's CKKS key. A hospital decrypts only consortium totals (the aggregator's sums), never another
hospital's value, and applies the small-cell rule itself before the statistic phase spends anything.

The cohort read is cached per (data file state, cohort rules), so the two phases of a query and the queries
after it do not parse the hospital's export again; consent is checked afresh in every phase.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fabric_network.ledger import Ledger, LedgerError
from federation.analytics import (
    BINNED_KINDS,
    PHASE_COUNT,
    PHASE_DECRYPT,
    PHASE_STATISTIC,
    STATUS_SUPPRESSED,
    QueryError,
    QueryRequest,
    QuerySpec,
    Strata,
    bin_index,
    phase_noise,
    registration_problem,
    released_counts,
)
from federation.messages import STATUS_DECLINED, STATUS_OK
from hospital_node.config import NodeConfig, open_node_ledger
from hospital_node.consent import ConsentUnavailable, select_consented
from hospital_node.data import DataSchema, InvalidDataError, PatientRecords, SchemaError, load_records
from hospital_node.pseudonyms import PseudonymTable
from hospital_node.training import BudgetCharge, RoundDeclined, charge_budget, secret_context
from privacy.queries import PhaseNoise, add_noise, from_limbs, phase_epsilons, to_limbs

COUNT_ROUND = 1
STATISTIC_ROUND = 2


def build_query(
    kind: str,
    cohort_path: Path,
    *,
    column: str = "",
    bins: str = "10",
    by: str = "",
    **settings: Any,
) -> QuerySpec:
    """A query over the cohort file's rules, its variable's range taken from the cohort's declared min/max.

    `bins` is a number of equal-width bins over that range or comma-separated edges; `by` is ``column`` (bins of
    0/1 for a 0/1 column, else the column's range in 4 bands) or ``column:edge,edge,…``. Errors name the option.
    """
    from fabric_network.contracts.common import opaque_id

    text = cohort_path.read_text(encoding="utf-8")
    schema = DataSchema.from_text(text, f"--cohort {cohort_path}")
    ranges = dict(zip(schema.feature_names, schema.column_ranges(), strict=True))

    def range_of(name: str, option: str) -> tuple[float, float]:
        if name not in ranges:
            raise QueryError(f"{option}: {name!r} is not a column of the cohort; its columns: {', '.join(ranges)}")
        return ranges[name]

    if kind == "moments":
        settings.setdefault("columns", tuple(ranges))
        settings["ranges"] = tuple(range_of(name, "columns") for name in settings["columns"])
    low, high = range_of(column, "column") if column else (0.0, 0.0)
    edges: tuple[float, ...] = ()
    if kind in BINNED_KINDS:
        edges = _edges(bins, low, high, "--bins")
    strata = None
    if by:
        name, _, given = by.partition(":")
        by_low, by_high = range_of(name, "--by")
        default = "0,0.5,1" if (by_low, by_high) == (0.0, 1.0) else "4"
        strata = Strata(name, _edges(given or default, by_low, by_high, "--by"))
    count_share = 1.0 if kind == "count" else settings.pop("count_share", 0.25)
    return QuerySpec(
        query_id=opaque_id("query"),
        kind=kind,
        cohort=text,
        column=column,
        low=low,
        high=high,
        bins=edges,
        by=strata,
        count_share=count_share,
        metadata={"cohort_file": cohort_path.name},
        **settings,
    )


def _edges(text: str, low: float, high: float, option: str) -> tuple[float, ...]:
    """Bin edges from "N" (equal width over [low, high]) or "e0,e1,…"."""
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return tuple(float(e) for e in np.linspace(low, high, count + 1))
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise QueryError(f"{option}: give a number of bins ≥ 1 or comma-separated edges, got {text!r}") from None


def _fingerprint(path: Path) -> tuple[str, int, int]:
    """What identifies the state of a data file or directory (its newest change and total size)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    stats = [p.stat() for p in files]
    return str(path.resolve()), max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats)


@lru_cache(maxsize=8)
def _cohort(fingerprint: tuple[str, int, int], cohort: str, drop_bad_rows: bool) -> PatientRecords:
    schema = DataSchema.from_text(cohort, "the query's cohort")
    return load_records(Path(fingerprint[0]), schema).usable_records(drop_bad_rows=drop_bad_rows)


def cohort_records(node: NodeConfig, spec: QuerySpec) -> PatientRecords:
    """The hospital's patients in the query's cohort (all of them: consent is applied by the caller)."""
    try:
        return _cohort(_fingerprint(node.data), spec.cohort, node.drop_bad_rows)
    except (SchemaError, InvalidDataError, FileNotFoundError, ValueError) as exc:
        raise RoundDeclined(f"cohort refused: {exc}") from exc


def _column(records: PatientRecords, name: str, field: str) -> np.ndarray:
    if name not in records.feature_names:
        raise RoundDeclined(f"{field}: {name!r} is not a column of the cohort; columns: {list(records.feature_names)}")
    return np.asarray(records.features[:, list(records.feature_names).index(name)], dtype=np.float64)


def _strata(spec: QuerySpec, records: PatientRecords) -> np.ndarray:
    """Stratum of each patient (−1: outside every stratum, so in none of the query's cells)."""
    if spec.by is None:
        return np.zeros(len(records), dtype=np.int64)
    return bin_index(_column(records, spec.by.column, "by.column"), spec.by.edges)


def local_counts(spec: QuerySpec, records: PatientRecords) -> np.ndarray:
    """The exact cohort count per stratum (the count phase's vector before noise)."""
    strata = _strata(spec, records)
    return np.bincount(strata[strata >= 0], minlength=spec.strata).astype(np.float64)


def local_statistic(spec: QuerySpec, records: PatientRecords) -> np.ndarray:
    """The exact statistic vector before noise (layout in federation.analytics), values clipped to the range."""
    if spec.kind == "moments":
        scaled = np.column_stack(
            [
                (np.clip(_column(records, name, "columns"), low, high) - (low + high) / 2) / ((high - low) / 2)
                for name, (low, high) in zip(spec.columns, spec.ranges, strict=True)
            ]
        )
        return np.concatenate([scaled.sum(axis=0), (scaled**2).sum(axis=0)])
    strata = _strata(spec, records)
    inside = strata >= 0
    values = np.clip(_column(records, spec.column, "column"), spec.low, spec.high)[inside]
    strata = strata[inside]
    if spec.kind in ("mean", "stddev"):
        scaled = (values - spec.centre) / spec.half_range
        sums = np.bincount(strata, weights=scaled, minlength=spec.strata)
        if spec.kind == "mean":
            return sums
        return np.concatenate([sums, np.bincount(strata, weights=scaled**2, minlength=spec.strata)])
    bins = bin_index(values, spec.bins)
    keep = bins >= 0
    cells = strata[keep] * spec.bin_count + bins[keep]
    if spec.kind == "table":
        cells = cells * 2 + records.labels[inside][keep].astype(np.int64)
        return np.bincount(cells, minlength=spec.strata * spec.bin_count * 2).astype(np.float64)
    return np.bincount(cells, minlength=spec.strata * spec.bin_count).astype(np.float64)


def _require_registered(ledger: Ledger, spec: QuerySpec) -> None:
    """Answer only a query the consortium registered with this exact content, still open, asking this hospital."""
    try:
        record = ledger.evaluate("AnalyticsContract:read_query", spec.query_id)
    except LedgerError as exc:
        raise RoundDeclined(f"query {spec.query_id} is not registered on the ledger ({exc}); not answering") from exc
    problem = registration_problem(spec, record, ledger.msp_id)
    if problem is not None:
        raise RoundDeclined(f"{problem}; not answering")


def _consented(node: NodeConfig, spec: QuerySpec, ledger: Ledger, table: PseudonymTable, phase: str) -> PatientRecords:
    records = cohort_records(node, spec)
    try:
        selection = select_consented(records, table, ledger, spec.purpose, f"{spec.query_id}:{node.hospital}:{phase}")
    except ConsentUnavailable as exc:
        raise RoundDeclined(str(exc)) from exc
    return selection.records


def _charge_and_encrypt(
    node: NodeConfig,
    ledger: Ledger,
    spec: QuerySpec,
    exact: np.ndarray,
    phase: tuple[int, PhaseNoise, float],
    rng: np.random.Generator,
) -> bytes:
    """Charge the phase's ε, then noise the exact vector and encrypt it (the only form that leaves the hospital)."""
    from privacy.he import encrypt

    round_number, noise, epsilon = phase
    charge_budget(
        ledger, node, BudgetCharge(spec.purpose, spec.query_id, round_number, epsilon), noise.mechanism(spec.delta)
    )
    return encrypt(secret_context(node), to_limbs(add_noise(exact, noise.sigma, rng)))


def _decrypted_totals(node: NodeConfig, aggregate: bytes) -> np.ndarray:
    from privacy.he import decrypt

    if not aggregate:
        raise ValueError("query phase without the aggregate to decrypt")
    return from_limbs(decrypt(secret_context(node), aggregate))


def answer_query(node: NodeConfig, request: QueryRequest, rng: np.random.Generator | None = None) -> dict[str, Any]:
    """This hospital's reply to one phase of a query (raises RoundDeclined to refuse)."""
    spec = request.spec
    rng = rng or np.random.default_rng()
    reply: dict[str, Any] = {"hospital": node.hospital, "status": STATUS_OK}
    if request.phase == PHASE_DECRYPT:
        reply["totals"] = json.dumps(_decrypted_totals(node, request.aggregate).tolist())
        return reply
    try:
        ledger = open_node_ledger(node)
    except (LedgerError, OSError, ValueError) as exc:
        raise RoundDeclined(f"ledger unreachable ({exc}); not answering (fail closed)") from exc
    with ledger, PseudonymTable(node.pseudonym_table) as table:
        reply["msp-id"] = ledger.msp_id
        _require_registered(ledger, spec)
        count_noise, statistic_noise = phase_noise(spec)
        count_epsilon, statistic_epsilon = phase_epsilons(
            count_noise.noise_multiplier, statistic_noise.noise_multiplier, spec.delta
        )
        if request.phase == PHASE_COUNT:
            counts = local_counts(spec, _consented(node, spec, ledger, table, request.phase))
            reply["update"] = _charge_and_encrypt(
                node, ledger, spec, counts, (COUNT_ROUND, count_noise, count_epsilon), rng
            )
            reply["epsilon"] = count_epsilon
            return reply
        if request.phase != PHASE_STATISTIC:
            raise ValueError(f"unknown query phase {request.phase!r}")
        released = released_counts(spec, _decrypted_totals(node, request.aggregate))
        reply["counts"] = json.dumps(released)
        if all(n is None for n in released):
            reply["status"] = STATUS_SUPPRESSED
            return reply
        if spec.kind == "count":
            return reply
        statistic = local_statistic(spec, _consented(node, spec, ledger, table, request.phase))
        reply["update"] = _charge_and_encrypt(
            node, ledger, spec, statistic, (STATISTIC_ROUND, statistic_noise, statistic_epsilon), rng
        )
        reply["epsilon"] = statistic_epsilon
    return reply


def answer_query_reply(node: NodeConfig, request: QueryRequest) -> dict[str, Any]:
    """`answer_query`, with an expected refusal turned into a "declined" reply the aggregator records."""
    try:
        return answer_query(node, request)
    except RoundDeclined as exc:
        return {"hospital": node.hospital, "status": STATUS_DECLINED, "reason": str(exc)}
