"""The content-addressed model registry: artefacts named by their SHA-256, registered on the ledger.

Loading checks twice: the file's bytes must hash to its name, and that hash must be the one the ledger
registered for the model id (`LineageContract:register_model`, queued by the aggregator with `model_record`).
An edited artefact therefore fails to load even if someone renamed it to its new hash: the ledger still holds
the original. Files are written once (temp file + rename) and made read-only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fabric_network.ledger import Ledger, LedgerError
from federation.model_artifact import ModelArtifact

ARTIFACT_SUFFIX = ".model"


class TamperedModelError(ValueError):
    """A model artefact's bytes do not match the hash the ledger registered; it is refused."""


class ModelRegistry:
    """Artefacts under `<state-dir>/registry/<sha256>.model`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, sha256: str) -> Path:
        return self.root / f"{sha256}{ARTIFACT_SUFFIX}"

    def store(self, artifact_bytes: bytes) -> str:
        """Store an artefact under its SHA-256 (idempotent) and return the hash."""
        digest = hashlib.sha256(artifact_bytes).hexdigest()
        path = self.path_of(digest)
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(artifact_bytes)
            tmp.chmod(0o444)
            tmp.replace(path)
        return digest

    @staticmethod
    def model_record(artifact: ModelArtifact, digest: str, name: str, metrics: dict[str, float]) -> dict[str, Any]:
        """The LineageContract `register_model` argument for a stored artefact."""
        return {
            "run_id": artifact.run_id,
            "round": artifact.round,
            "sha256": digest,
            "name": name,
            "version": f"r{artifact.round}",
            "metrics": metrics,
        }

    def load(self, ledger: Ledger, model_id: str) -> ModelArtifact:
        """Load a registered model, refusing it unless its bytes hash to what the ledger registered."""
        try:
            registered = ledger.evaluate("LineageContract:read_model", model_id)
        except LedgerError as exc:
            raise TamperedModelError(f"model {model_id!r} is not registered on the ledger: {exc}") from exc
        expected = str(registered["sha256"])
        path = self.path_of(expected)
        if not path.exists():
            raise TamperedModelError(f"model {model_id!r}: artefact {path.name} is missing from the registry")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise TamperedModelError(
                f"model {model_id!r}: artefact {path} hashes to {actual}, but the ledger registered {expected}; "
                "the file was altered — refusing to load it"
            )
        return ModelArtifact.from_bytes(data)
