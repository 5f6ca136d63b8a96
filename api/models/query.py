"""Federated cohort queries as researchers ask for them and read them back (docs/analytics.md)."""

from typing import Any

from pydantic import BaseModel, Field

from carefed.options import QueryKind


class QueryCreate(BaseModel):
    """A query over one of the consortium's published cohorts (`GET /queries/cohorts`)."""

    kind: QueryKind
    cohort: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="A published cohort's name.")
    column: str = Field(default="", max_length=64, description="The variable (not for count): a cohort column.")
    bins: str = Field(default="10", max_length=200, description="Equal-width bins (a number) or edges a,b,c.")
    by: str = Field(default="", max_length=200, description="Stratify: COLUMN or COLUMN:edge,edge,…")
    epsilon: float = Field(default=1.0, gt=0, le=10, description="ε each hospital spends on this query.")
    min_count: int = Field(default=10, ge=0, le=1_000_000, description="Suppress noisy counts below this.")
    purpose: str = Field(default="HRESCH", pattern=r"^[A-Z]{3,10}$", description="Purpose of use (ActReason).")


class QueryStatus(BaseModel):
    """A query's state: queued (not yet on the ledger), registered (running), answered, suppressed or failed."""

    query_id: str
    status: str
    kind: str | None = None
    purpose: str | None = None
    epsilon: float | None = None
    registered_at: str | None = None
    result_sha256: str | None = None
    result: dict[str, Any] | None = None
    epsilon_charged: dict[str, float] | None = None
    events: list[str] = Field(default_factory=list)
