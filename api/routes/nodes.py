"""Hospital nodes: registration, heartbeats, and the training rounds their hospital took part in (from the ledger).

Hospital IT sees and manages its own hospital's nodes; the consortium admin sees every node. What a node did
in training is not taken from the node's word but from the ledger's lineage: the rounds of every run that
produced a registered model, with the ε the hospital spent and the consent snapshot it trained on.
"""

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from api.core.ledger import LedgerHub, hospital_msp
from api.core.problems import PROBLEM_RESPONSES, ProblemError
from api.deps import CurrentUser, LedgerHubDep, PageDep, SessionDep
from api.models.common import Page
from api.models.node import Node, NodeCreate, NodeHeartbeat, NodePublic, RoundSummary
from api.models.user import Role, User

router = APIRouter(prefix="/nodes", tags=["nodes"], responses=PROBLEM_RESPONSES)
LAST_ROUNDS = 5
NodeIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="The node's id.")]


def rounds_by_hospital(hub: LedgerHub) -> dict[str, list[RoundSummary]]:
    """Every recorded round per participating hospital (MSP id), newest first, from the consortium's lineage."""
    ledger = hub.of("consortium")
    run_ids = sorted({model["run_id"] for model in ledger.evaluate("LineageContract:list_models")})
    by_hospital: dict[str, list[RoundSummary]] = {}
    for run_id in run_ids:
        for round_record in ledger.evaluate("LineageContract:list_rounds", run_id):
            for participant in round_record["participants"]:
                by_hospital.setdefault(participant["hospital"], []).append(
                    RoundSummary(
                        run_id=run_id,
                        round=round_record["round"],
                        epsilon_spent=participant["epsilon_spent"],
                        consent_snapshot_root=participant["consent_snapshot_root"],
                        recorded_at=round_record["recorded_at"],
                    )
                )
    for rounds in by_hospital.values():
        rounds.sort(key=lambda r: r.recorded_at or dt.datetime.min.replace(tzinfo=dt.UTC), reverse=True)
    return by_hospital


def node_public(node: Node, rounds: dict[str, list[RoundSummary]]) -> NodePublic:
    return NodePublic.model_validate(
        node, update={"last_rounds": rounds.get(hospital_msp(node.hospital), [])[:LAST_ROUNDS]}
    )


def _visible(user: User) -> Any:
    """The nodes a user may see: all for the consortium admin, their hospital's for hospital IT."""
    if user.role is Role.consortium_admin:
        return True
    return col(Node.hospital) == user.hospital


def _node_for(session: Session, user: User, node_id: int) -> Node:
    node = session.get(Node, node_id)
    if node is None:
        raise ProblemError(404, "no such node", field="node_id", location="path")
    if user.role is not Role.consortium_admin and node.hospital != user.hospital:
        raise ProblemError(403, "this node belongs to another hospital", field="node_id", location="path")
    return node


def visible_nodes(session: Session, user: User, offset: int, limit: int) -> list[Node]:
    """A page of the nodes the user may see, by hospital and name."""
    query = select(Node).where(_visible(user)).order_by(col(Node.hospital), col(Node.name))
    return list(session.exec(query.offset(offset).limit(limit)).all())


@router.get("", name="list_nodes")
def list_nodes(session: SessionDep, user: CurrentUser, hub: LedgerHubDep, page: PageDep) -> Page[NodePublic]:
    """The nodes the user may see, with their last reported state and their hospital's last rounds."""
    total = session.exec(select(func.count()).select_from(Node).where(_visible(user))).one()
    nodes = visible_nodes(session, user, page.offset, page.limit)
    rounds = rounds_by_hospital(hub) if nodes else {}
    return Page(items=[node_public(n, rounds) for n in nodes], total=total, offset=page.offset, limit=page.limit)


@router.post("", name="register_node", status_code=201)
def register_node(session: SessionDep, user: CurrentUser, node_in: NodeCreate) -> NodePublic:
    """Register a node of the user's hospital (the admin may register any hospital's)."""
    if user.role is not Role.consortium_admin and node_in.hospital != user.hospital:
        raise ProblemError(403, "hospital IT registers nodes of its own hospital only", field="hospital")
    node = Node.model_validate(node_in)
    session.add(node)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ProblemError(409, "this hospital has a node of that name already", field="name") from None
    session.refresh(node)
    return node_public(node, {})


@router.get("/{node_id}", name="read_node")
def read_node(session: SessionDep, user: CurrentUser, hub: LedgerHubDep, node_id: NodeIdPath) -> NodePublic:
    """One node with its hospital's last rounds."""
    return node_public(_node_for(session, user, node_id), rounds_by_hospital(hub))


@router.put("/{node_id}/heartbeat", name="report_node_heartbeat")
def report_node_heartbeat(
    session: SessionDep, user: CurrentUser, node_id: NodeIdPath, heartbeat: NodeHeartbeat
) -> NodePublic:
    """A node (through its hospital's IT account) reports what it is doing."""
    node = _node_for(session, user, node_id)
    node.state = heartbeat.state
    node.software_version = heartbeat.software_version
    node.last_heartbeat_at = dt.datetime.now(dt.UTC)
    session.add(node)
    session.commit()
    session.refresh(node)
    return node_public(node, {})
