"""Federated cohort queries for researchers: ask, list, read (docs/analytics.md).

A query runs at the consortium as `carefed query` does (api.core.queries); the service answers at once with the
query's id (202) and the researcher reads its state back: from the ledger (registered, answered, suppressed,
failed; who asked, ε, the result's hash) and, once answered, the released statistic from the aggregator's
results file. Researchers see only released, noisy, consortium-wide statistics, never a patient-level record.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool

from api.core.ledger import LedgerHub
from api.core.problems import PROBLEM_RESPONSES, ProblemError
from api.core.queries import launch_query, local_outcome, published_cohorts
from api.deps import CurrentUser, LedgerHubDep, SettingsDep
from api.models.query import QueryCreate, QueryStatus
from fabric_network.identities import CONSORTIUM_ORG
from fabric_network.ledger import LedgerError

router = APIRouter(prefix="/queries", tags=["queries"], responses=PROBLEM_RESPONSES)

QueryIdPath = Annotated[str, Path(pattern=r"^query-[0-9a-f]{32}$", description="The query's id on the ledger.")]


def query_status(hub: LedgerHub, state_dir: Any, query_id: str) -> QueryStatus:
    """A query's state from the ledger, completed by the consortium's results file when there is one."""
    try:
        record: dict[str, Any] | None = hub.of(CONSORTIUM_ORG).evaluate("AnalyticsContract:read_query", query_id)
    except LedgerError:
        record = None
    local = local_outcome(state_dir, query_id)
    if record is None and local is None:
        raise ProblemError(404, "no such query", field="query_id", location="path")
    status = QueryStatus(query_id=query_id, status=(record or local or {})["status"])
    if record is not None:
        status.kind, status.purpose, status.epsilon = record["kind"], record["purpose"], record["epsilon"]
        status.registered_at, status.result_sha256 = record["registered_at"], record.get("result_sha256")
    if local is not None:
        status.result = local.get("result") or None
        status.epsilon_charged = local.get("epsilon_charged")
        status.events = list(local.get("events", []))
        if record is None or local.get("status") == "failed":
            status.status = local["status"]
    return status


@router.get("/cohorts", name="list_cohorts")
def list_cohorts(settings: SettingsDep) -> list[str]:
    """The cohorts the consortium published for queries (schema files in `<state_dir>/cohorts/`)."""
    return published_cohorts(settings.state_dir)


@router.post("", name="submit_query", status_code=202)
async def submit_query(request: Request, settings: SettingsDep, user: CurrentUser, body: QueryCreate) -> QueryStatus:
    """Ask a federated query; it is registered on the ledger and runs in the background (poll `read_query`)."""
    query_id = await run_in_threadpool(launch_query, settings.state_dir, body, f"user-{user.id}")
    request.state.audit_object = f"query:{query_id}"
    return QueryStatus(query_id=query_id, status="queued", kind=body.kind.value, purpose=body.purpose)


@router.get("", name="list_queries")
def list_queries(hub: LedgerHubDep) -> list[QueryStatus]:
    """Every query on the ledger, newest registration last, without results (read one for its result)."""
    records = hub.of(CONSORTIUM_ORG).evaluate("AnalyticsContract:list_queries")
    return [
        QueryStatus(
            query_id=r["query_id"],
            status=r["status"],
            kind=r["kind"],
            purpose=r["purpose"],
            epsilon=r["epsilon"],
            registered_at=r["registered_at"],
            result_sha256=r.get("result_sha256"),
        )
        for r in sorted(records, key=lambda r: r["registered_at"])
    ]


@router.get("/{query_id}", name="read_query")
def read_query(request: Request, settings: SettingsDep, hub: LedgerHubDep, query_id: QueryIdPath) -> QueryStatus:
    """One query: its state on the ledger and, once answered, the released statistic with its noise intervals."""
    request.state.audit_object = f"query:{query_id}"
    return query_status(hub, settings.state_dir, query_id)
