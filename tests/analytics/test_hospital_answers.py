"""A federated query without Flower: each hospital's noisy, encrypted answer, the ciphertext sums, the ledger.

The hospitals' parts run as in production (`hospital_node.analytics.answer_query` with the real embedded ledger,
consents, CKKS keys); the aggregator's part here is `privacy.he.aggregate` with the public context only, which is
all the ServerApp does between phases (tests/federated/test_query_run.py drives the same through Flower).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from consortium.keys import public_context_path
from consortium.proposals import register_query
from fabric_network.identities import msp_id_for
from fabric_network.ledger import open_ledger
from federation.analytics import (
    PHASE_COUNT,
    PHASE_DECRYPT,
    PHASE_STATISTIC,
    QueryError,
    QueryRequest,
    QuerySpec,
    phase_noise,
    released_counts,
    standardisation_from,
    summarise,
)
from federation.layout import node_dir_for
from harness.analytics_data import ADULTS_COHORT, ALIVE_COHORT
from hospital_node.analytics import answer_query, build_query, cohort_records, local_counts
from hospital_node.config import NodeConfig
from hospital_node.training import RoundDeclined, secret_context
from privacy.he import PublicContext, aggregate, decrypt, encrypt
from privacy.queries import add_noise, from_limbs, phase_epsilons, to_limbs
from tests.analytics.conftest import EPSILON_LIMIT, QueryConsortium

pytestmark = pytest.mark.timeout(600)


def _nodes(consortium: QueryConsortium) -> list[NodeConfig]:
    return [NodeConfig.load(node_dir_for(consortium.state, h)) for h in consortium.hospitals]


def _spent(consortium: QueryConsortium) -> dict[str, float]:
    with open_ledger(state_dir=consortium.state, org="consortium") as ledger:
        return {
            h: float(ledger.evaluate("PrivacyBudgetContract:read_budget", msp_id_for(h), "HRESCH")["spent"])
            for h in consortium.hospitals
        }


def _registered(consortium: QueryConsortium, kind: str, **options: Any) -> QuerySpec:
    cohort = options.pop("cohort", ALIVE_COHORT)
    spec = build_query(kind, cohort, purpose="HRESCH", epsilon=options.pop("epsilon", 1.0), **options)
    register_query(consortium.state, spec, list(consortium.hospitals))
    return spec


def _run(consortium: QueryConsortium, spec: QuerySpec, seed: int = 0) -> dict[str, Any]:
    """All phases across the three hospitals; the aggregator's part is adding ciphertexts with the public context."""
    public = PublicContext.deserialize(public_context_path(consortium.state).read_bytes())
    nodes = _nodes(consortium)
    rngs = [np.random.default_rng([seed, i]) for i in range(len(nodes))]
    counted = [answer_query(n, QueryRequest(spec, PHASE_COUNT), rng) for n, rng in zip(nodes, rngs, strict=True)]
    count_sum = aggregate(public, [r["update"] for r in counted])
    stated = [
        answer_query(n, QueryRequest(spec, PHASE_STATISTIC, count_sum), rng) for n, rng in zip(nodes, rngs, strict=True)
    ]
    counts = json.loads(stated[0]["counts"])
    totals = None
    if all("update" in r for r in stated):
        statistic_sum = aggregate(public, [r["update"] for r in stated])
        decrypted = [answer_query(n, QueryRequest(spec, PHASE_DECRYPT, statistic_sum)) for n in nodes]
        totals = np.asarray(json.loads(decrypted[0]["totals"]))
    count_noise, statistic_noise = phase_noise(spec)
    result = summarise(spec, counts, totals, count_noise.sigma, statistic_noise.sigma, len(nodes))
    return {"result": result, "stated": stated, "counted": counted}


def test_count_is_within_its_stated_95_percent_interval_in_95_of_100_seeded_runs(
    synthea_queries: QueryConsortium,
) -> None:
    """Each hospital's exact count, noised for ε = 1, encrypted; the ciphertexts summed with the public context
    only; the total decrypted by a hospital. The stated interval must hold ≥ 95 of 100 times, and must not be
    loose: the errors' spread must match the stated noise (else a huge interval would pass)."""
    spec = build_query("count", ALIVE_COHORT, purpose="HRESCH", epsilon=1.0)
    public = PublicContext.deserialize(public_context_path(synthea_queries.state).read_bytes())
    nodes = _nodes(synthea_queries)
    exact_counts = [local_counts(spec, cohort_records(node, spec)) for node in nodes]
    exact = float(sum(c[0] for c in exact_counts))
    assert exact >= 200, "the acceptance cohort has at least 200 patients"
    secrets = [secret_context(node) for node in nodes]
    sigma = phase_noise(spec)[0].sigma
    errors = []
    for seed in range(100):
        sent = [
            encrypt(secret, to_limbs(add_noise(counts, sigma, np.random.default_rng([seed, i]))))
            for i, (secret, counts) in enumerate(zip(secrets, exact_counts, strict=True))
        ]
        total = from_limbs(decrypt(secrets[seed % 3], aggregate(public, sent)))
        result = summarise(spec, released_counts(spec, total), None, sigma, 0.0, len(nodes))
        stratum = result["strata"][0]
        errors.append((stratum["count"] - exact, stratum["count_ci95"]))
    covered = sum(abs(error) <= half_width for error, half_width in errors)
    assert covered >= 95, f"{covered} of 100 within the stated interval"
    spread = float(np.std([e for e, _ in errors]))
    assert spread == pytest.approx(sigma * math.sqrt(3), rel=0.2), "the noise is as large as stated, not smaller"


def test_a_mean_query_charges_each_hospital_exactly_its_epsilon(synthea_queries: QueryConsortium) -> None:
    spec = _registered(synthea_queries, "mean", cohort=ADULTS_COHORT, column="bmi")
    before = _spent(synthea_queries)
    outcome = _run(synthea_queries, spec)
    after = _spent(synthea_queries)
    count_eps, statistic_eps = phase_epsilons(*(p.noise_multiplier for p in phase_noise(spec)), spec.delta)
    with open_ledger(state_dir=synthea_queries.state, org="consortium") as ledger:
        charges = [
            c
            for c in ledger.evaluate("PrivacyBudgetContract:list_budget_charges", "", "HRESCH")
            if c["run_id"] == spec.query_id
        ]
    for hospital in synthea_queries.hospitals:
        mine = sorted((c["round"], c["epsilon"]) for c in charges if c["hospital"] == msp_id_for(hospital))
        assert mine == [(1, pytest.approx(count_eps)), (2, pytest.approx(statistic_eps))]
        assert after[hospital] - before[hospital] == pytest.approx(count_eps + statistic_eps, abs=1e-9)
    assert count_eps + statistic_eps <= spec.epsilon + 1e-9, "the two phases together spend at most the query's ε"
    stratum = outcome["result"]["strata"][0]
    exact = np.mean(np.concatenate([cohort_records(n, spec).features[:, 2] for n in _nodes(synthea_queries)]))
    assert abs(stratum["mean"] - exact) <= 3 * stratum["mean_ci95"], (stratum, exact)
    assert 12 <= stratum["mean"] <= 70


def test_a_cohort_below_the_minimum_is_suppressed_and_charges_only_the_count(
    synthea_queries: QueryConsortium,
) -> None:
    spec = _registered(synthea_queries, "histogram", column="age", min_count=100_000)
    before = _spent(synthea_queries)
    outcome = _run(synthea_queries, spec)
    after = _spent(synthea_queries)
    count_eps, _ = phase_epsilons(*(p.noise_multiplier for p in phase_noise(spec)), spec.delta)
    assert outcome["result"]["status"] == "suppressed"
    assert outcome["result"]["strata"] == [{"stratum": "all", "suppressed": True}], "no count is shown either"
    assert all(r["status"] == "suppressed" and "update" not in r for r in outcome["stated"])
    for hospital in synthea_queries.hospitals:
        assert after[hospital] - before[hospital] == pytest.approx(count_eps, abs=1e-9)


def test_stratified_histogram_and_table_add_up_to_the_cohort(synthea_queries: QueryConsortium) -> None:
    spec = _registered(synthea_queries, "table", column="age", bins="0,18,40,65,110", by="sex_female", epsilon=2.0)
    result = _run(synthea_queries, spec)["result"]
    assert [s["stratum"] for s in result["strata"]] == ["sex_female [0, 0.5)", "sex_female [0.5, 1]"]
    for stratum in result["strata"]:
        cells = sum(row["label_0"] + row["label_1"] for row in stratum["table"])
        # 8 noisy cells vs one noisy count: their difference is noise only (σ of the sum ≈ √8·σ_cell·√3).
        assert abs(cells - stratum["count"]) < 5 * math.sqrt(8 + 1) * stratum["cell_ci95"] / 1.96


def test_a_query_that_differs_from_the_registered_one_is_refused_before_anything_is_charged(
    synthea_queries: QueryConsortium,
) -> None:
    spec = _registered(synthea_queries, "count")
    before = _spent(synthea_queries)
    node = _nodes(synthea_queries)[0]
    widened = replace(spec, min_count=0)
    with pytest.raises(RoundDeclined, match="differs from the one registered"):
        answer_query(node, QueryRequest(widened, PHASE_COUNT))
    unregistered = replace(spec, query_id="query-never-registered")
    with pytest.raises(RoundDeclined, match="not registered"):
        answer_query(node, QueryRequest(unregistered, PHASE_COUNT))
    assert _spent(synthea_queries) == before


def test_moments_give_the_consortium_standardisation_for_a_model(synthea_queries: QueryConsortium) -> None:
    """One `moments` query: every column's mean and std across the hospitals (DP + HE, charged like any query);
    the model spec standardises with them instead of one hospital's statistics."""
    from federation.model_artifact import FeatureRange, ModelSpec

    spec = _registered(synthea_queries, "moments", cohort=ADULTS_COHORT, epsilon=3.0)
    assert spec.columns == ("age", "sex_female", "bmi") and spec.statistic_sensitivity == pytest.approx(6**0.5)
    before = _spent(synthea_queries)
    result = _run(synthea_queries, spec)["result"]
    moments = standardisation_from(spec, result)
    pooled = np.concatenate([cohort_records(n, spec).features for n in _nodes(synthea_queries)])
    for j, column in enumerate(spec.columns):
        low, high = spec.ranges[j]
        assert abs(moments[column][0] - pooled[:, j].mean()) < 0.1 * (high - low), (column, moments[column])
        assert abs(moments[column][1] - pooled[:, j].std()) < 0.15 * (high - low), (column, moments[column])
    spent = {h: _spent(synthea_queries)[h] - before[h] for h in synthea_queries.hospitals}
    assert all(e == pytest.approx(3.0, abs=0.02) for e in spent.values()), spent
    model = ModelSpec(tuple(FeatureRange(c, lo, hi) for c, (lo, hi) in zip(spec.columns, spec.ranges, strict=True)))
    standardised = model.with_standardisation(moments)
    assert standardised.sha256 != model.sha256, "the proposal's spec hash covers the agreed statistics"
    scaled = standardised.scale(pooled)
    assert np.all(np.abs(scaled.mean(axis=0)) < 0.5) and np.all(np.abs(scaled.std(axis=0) - 1) < 0.5)


def test_a_query_past_the_budget_is_declined_with_the_usual_message_and_charges_nothing(
    synthea_queries: QueryConsortium,
) -> None:
    with pytest.raises(QueryError, match=r"epsilon: must be in \(0, 20\]"):
        build_query("count", ALIVE_COHORT, purpose="HRESCH", epsilon=90.0)
    spec = _registered(synthea_queries, "count", epsilon=1.0)
    before = _spent(synthea_queries)
    with open_ledger(state_dir=synthea_queries.state, org="consortium") as ledger:
        limit = "PrivacyBudgetContract:set_budget_limit"
        ledger.submit(limit, "HospitalAMSP", "HRESCH", before["hospital-a"] + 0.5)
        try:
            with pytest.raises(RoundDeclined, match=r"privacy budget exhausted for hospital-a \(HRESCH\).*raise the"):
                answer_query(_nodes(synthea_queries)[0], QueryRequest(spec, PHASE_COUNT))
        finally:
            ledger.submit(limit, "HospitalAMSP", "HRESCH", EPSILON_LIMIT)
    assert _spent(synthea_queries) == before
