"""Federated queries through Flower on the one-machine consortium: SuperLink, SuperNodes, node workers, ServerApp.

The aggregator process adds ciphertexts only: its key guard (the same as for training) records every file it
opens under the state dir and refuses hospital key material; the results must show it read the public context and
nothing else of the keys. The ledger must hold the query's outcome, its participants and the result's hash, and
an audit event naming the requester.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from consortium.keys import public_context_path
from fabric_network.identities import msp_id_for
from fabric_network.ledger import open_ledger
from federation.analytics import result_sha256
from federation.layout import node_dir_for
from harness.analytics_data import ADULTS_COHORT, ALIVE_COHORT
from harness.local_consortium import LocalConsortium
from harness.query import plot_result, result_table
from hospital_node.analytics import build_query, cohort_records
from hospital_node.config import NodeConfig
from tests.analytics.conftest import QueryConsortium

# Starting three node workers (torch, Opacus, TenSEAL) and Flower on a loaded 2-core machine takes minutes.
pytestmark = pytest.mark.timeout(900)
HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]


@pytest.fixture(scope="module")
def running(synthea_queries: QueryConsortium) -> Iterator[LocalConsortium]:
    with LocalConsortium(synthea_queries.state, list(synthea_queries.hospitals)) as consortium:
        consortium.start()
        yield consortium


@pytest.fixture(scope="module")
def answered(running: LocalConsortium) -> dict[str, Any]:
    spec = build_query("stddev", ADULTS_COHORT, column="bmi", by="sex_female", purpose="HRESCH", epsilon=2.0)
    return running.query(spec)


def test_a_stratified_stddev_query_is_answered_within_its_intervals(
    answered: dict[str, Any], synthea_queries: QueryConsortium
) -> None:
    assert answered["status"] == "answered", answered["events"]
    assert answered["participants"] == HOSPITALS
    strata = answered["result"]["strata"]
    assert [s["stratum"] for s in strata] == ["sex_female [0, 0.5)", "sex_female [0.5, 1]"]
    spec = build_query("stddev", ADULTS_COHORT, column="bmi", purpose="HRESCH", epsilon=2.0)
    pooled = np.concatenate(
        [cohort_records(NodeConfig.load(node_dir_for(synthea_queries.state, h)), spec).features for h in HOSPITALS]
    )
    for female, stratum in enumerate(strata):
        exact = pooled[pooled[:, 1] == female, 2]
        assert abs(stratum["count"] - len(exact)) <= 3 * stratum["count_ci95"]
        assert abs(stratum["mean"] - exact.mean()) <= 3 * stratum["mean_ci95"], (stratum, exact.mean())
        assert stratum["stddev"] >= 0
    assert set(answered["epsilon_charged"]) == set(HOSPITALS)
    assert all(e == pytest.approx(2.0, abs=0.01) for e in answered["epsilon_charged"].values())


def test_the_aggregator_read_the_public_context_and_no_key_material(
    answered: dict[str, Any], synthea_queries: QueryConsortium
) -> None:
    assert answered["aggregator_denied"] == []
    opened = answered["aggregator_opened"]
    assert str(public_context_path(synthea_queries.state).resolve()) in opened, "the guard was recording"
    nodes = str(node_dir_for(synthea_queries.state, "x").parent.resolve())
    assert not [p for p in opened if p.startswith(nodes) or p.endswith("he-secret.ctx")]


def test_the_ledger_holds_the_outcome_the_result_hash_and_the_requester(
    answered: dict[str, Any], synthea_queries: QueryConsortium
) -> None:
    query_id = answered["query_id"]
    with open_ledger(state_dir=synthea_queries.state, org="hospital-a") as ledger:
        record = ledger.evaluate("AnalyticsContract:read_query", query_id)
        events = ledger.evaluate("AuditContract:query_audit", json.dumps({"object": f"query:{query_id}"}))
    assert record["status"] == "answered"
    assert record["result_sha256"] == result_sha256(answered["result"]) == answered["result_sha256"]
    assert record["participants"] == [msp_id_for(h) for h in synthea_queries.hospitals]
    assert [(e["actor"], e["role"], e["action"], e["purpose"]) for e in events] == [
        ("researcher", "researcher", "query.release", "HRESCH")
    ]


def test_a_suppressed_query_through_flower_releases_nothing(running: LocalConsortium) -> None:
    spec = build_query("mean", ALIVE_COHORT, column="age", min_count=10_000, purpose="HRESCH", epsilon=0.5)
    results = running.query(spec)
    assert results["status"] == "suppressed"
    assert results["result"]["strata"] == [{"stratum": "all", "suppressed": True}]
    with open_ledger(state_dir=running.state_dir, org="consortium") as ledger:
        assert ledger.evaluate("AnalyticsContract:read_query", spec.query_id)["status"] == "suppressed"


def test_the_result_is_shown_as_a_table_and_a_picture(answered: dict[str, Any], tmp_path: Path) -> None:
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(result_table(answered))
    text = console.export_text()
    assert "sex_female [0.5, 1]" in text and "stddev" in text and "answered" in text
    picture = plot_result(answered, tmp_path / "q.png")
    assert picture is not None and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compliance_reports_show_the_query_its_charges_and_the_release(
    answered: dict[str, Any], synthea_queries: QueryConsortium
) -> None:
    from compliance.reports import disclosures_report, privacy_budget_report

    with open_ledger(state_dir=synthea_queries.state, org="consortium") as ledger:
        budget = privacy_budget_report(ledger, recompute=True)
        disclosures = disclosures_report(ledger)
    query = next(q for q in budget["queries"] if q["query_id"] == answered["query_id"])
    assert (query["status"], query["requester"], query["kind"]) == ("answered", "researcher", "stddev")
    assert query["charged"] == {msp_id_for(h): pytest.approx(e) for h, e in answered["epsilon_charged"].items()}
    assert budget["recompute_summary"]["understated"] == 0, "each phase's ε is what the contract recomputes"
    released = [d for d in disclosures["disclosures"] if d["description"].startswith("query.release of query:")]
    assert f"query.release of query:{answered['query_id']} (success)" in [d["description"] for d in released]


def test_the_consortium_agrees_on_standardisation_through_flower(running: LocalConsortium) -> None:
    from federation.model_artifact import FeatureRange, ModelSpec
    from harness.standardisation import agree_standardisation

    spec = ModelSpec((FeatureRange("age", 18, 90), FeatureRange("sex_female", 0, 1), FeatureRange("bmi", 12, 70)))
    standardised, results = agree_standardisation(running, ADULTS_COHORT, spec, epsilon=2.0, purpose="HRESCH")
    assert results["status"] == "answered" and results["aggregator_denied"] == []
    (age_mean, age_std), (female_mean, _), (bmi_mean, bmi_std) = standardised.standardisation
    assert 30 < age_mean < 70 and 5 < age_std < 36
    assert 0 < female_mean < 1
    assert 15 < bmi_mean < 45 and bmi_std >= 0.05 * (70 - 12)
    assert standardised.sha256 != spec.sha256
