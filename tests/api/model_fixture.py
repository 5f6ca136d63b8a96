"""A real registered model for the API tests, made the way a training run makes one.

Hospital A records consents and takes a consent snapshot; the consortium registers a run, records a round
naming that snapshot, and registers the model artefact through the consortium's model registry. The model is a
logistic regression fitted on five features of scikit-learn's breast-cancer data, so its scores mean something.
"""

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from fabric_network.contracts.common import opaque_id
from fabric_network.ledger import open_ledger
from federation.model_artifact import FeatureRange, ModelArtifact, ModelSpec
from federation.registry import ModelRegistry
from tests.contracts.conftest import start_run, vouch

FEATURES = ("mean radius", "mean texture", "mean perimeter", "mean area", "mean smoothness")
# The Wisconsin data are measurements on digitised images of a fine-needle aspirate: lengths and areas in pixels,
# texture a grey-level standard deviation, smoothness a ratio.
UNITS = ("px", "grey level", "px", "px²", None)
REGISTRY_DIR = "registry"


@dataclass(frozen=True)
class RegisteredModel:
    model_id: str
    sha256: str
    run_id: str
    snapshot_root: str
    feature_names: tuple[str, ...]
    benign_example: dict[str, float]
    malignant_example: dict[str, float]


def _spec_and_data() -> tuple[ModelSpec, np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    columns = [list(data.feature_names).index(name) for name in FEATURES]
    x = data.data[:, columns]
    spec = ModelSpec(
        features=tuple(
            FeatureRange(name.replace(" ", "_"), float(np.floor(lo * 0.9)), float(np.ceil(hi * 1.1)), unit)
            for name, lo, hi, unit in zip(FEATURES, x.min(axis=0), x.max(axis=0), UNITS, strict=True)
        )
    )
    # sklearn's target: 0 = malignant, 1 = benign; the model scores malignancy.
    return spec, x, 1 - data.target


def register_model(state_dir: Path, hospital: str = "hospital-a") -> RegisteredModel:
    """Train, record the lineage on the ledger and register the artefact; returns what the tests need."""
    spec, x, y = _spec_and_data()
    fitted = LogisticRegression(max_iter=2000).fit(spec.scale(x), y)
    run_id, snapshot_id = opaque_id("run"), opaque_id("snapshot")
    model_id = f"{run_id}/model"  # the federated run's naming
    with open_ledger(state_dir=state_dir, org=hospital) as ledger:
        for _ in range(3):
            ledger.submit(
                "ConsentContract:record_consent",
                secrets.token_hex(32),
                "HRESCH",
                "research",
                "2026-01-01T00:00:00Z",
                "",
            )
        snapshot = ledger.submit("ConsentContract:create_consent_snapshot", snapshot_id, "HRESCH", "").result
        msp = snapshot["hospital"]
    artifact = ModelArtifact.from_vector(spec, run_id, 1, np.concatenate([fitted.coef_[0], fitted.intercept_]))
    run_spec = {
        "purpose": "HRESCH",
        "hospitals": [msp],
        "dp": {"epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 1.0, "accountant": "rdp"},
        "he": {"scheme": "ckks", "poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [40, 40], "global_scale_bits": 30},
        "code_version": "0.1.0",
    }
    with (
        open_ledger(state_dir=state_dir, org="consortium") as ledger,
        open_ledger(state_dir=state_dir, org=hospital) as hospital_ledger,
    ):
        if msp not in ledger.evaluate("GovernanceContract:read_members")["hospitals"]:
            ledger.submit("GovernanceContract:init_members", [msp])
        ledger.submit("PrivacyBudgetContract:set_budget_limit", msp, "HRESCH", 100)
        start_run(ledger, run_id, run_spec, {hospital_ledger: "approve"})
        participant = vouch(hospital_ledger, run_id, 1, snapshot, "ab" * 32, epsilon=1.25)
        round_record = {
            "round": 1,
            "participants": [{**participant, "num_examples": len(y)}],
            "model_sha256": artifact.sha256,
            "metrics": {"auc": 0.95},
        }
        ledger.submit("LineageContract:record_round", run_id, json.dumps(round_record))
        registry = ModelRegistry(state_dir / REGISTRY_DIR)
        record = registry.model_record(artifact, registry.store(artifact.to_bytes()), "breast-cancer", {"auc": 0.95})
        ledger.submit("LineageContract:register_model", model_id, json.dumps(record))
    names = spec.feature_names
    probabilities = fitted.predict_proba(spec.scale(x))[:, 1]
    return RegisteredModel(
        model_id=model_id,
        sha256=artifact.sha256,
        run_id=run_id,
        snapshot_root=snapshot["root"],
        feature_names=names,
        benign_example=dict(zip(names, map(float, x[int(np.argmin(probabilities))]), strict=True)),
        malignant_example=dict(zip(names, map(float, x[int(np.argmax(probabilities))]), strict=True)),
    )
