"""Where things live in a CareFed state directory: the one place both sides take the paths they share from.

A hospital's node keeps its state (configuration, pseudonym table, its CKKS secret context, its copy of the model
registry) under ``<state-dir>/nodes/<hospital>``; on one machine the harness (playing each hospital in the key
ceremony) writes there, across hosts only the hospital does.
"""

from __future__ import annotations

from pathlib import Path

#: A hospital's CKKS secret context in its key directory (the aggregator's guard refuses any file of this name).
SECRET_CONTEXT_NAME = "he-secret.ctx"
#: The content-addressed model registry's directory: the consortium's under the state directory, each hospital's
#: copy under its node directory (federation/registry.py).
REGISTRY_DIR = "registry"


def node_dir_for(state_dir: Path, hospital: str) -> Path:
    """Where a hospital's node keeps its state under a CareFed state directory."""
    return state_dir / "nodes" / hospital


def consortium_registry_dir(state_dir: Path) -> Path:
    """The consortium's model registry: where the aggregator stores each final model it registers."""
    return state_dir / REGISTRY_DIR


def node_registry_dir(node_dir: Path) -> Path:
    """A hospital's own copy of the registry: the artefacts replicated to it, each verified against the ledger."""
    return node_dir / REGISTRY_DIR


def keys_dir_for(state_dir: Path, hospital: str) -> Path:
    """A hospital's key directory (mode 0700): its CKKS secret context and its transport and SuperNode key pairs."""
    return node_dir_for(state_dir, hospital) / "keys"
