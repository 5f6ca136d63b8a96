"""Liveness (the service answers and its database is reachable) and Prometheus metrics for the operator."""

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from api.deps import SessionDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/health", name="health")
def health(session: SessionDep) -> Health:
    """`ok` when the database answers a trivial query."""
    session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    return Health(status="ok")


@router.get("/metrics", name="metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format: requests and latency by route, the audit outboxes' depth and oldest age."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
