"""Registered diagnostic models: their cards (provenance from the ledger) and predictions for clinicians."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool

from api.core.catalog import ModelCatalog, check_features
from api.core.problems import PROBLEM_RESPONSES
from api.deps import CatalogDep, PageDep, purpose_of_use
from api.models.common import Page
from api.models.model import ModelCard, Prediction, PredictRequest

router = APIRouter(prefix="/models", tags=["models"], responses=PROBLEM_RESPONSES)

MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"  # the ledger's record ids (`<run id>/model`)
ModelIdPath = Annotated[str, Path(pattern=MODEL_ID_PATTERN, description="The model's id on the ledger.")]


def audit_model(request: Request, model_id: str, sha256: str) -> None:
    """The audit object of a model request: its id and the exact artefact hash used."""
    request.state.audit_object = f"model:{model_id}/sha256:{sha256}"


@router.get("", name="list_models")
def list_models(catalog: CatalogDep, page: PageDep) -> Page[ModelCard]:
    """Every registered model with its model card."""
    model_ids = catalog.model_ids()
    cards = [catalog.card(model_id)[0] for model_id in model_ids[page.offset : page.offset + page.limit]]
    return Page(items=cards, total=len(model_ids), offset=page.offset, limit=page.limit)


@router.get("/{model_id:path}", name="read_model")
def read_model(request: Request, catalog: CatalogDep, model_id: ModelIdPath) -> ModelCard:
    """One model's card: data sites, consent snapshot roots, ε and δ, HE parameters, metrics, hash, inputs."""
    card, _ = catalog.card(model_id)
    audit_model(request, model_id, card.sha256)
    return card


def predict_for(request: Request, catalog: ModelCatalog, model_id: str, features: dict[str, float]) -> Prediction:
    """Score one patient with a registered model; the audit event names the model's hash, never the features."""
    card, predictor = catalog.card(model_id)
    audit_model(request, model_id, card.sha256)
    check_features(predictor, features)
    return Prediction(
        model_id=model_id,
        model_version=card.version,
        model_sha256=card.sha256,
        risk_score=predictor.risk_score(features),
        privacy=card.privacy,
        run_id=card.run_id,
        round=card.round,
        data_sites=card.data_sites,
    )


@router.post("/{model_id:path}/predict", name="predict", dependencies=[Depends(purpose_of_use("TREAT"))])
async def predict(request: Request, catalog: CatalogDep, model_id: ModelIdPath, body: PredictRequest) -> Prediction:
    """A patient's risk score from a registered model, with the model's version, hash and privacy guarantee."""
    # The hot path runs on the event loop: a loaded model scores one row in well under a millisecond, less than
    # a hop to the threadpool costs. Only loading a model (ledger reads, artefact check) goes to a thread.
    if catalog.cached(model_id) is None:
        await run_in_threadpool(catalog.card, model_id)
    return predict_for(request, catalog, model_id, body.features)
