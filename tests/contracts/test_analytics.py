"""AnalyticsContract through the Ledger interface: who may register a query, what it must name, one outcome."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from fabric_network.ledger import Ledger
from tests.contracts.conftest import new_id

REGISTER = "AnalyticsContract:register_query"
RECORD = "AnalyticsContract:record_query_result"


def _query(governed: list[str], **changes: Any) -> dict[str, Any]:
    return {
        "requester": "user-7f3a",
        "role": "researcher",
        "purpose": "HRESCH",
        "kind": "histogram",
        "query_sha256": hashlib.sha256(b"a cohort and its bins").hexdigest(),
        "epsilon": 1.0,
        "delta": 1e-5,
        "min_count": 10,
        "hospitals": governed,
        **changes,
    }


def test_a_query_is_registered_once_and_its_outcome_recorded_once(
    consortium: Ledger, hospital_a: Ledger, governed: list[str], refused: Callable[..., str]
) -> None:
    query_id = new_id("query")
    registered = consortium.submit(REGISTER, query_id, _query(governed)).result
    assert registered["status"] == "registered" and registered["requester"] == "user-7f3a"
    assert "registered already" in refused(consortium, REGISTER, query_id, _query(governed))
    result = {"outcome": "answered", "result_sha256": "ab" * 32, "participants": governed[:2]}
    recorded = consortium.submit(RECORD, query_id, result).result
    assert (recorded["status"], recorded["result_sha256"], recorded["participants"]) == (
        "answered",
        "ab" * 32,
        governed[:2],
    )
    assert "recorded already" in refused(consortium, RECORD, query_id, {**result, "outcome": "failed"})
    assert hospital_a.evaluate("AnalyticsContract:read_query", query_id)["status"] == "answered"
    assert query_id in {q["query_id"] for q in hospital_a.evaluate("AnalyticsContract:list_queries")}


def test_only_the_consortium_registers_and_records(
    consortium: Ledger, hospital_a: Ledger, governed: list[str], refused: Callable[..., str]
) -> None:
    query_id = new_id("query")
    assert "ConsortiumMSP" in refused(hospital_a, REGISTER, query_id, _query(governed))
    consortium.submit(REGISTER, query_id, _query(governed))
    result = {"outcome": "suppressed", "result_sha256": "", "participants": governed}
    assert "ConsortiumMSP" in refused(hospital_a, RECORD, query_id, result)


def test_bad_queries_are_refused_naming_the_field(
    consortium: Ledger, governed: list[str], refused: Callable[..., str]
) -> None:
    query_id = new_id("query")
    assert "query.kind" in refused(consortium, REGISTER, query_id, _query(governed, kind="everything"))
    assert "query.epsilon" in refused(consortium, REGISTER, query_id, _query(governed, epsilon=0))
    assert "query.hospitals" in refused(consortium, REGISTER, query_id, _query(governed, hospitals=["StrangerMSP"]))
    assert "query.requester" in refused(consortium, REGISTER, query_id, _query(governed, requester="jane@x.org"))
    consortium.submit(REGISTER, query_id, _query(governed))
    assert "result_sha256" in refused(
        consortium, RECORD, query_id, {"outcome": "answered", "result_sha256": "", "participants": governed}
    )
    assert "result.participants" in refused(
        consortium, RECORD, query_id, {"outcome": "failed", "result_sha256": "", "participants": ["OtherMSP"]}
    )
    assert "no such query" in refused(
        consortium, RECORD, new_id("query"), {"outcome": "failed", "result_sha256": "", "participants": []}
    )
