"""Pictures for the web pages, drawn from the ledger when asked (compliance/figures.py, as the demo's report).

The audit page shows the audit events over time with refusals marked, the hospital page the privacy budget
spent against each limit, the clinician's provenance panel the model's lineage graph. Each is a route like
any other: signed in, authorised by the access matrix, audited.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from api.core.problems import ProblemError
from api.deps import LedgerHubDep, purpose_of_use
from api.routes.models import ModelIdPath
from fabric_network.ledger import ContractRejected

router = APIRouter(tags=["pages"], include_in_schema=False)


def _drawn(name: str, media_type: str, draw: Callable[[Path], Path]) -> Response:
    """Draw into a private temporary file and answer its bytes (matplotlib writes files; pages need bytes)."""
    with tempfile.TemporaryDirectory(prefix="carefed-picture-") as scratch:
        return Response(draw(Path(scratch) / name).read_bytes(), media_type=media_type)


@router.get(
    "/ui/pictures/audit-activity.png", name="picture_audit_activity", dependencies=[Depends(purpose_of_use("HCOMPL"))]
)
def picture_audit_activity(hub: LedgerHubDep) -> Response:
    """Every audit event on the ledger over time, one row per action, refusals marked."""
    from compliance.figures import audit_activity
    from compliance.trail import audit_trail

    records, _ = audit_trail(hub.of("consortium"))
    return _drawn("audit.png", "image/png", lambda path: audit_activity(path, records))


@router.get("/ui/pictures/budgets.png", name="picture_budgets", dependencies=[Depends(purpose_of_use("HOPERAT"))])
def picture_budgets(hub: LedgerHubDep) -> Response:
    """ε spent against the ledger's limit, per hospital and purpose."""
    from compliance.figures import budget_bars

    budgets = {
        f"{b['hospital']} · {b['purpose']}": b
        for b in hub.of("consortium").evaluate("PrivacyBudgetContract:list_budgets")
    }
    return _drawn("budgets.png", "image/png", lambda path: budget_bars(path, budgets))


@router.get(
    "/ui/pictures/lineage/{model_id:path}", name="picture_lineage", dependencies=[Depends(purpose_of_use("TREAT"))]
)
def picture_lineage(hub: LedgerHubDep, model_id: ModelIdPath) -> Response:
    """A registered model's W3C PROV lineage as an SVG graph."""
    from compliance.figures import lineage_svg
    from compliance.lineage import lineage_prov

    try:
        record = hub.of("consortium").evaluate("LineageContract:get_model_lineage", model_id)
    except ContractRejected:
        raise ProblemError(404, "no such registered model", field="model_id", location="path") from None
    return _drawn("lineage.svg", "image/svg+xml", lambda path: lineage_svg(path, lineage_prov(record)))
