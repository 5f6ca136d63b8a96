"""Feature standardisation the hospitals agree on before training: a federated `moments` query (DP + HE, charged).

Scaling by the declared ranges is free but crude when a range is wide for the population (BMI 12-70); one
hospital's own mean and std would leak its patients into the model and fit the others badly. A moments query
releases every feature's consortium-wide mean and std with noise for `epsilon` (charged to each hospital's
budget like any query, docs/analytics.md); the model spec carries them, so the run proposal every hospital
approves names the statistics, and every hospital scales alike.
"""

from __future__ import annotations

from pathlib import Path

from federation.analytics import standardisation_from
from federation.model_artifact import ModelSpec
from harness.local_consortium import LocalConsortium
from hospital_node.analytics import build_query


def agree_standardisation(
    consortium: LocalConsortium, schema: Path, spec: ModelSpec, epsilon: float, purpose: str
) -> tuple[ModelSpec, dict[str, object]]:
    """The spec standardised by a federated moments query over the training schema's cohort; and the query's
    results (for the report)."""
    query = build_query("moments", schema, purpose=purpose, epsilon=epsilon, requester="consortium", role="service")
    if query.columns != spec.feature_names:
        raise ValueError(f"standardisation: the schema's columns {query.columns} differ from the model's")
    results = consortium.query(query)
    if results["status"] != "answered":
        raise ValueError(f"standardisation query {query.query_id} ended {results['status']}: {results['events']}")
    return spec.with_standardisation(standardisation_from(query, results["result"])), results
