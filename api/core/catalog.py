"""Registered models as the service serves them: model cards from the ledger's lineage, and loaded predictors.

The artefacts come from a content-addressed model registry (federation/registry.py), which refuses any file
whose bytes differ from the hash the ledger registered: the consortium's (`<state>/registry`), or, when the
service runs for a hospital (`CAREFED_API_HOSPITAL`), that hospital's own copy
(`<state>/nodes/<hospital>/registry`, replicated to it after each run), read on the ledger as that hospital.
A loaded model is kept per (model id, hash), so a prediction costs a forward pass, not a file read and a hash;
the ledger is asked for the registered hash on every prediction, so a model is served only while the ledger
still vouches for that exact artefact.
"""

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from api.core.ledger import LedgerHub
from api.core.problems import ProblemError
from api.models.common import FieldError
from api.models.model import ConsentSnapshotRef, ContributorCredit, FeatureCard, ModelCard, PrivacyGuarantee
from compliance.credit import credit
from fabric_network.identities import CONSORTIUM_ORG
from fabric_network.ledger import ContractRejected
from federation.layout import consortium_registry_dir, node_dir_for, node_registry_dir
from federation.model_artifact import ModelArtifact
from federation.registry import MissingArtifactError, ModelRegistry, TamperedModelError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predictor:
    """A registered model ready to score: its artefact (spec, provenance) and the built network."""

    sha256: str
    artifact: ModelArtifact
    network: Any

    def risk_score(self, features: dict[str, float]) -> float:
        """The positive-class probability for one patient, features in the spec's order."""
        from privacy.model import predict_proba

        row = np.array([[features[name] for name in self.artifact.spec.feature_names]])
        return float(predict_proba(self.network, self.artifact.spec.scale(row))[0])


def check_features(predictor: Predictor, features: dict[str, float]) -> None:
    """Every feature present, known and within its declared range; every problem named at once."""
    errors = []
    for feature in predictor.artifact.spec.features:
        field = f"features.{feature.name}"
        if feature.name not in features:
            errors.append(
                FieldError(field=field, location="body", message=f"required, in [{feature.min}, {feature.max}]")
            )
        elif not np.isfinite(value := features[feature.name]) or not feature.min <= value <= feature.max:
            errors.append(
                FieldError(field=field, location="body", message=f"must be within [{feature.min}, {feature.max}]")
            )
    known = set(predictor.artifact.spec.feature_names)
    errors += [
        FieldError(field=f"features.{name}", location="body", message="not a feature of this model")
        for name in sorted(set(features) - known)
    ]
    if errors:
        raise ProblemError.invalid(errors)


class ModelCatalog:
    """Model cards and predictors of the models registered on the ledger.

    `hospital`: the service runs for that hospital, so models load from its registry copy and the ledger is
    read with its identity; None: the consortium's registry and identity.
    """

    def __init__(self, hub: LedgerHub, state_dir: Path, hospital: str | None = None) -> None:
        self._hub = hub
        self._org = hospital or CONSORTIUM_ORG
        root = node_registry_dir(node_dir_for(state_dir, hospital)) if hospital else consortium_registry_dir(state_dir)
        self._registry = ModelRegistry(root)
        self._loaded: dict[tuple[str, str], tuple[ModelCard, Predictor]] = {}
        self._registered: dict[str, str] = {}  # model id → the hash the ledger registered for it
        self._lock = threading.Lock()

    def preload(self) -> None:
        """Load every registered model now (torch's import and the artefact checks take seconds), so that the
        first prediction is as fast as the others. Runs in the background at start-up; failures only log."""
        for model_id in self.model_ids():
            try:
                self.card(model_id)
            except ProblemError as problem:
                logger.warning("model %s not preloaded: %s", model_id, problem.detail)

    def model_ids(self) -> list[str]:
        """Every registered model id, in the ledger's order."""
        return [m["model_id"] for m in self._hub.of(self._org).evaluate("LineageContract:list_models")]

    def _evaluate(self, function: str, model_id: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self._hub.of(self._org).evaluate(function, model_id)
        except ContractRejected:
            raise ProblemError(404, "no such registered model", field="model_id", location="path") from None
        return result

    def card(self, model_id: str) -> tuple[ModelCard, Predictor]:
        """The card and predictor of a registered model.

        The ledger is read once per model: the LineageContract registers a model id only once and never
        changes it, so its hash, lineage and artefact (checked against that hash by the registry) stay in
        memory and a prediction costs no ledger read.
        """
        loaded = self.cached(model_id)
        if loaded is not None:
            return loaded
        sha256 = self._evaluate("LineageContract:read_model", model_id)["sha256"]
        lineage = self._evaluate("LineageContract:get_model_lineage", model_id)
        try:
            artifact = self._registry.load(model_id, sha256)
        except TamperedModelError as error:
            detail = f"the model artefact is refused: {error}"
            if isinstance(error, MissingArtifactError) and self._org != CONSORTIUM_ORG:
                detail = (
                    f"{self._org} holds no copy of this model ({error}); the consortium replicates a model to the "
                    f"hospitals connected when its run ends (`carefed node models --hospital {self._org}` lists them)"
                )
            raise ProblemError(409, detail, field="model_id", location="path") from None
        import torch

        # One patient per call from many request threads: torch's intra-op thread pool would only make the
        # threads fight over the cores.
        torch.set_num_threads(1)
        loaded = model_card(lineage, artifact), Predictor(sha256=sha256, artifact=artifact, network=artifact.model())
        with self._lock:
            self._loaded[(model_id, sha256)] = loaded
            self._registered[model_id] = sha256
        return loaded

    def cached(self, model_id: str) -> tuple[ModelCard, Predictor] | None:
        """The card and predictor if this model is loaded already (no I/O: callable from the event loop)."""
        with self._lock:
            sha256 = self._registered.get(model_id)
            return None if sha256 is None else self._loaded.get((model_id, sha256))


def model_card(lineage: dict[str, Any], artifact: ModelArtifact) -> ModelCard:
    """The card of a model from its ledger lineage (model, run, rounds up to the model's) and its artefact."""
    model, run, rounds = lineage["model"], lineage["run"], lineage["rounds"]
    spent: dict[str, float] = {}
    snapshots = []
    for round_record in rounds:
        for participant in round_record["participants"]:
            hospital = participant["hospital"]
            # Each round records the ε the round added (the accountant's increment), so the sum is the spend.
            spent[hospital] = spent.get(hospital, 0.0) + float(participant["epsilon_spent"])
            snapshots.append(
                ConsentSnapshotRef(
                    hospital=hospital,
                    round=round_record["round"],
                    snapshot_id=participant["consent_snapshot_id"],
                    root=participant["consent_snapshot_root"],
                )
            )
    dp = run["dp"]
    return ModelCard(
        model_id=model["model_id"],
        name=model.get("name"),
        version=model.get("version"),
        sha256=model["sha256"],
        registered_at=model["registered_at"],
        run_id=model["run_id"],
        round=model["round"],
        purpose=run["purpose"],
        code_version=run["code_version"],
        data_sites=sorted(spent),
        consent_snapshots=snapshots,
        privacy=PrivacyGuarantee(
            epsilon=dp["epsilon"],
            delta=dp["delta"],
            epsilon_spent={hospital: round(value, 6) for hospital, value in sorted(spent.items())},
            accountant=dp.get("accountant"),
            noise_multiplier=dp.get("noise_multiplier"),
            max_grad_norm=dp.get("max_grad_norm"),
        ),
        homomorphic_encryption=run["he"],
        metrics=model.get("metrics", {}),
        features=[FeatureCard(name=f.name, unit=f.unit, min=f.min, max=f.max) for f in artifact.spec.features],
        credit=[ContributorCredit(**row) for row in credit(lineage)],
    )
