"""The content-addressed model registry: artefacts named by their SHA-256, registered on the ledger.

Both sides keep one: the consortium's (`<state-dir>/registry/`, written by the aggregator when it registers a
final model) and each hospital's copy (`<node>/registry/`, the artefacts replicated to it; federation/layout.py).
Loading checks twice: the file's bytes must hash to its name, and that hash must be the one the ledger registered
for the model id (`LineageContract:register_model`, queued by the aggregator with `model_record`). An edited
artefact therefore fails to load even if someone renamed it to its new hash: the ledger still holds the original.
Files are written once (temp file, fsync, rename) and made read-only.

This package does not read the ledger (docs/architecture.md): the caller looks the model up
(`LineageContract:read_model`) and passes the hash the ledger registered, or None when it registered none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.files import write_durably
from federation.model_artifact import ModelArtifact

ARTIFACT_SUFFIX = ".model"


class TamperedModelError(ValueError):
    """A model artefact is refused: missing, altered, or not the one the ledger registered for the model."""


class MissingArtifactError(TamperedModelError):
    """The registry holds no artefact with the registered hash (e.g. a hospital the model was not replicated to)."""


@dataclass(frozen=True)
class StoredArtifact:
    """A file of the registry: the hash its name claims and the hash of its bytes."""

    path: Path
    sha256: str
    actual_sha256: str

    @property
    def intact(self) -> bool:
        return self.sha256 == self.actual_sha256


class ModelRegistry:
    """Artefacts under `<root>/<sha256>.model`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, sha256: str) -> Path:
        return self.root / f"{sha256}{ARTIFACT_SUFFIX}"

    def store(self, artifact_bytes: bytes) -> str:
        """Store an artefact under its SHA-256 and return the hash; an intact copy is kept, an altered one replaced."""
        digest = hashlib.sha256(artifact_bytes).hexdigest()
        path = self.path_of(digest)
        if path.exists() and _sha256_of(path) == digest:
            return digest
        self.root.mkdir(parents=True, exist_ok=True)
        write_durably(path, artifact_bytes)
        path.chmod(0o444)
        return digest

    def stored(self) -> list[StoredArtifact]:
        """Every artefact file of the registry, by name, with the hash of its bytes."""
        if not self.root.is_dir():
            return []
        return [
            StoredArtifact(path, path.name.removesuffix(ARTIFACT_SUFFIX), _sha256_of(path))
            for path in sorted(self.root.glob(f"*{ARTIFACT_SUFFIX}"))
        ]

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

    def load(self, model_id: str, registered_sha256: str | None) -> ModelArtifact:
        """Load a registered model, refusing it unless its bytes hash to what the ledger registered.

        `registered_sha256` is the hash of the ledger's `register_model` record for `model_id` (None: none).
        """
        if registered_sha256 is None:
            raise TamperedModelError(f"model {model_id!r} is not registered on the ledger")
        path = self.path_of(registered_sha256)
        if not path.exists():
            raise MissingArtifactError(f"model {model_id!r}: artefact {path.name} is not in the registry {self.root}")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != registered_sha256:
            raise TamperedModelError(
                f"model {model_id!r}: artefact {path} hashes to {actual}, but the ledger registered "
                f"{registered_sha256}; the file was altered — refusing to load it"
            )
        return ModelArtifact.from_bytes(data)


def _sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
