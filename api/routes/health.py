"""Liveness: the service answers and its database is reachable."""

from fastapi import APIRouter
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
