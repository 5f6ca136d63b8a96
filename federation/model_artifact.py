"""The consortium's model: its specification (features, declared ranges, architecture) and its artefact bytes.

Every hospital decrypts the same aggregate and must arrive at the very same artefact, byte for byte, so that the
SHA-256 each of them reports, the one the lineage records and the name in the model registry are one value.
Hence a canonical encoding: a JSON header with sorted keys, a newline, then the parameters as little-endian
float32. Features are scaled by the ranges the consortium declares in the schema (public knowledge, the same at
every hospital), not by statistics of any hospital's patients, which would leak into the model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

ARTIFACT_FORMAT = "carefed-model/1"


@dataclass(frozen=True)
class FeatureRange:
    """A feature and the range the consortium declared for it."""

    name: str
    min: float
    max: float
    unit: str | None = None  # as the hospitals' schema declares it; shown to clinicians beside the range


@dataclass(frozen=True)
class ModelSpec:
    """What every hospital builds: the same features in the same order, the same network, the same start."""

    features: tuple[FeatureRange, ...]
    hidden: tuple[int, ...] = ()  # () = logistic regression
    seed: int = 0
    # (mean, std) per feature agreed across hospitals by a federated DP query (docs/analytics.md); () = scale by
    # the declared ranges. Part of the spec, so the run proposal every hospital approves names the statistics.
    standardisation: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if not self.features:
            raise ValueError("model spec: at least one feature is needed")
        for feature in self.features:
            if not feature.max > feature.min:
                raise ValueError(
                    f"model spec: feature {feature.name!r} needs max > min, got [{feature.min}, {feature.max}]"
                )
        if self.standardisation and (
            len(self.standardisation) != len(self.features) or not all(std > 0 for _, std in self.standardisation)
        ):
            raise ValueError("model spec: standardisation needs one (mean, std > 0) per feature")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_json(self) -> str:
        return json.dumps(
            {
                # [name, min, max] (+ unit when declared, so artefacts without units keep their bytes and hash)
                "features": [[f.name, f.min, f.max, *([f.unit] if f.unit else [])] for f in self.features],
                "hidden": list(self.hidden),
                "seed": self.seed,
                # only when set, so specs scaled by their ranges keep their bytes and hashes
                **({"standardisation": [list(pair) for pair in self.standardisation]} if self.standardisation else {}),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @property
    def sha256(self) -> str:
        """The spec's fingerprint: a run proposal's `schema_sha256`, which every hospital checks before training."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        raw = json.loads(text)
        return cls(
            features=tuple(
                FeatureRange(str(n), float(lo), float(hi), str(rest[0]) if rest else None)
                for n, lo, hi, *rest in raw["features"]
            ),
            hidden=tuple(int(h) for h in raw.get("hidden", [])),
            seed=int(raw.get("seed", 0)),
            standardisation=tuple((float(m), float(sd)) for m, sd in raw.get("standardisation", [])),
        )

    def scale(self, features: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Standardise with the consortium's agreed (mean, std), or map each declared range onto [0, 1]."""
        x = np.asarray(features, dtype=np.float64)
        if self.standardisation:
            centres = np.array([mean for mean, _ in self.standardisation])
            spans = np.array([std for _, std in self.standardisation])
        else:
            centres = np.array([f.min for f in self.features])
            spans = np.array([f.max - f.min for f in self.features])
        scaled: npt.NDArray[np.float32] = ((x - centres) / spans).astype(np.float32)
        return scaled

    def with_standardisation(self, moments: dict[str, tuple[float, float]]) -> ModelSpec:
        """This spec standardised with per-feature (mean, std), e.g. a federated `moments` query's result."""
        missing = [f.name for f in self.features if f.name not in moments]
        if missing:
            raise ValueError(f"standardisation: no moments for {missing}")
        return replace(self, standardisation=tuple(moments[f.name] for f in self.features))

    def build(self) -> Any:
        """The initial network every hospital starts from (same seed → same weights everywhere)."""
        from privacy.model import demo_mlp

        return demo_mlp(len(self.features), self.hidden, seed=self.seed)


@dataclass(frozen=True)
class ModelArtifact:
    """A trained global model as published: spec, provenance (run, round) and parameters."""

    spec: ModelSpec
    run_id: str
    round: int
    parameters: npt.NDArray[np.float32]

    def to_bytes(self) -> bytes:
        header = {
            "format": ARTIFACT_FORMAT,
            "spec": json.loads(self.spec.to_json()),
            "run_id": self.run_id,
            "round": self.round,
            "parameters": int(self.parameters.size),
        }
        body = np.asarray(self.parameters, dtype="<f4").tobytes()
        return json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + body

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelArtifact:
        head, sep, body = data.partition(b"\n")
        if not sep:
            raise ValueError("model artefact: no header line")
        header = json.loads(head)
        if header.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"model artefact: format {header.get('format')!r}, expected {ARTIFACT_FORMAT!r}")
        parameters = np.frombuffer(body, dtype="<f4")
        if parameters.size != header["parameters"]:
            raise ValueError(f"model artefact: {parameters.size} parameters, header says {header['parameters']}")
        return cls(
            spec=ModelSpec.from_json(json.dumps(header["spec"])),
            run_id=str(header["run_id"]),
            round=int(header["round"]),
            parameters=parameters.astype(np.float32),
        )

    @classmethod
    def from_vector(cls, spec: ModelSpec, run_id: str, round_number: int, vector: npt.ArrayLike) -> ModelArtifact:
        return cls(spec, run_id, round_number, np.asarray(vector, dtype=np.float32))

    def model(self) -> Any:
        """The torch module with these parameters."""
        from privacy.model import load_parameters

        module = self.spec.build()
        load_parameters(module, self.parameters.astype(np.float64))
        return module

    def predict_proba(self, raw_features: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Risk scores for unscaled feature rows (in the spec's feature order)."""
        from privacy.model import predict_proba

        return predict_proba(self.model(), self.spec.scale(raw_features))
