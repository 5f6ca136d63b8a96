"""The audit trail for compliance officers: events from the ledger's AuditContract, filtered and paginated.

The ledger holds opaque actor ids (`user-<id>`); the service adds the user name it knows for each, so the
trail stays free of personal data while the officer still reads names.
"""

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlmodel import col, select

from api.core.problems import PROBLEM_RESPONSES, ProblemError
from api.deps import LedgerHubDep, PageDep, SessionDep, purpose_of_use
from api.models.common import Page
from api.models.user import User
from fabric_network.contracts.audit import OUTCOMES
from fabric_network.identities import CONSORTIUM_ORG

router = APIRouter(
    prefix="/audit", tags=["audit"], responses=PROBLEM_RESPONSES, dependencies=[Depends(purpose_of_use("HCOMPL"))]
)
MAX_EVENTS_PER_QUERY = 10_000
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # nothing CareFed audits is older, and the ledger's
LATEST = dt.datetime(
    9998, 12, 31, tzinfo=dt.UTC
)  # time format has four-digit years  # the AuditContract's own bound on one query
ACTION_PATTERN = r"^[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31}){0,3}$"
OBJECT_PATTERN = r"^[a-z][a-z0-9_]{0,31}:[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
ACTOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"


class AuditEventPublic(BaseModel):
    """One audit event as the ledger committed it, plus the actor's user name where the service knows it."""

    time: str
    organisation: str
    actor: str
    actor_name: str | None
    role: str
    action: str
    object: str
    outcome: str
    purpose: str
    tx_id: str


class AuditFilters(BaseModel):
    actor: str | None = None
    action: str | None = None
    object: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    refused_only: bool = False


def audit_filters(
    actor: Annotated[
        str | None, Query(max_length=128, pattern=ACTOR_PATTERN, description="`user-<id>`, a user name or `anonymous`.")
    ] = None,
    action: Annotated[str | None, Query(pattern=ACTION_PATTERN, description="e.g. `api.predict`.")] = None,
    object: Annotated[str | None, Query(pattern=OBJECT_PATTERN, description="e.g. `model:<id>/sha256:<hash>`.")] = None,
    outcome: Annotated[str | None, Query(pattern="^(" + "|".join(OUTCOMES) + ")$")] = None,
    since: Annotated[dt.datetime | None, Query(description="From this time on (ISO 8601 with zone).")] = None,
    until: Annotated[dt.datetime | None, Query(description="Before this time (ISO 8601 with zone).")] = None,
    refused_only: Annotated[bool, Query(description="Only requests the access matrix refused.")] = False,
) -> AuditFilters:
    for name, moment in (("since", since), ("until", until)):
        if moment is None:
            continue
        if moment.tzinfo is None:
            raise ProblemError(422, "needs a time zone, e.g. 2026-01-31T00:00:00Z", field=name, location="query")
        if not EARLIEST <= moment <= LATEST:
            raise ProblemError(422, "must be between 1970 and 9998", field=name, location="query")
    if since and until and until <= since:
        raise ProblemError(422, "must be later than since", field="until", location="query")
    return AuditFilters(
        actor=actor, action=action, object=object, outcome=outcome, since=since, until=until, refused_only=refused_only
    )


AuditFiltersDep = Annotated[AuditFilters, Depends(audit_filters)]


def _ledger_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def query_events(session: SessionDep, hub: LedgerHubDep, filters: AuditFilters) -> tuple[list[AuditEventPublic], bool]:
    """Matching events, newest first, and whether the ledger's per-query bound cut the oldest off."""
    users = {f"user-{u.id}": u.username for u in session.exec(select(User).order_by(col(User.id))).all()}
    query: dict[str, Any] = {"limit": MAX_EVENTS_PER_QUERY}
    if filters.actor:
        by_name = {name: actor for actor, name in users.items()}
        query["actor"] = by_name.get(filters.actor, filters.actor)
    for name in ("action", "object"):
        if getattr(filters, name):
            query[name] = getattr(filters, name)
    if filters.since:
        query["from"] = _ledger_time(filters.since)
    if filters.until:
        query["to"] = _ledger_time(filters.until)
    records = hub.of(CONSORTIUM_ORG).evaluate("AuditContract:query_audit", query)
    truncated = len(records) >= MAX_EVENTS_PER_QUERY
    events = [
        AuditEventPublic(
            actor_name=users.get(r["actor"]), **{k: r[k] for k in AuditEventPublic.model_fields if k != "actor_name"}
        )
        for r in reversed(records)
        if (filters.outcome is None or r["outcome"] == filters.outcome)
        and (not filters.refused_only or r["action"].endswith(".refused"))
    ]
    return events, truncated


class AuditPage(Page[AuditEventPublic]):
    truncated: bool = False


@router.get("/events", name="query_audit_events")
def query_audit_events(session: SessionDep, hub: LedgerHubDep, page: PageDep, filters: AuditFiltersDep) -> AuditPage:
    """Audit events by actor, action, object, outcome and time range, newest first.

    One query reads at most 10,000 events from the ledger; `truncated` says the oldest were cut off, in which
    case narrow the time range.
    """
    events, truncated = query_events(session, hub, filters)
    window = events[page.offset : page.offset + page.limit]
    return AuditPage(items=window, total=len(events), offset=page.offset, limit=page.limit, truncated=truncated)
