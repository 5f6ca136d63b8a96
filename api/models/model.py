"""Schemas of registered diagnostic models: the model card, prediction requests and answers."""

from typing import Any

from pydantic import BaseModel, Field


class FeatureCard(BaseModel):
    """One model input: its name, unit and the range the consortium declared (inputs outside it are refused)."""

    name: str
    unit: str | None = None
    min: float
    max: float


class ConsentSnapshotRef(BaseModel):
    """The consent state a hospital trained on in one round: the snapshot id and its RFC 9162 Merkle root."""

    hospital: str
    round: int
    snapshot_id: str
    root: str


class PrivacyGuarantee(BaseModel):
    """The differential-privacy guarantee of the model, per hospital, as the training run declared and spent it."""

    mechanism: str = "DP-SGD (Opacus), record-level, per hospital"
    epsilon: float = Field(description="The ε each hospital's budget bounded this run to.")
    delta: float
    epsilon_spent: dict[str, float] = Field(description="ε each hospital had spent by the model's round.")
    accountant: str | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float | None = None


class ContributorCredit(BaseModel):
    """What one hospital contributed to the model (docs/governance.md says what each score reveals)."""

    hospital: str
    rounds: int = Field(description="Rounds of the model the hospital took part in.")
    examples: int = Field(description="Largest consent snapshot it trained on.")
    example_rounds: int = Field(description="Examples summed over its rounds.")
    epsilon: float = Field(description="ε it spent on the model's rounds.")
    data_share: float = Field(description="Share of all example-rounds: the Shapley value of the weighted average.")
    gain_share: float = Field(description="Per-round global AUC gain split by data share, summed.")
    own_improvement: float | None = Field(description="Global model's AUC change on its own held-out data.")


class ModelCard(BaseModel):
    """A registered model version and its provenance, built from the ledger's lineage of the model."""

    model_id: str
    name: str | None
    version: str | None
    sha256: str = Field(description="SHA-256 of the model artefact, as registered on the ledger.")
    registered_at: str
    run_id: str
    round: int
    purpose: str
    code_version: str
    data_sites: list[str] = Field(description="Hospitals (MSP ids) whose patients the model was trained on.")
    consent_snapshots: list[ConsentSnapshotRef]
    privacy: PrivacyGuarantee
    homomorphic_encryption: dict[str, Any] = Field(description="HE parameters of the aggregation.")
    metrics: dict[str, float]
    features: list[FeatureCard]
    credit: list[ContributorCredit] = Field(description="Per-hospital contributor credit, from the ledger.")


class PredictRequest(BaseModel):
    """A patient's features, by feature name, in the units of the model card."""

    features: dict[str, float] = Field(
        description="Every feature of the model card, by name, within its declared range.",
        examples=[{"radius_mean": 14.1, "texture_mean": 19.3}],
    )


class Prediction(BaseModel):
    """A risk score and what it rests on."""

    model_id: str
    model_version: str | None
    model_sha256: str
    risk_score: float = Field(ge=0, le=1, description="Probability of the positive class (malignant).")
    privacy: PrivacyGuarantee
    run_id: str
    round: int
    data_sites: list[str]
