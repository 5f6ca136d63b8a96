"""Hospital nodes known to the service, with what they last reported and the rounds the ledger records."""

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from api.models.user import HOSPITAL_PATTERN


class NodeState(StrEnum):
    """What a node says it is doing, from its last heartbeat."""

    registered = "registered"
    idle = "idle"
    training = "training"
    failed = "failed"
    stopped = "stopped"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class NodeBase(SQLModel):
    name: str = Field(min_length=1, max_length=64, regex=r"^[a-z0-9][a-z0-9-]*$", description="e.g. `node-1`.")
    hospital: str = Field(max_length=63, regex=HOSPITAL_PATTERN, index=True)


class Node(NodeBase, table=True):
    __table_args__ = (UniqueConstraint("hospital", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    state: NodeState = NodeState.registered
    software_version: str | None = Field(default=None, max_length=64)
    registered_at: datetime = Field(default_factory=_utcnow)
    last_heartbeat_at: datetime | None = None


class NodeCreate(NodeBase):
    pass


class NodeHeartbeat(SQLModel):
    state: NodeState
    software_version: str | None = Field(default=None, max_length=64, regex=r"^[A-Za-z0-9.+_-]+$")


class RoundSummary(BaseModel):
    """One training round the node's hospital took part in, as the ledger's lineage records it."""

    run_id: str
    round: int
    epsilon_spent: float | None = None
    consent_snapshot_root: str | None = None
    recorded_at: datetime | None = None


class NodePublic(NodeBase):
    id: int
    state: NodeState
    software_version: str | None
    registered_at: datetime
    last_heartbeat_at: datetime | None
    last_rounds: list[RoundSummary] = []
