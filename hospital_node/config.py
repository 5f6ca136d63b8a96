"""A hospital node's configuration file and the layout of its state directory.

One node = one directory, `<state-dir>/nodes/<hospital>/`, owned by the hospital:

    node.toml           this configuration (written by `carefed node init`)
    pseudonyms.sqlite   MRN → pseudonym table (never leaves the node)
    keys/               he-secret.ctx + he-key.json (the consortium's CKKS key, hospital_node/he_keys.py),
                        he-transport key pair (receives that key sealed), supernode-auth key pair
    dp/<run-id>.json    the DP noise history of each run (the accountant's memory between rounds)
    registry/           the hospital's copy of the model registry: <sha256>.model, each checked against the ledger

The Flower ClientApp runs as a fresh process per message, so everything it needs is read from here by path;
the SuperNode passes only `hospital` and `node-dir` in its node config.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import tomli_w
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from federation.layout import SECRET_CONTEXT_NAME, node_registry_dir

if TYPE_CHECKING:
    from fabric_network.ledger import Ledger

NODE_CONFIG_FILE = "node.toml"
DEFAULT_PURPOSE = "HRESCH"


class NodeConfigError(ValueError):
    """The node's configuration is missing or invalid; the message names the field and the fix."""


class NodeConfig(BaseSettings):
    """What a hospital node needs to know. Values from `node.toml`; `CAREFED_NODE_*` fills what it leaves out."""

    model_config = SettingsConfigDict(env_prefix="CAREFED_NODE_", extra="forbid")

    hospital: str = Field(min_length=1, description="the hospital's org name on the ledger, e.g. hospital-a")
    node_dir: Path
    data: Path = Field(description="training data: CSV or FHIR R4 Bundle (.json)")
    schema_path: Path = Field(description="schema TOML declaring MRN, label and feature columns")
    eval_data: Path | None = Field(default=None, description="held-out data to evaluate global models locally")
    drop_bad_rows: bool = False
    purpose: str = DEFAULT_PURPOSE
    superlink: str = "127.0.0.1:8000"
    root_certificates: Path | None = Field(default=None, description="CA certificate of the SuperLink (TLS)")
    insecure: bool = False
    ledger_backend: Literal["embedded", "fabric"] = "embedded"
    ledger_state_dir: Path = Field(description="state directory holding the ledger identities (and embedded ledger)")

    @property
    def pseudonym_table(self) -> Path:
        return self.node_dir / "pseudonyms.sqlite"

    @property
    def keys_dir(self) -> Path:
        return self.node_dir / "keys"

    @property
    def he_secret_context(self) -> Path:
        return self.keys_dir / SECRET_CONTEXT_NAME

    @property
    def supernode_auth_key(self) -> Path:
        return self.keys_dir / "supernode-auth"

    @property
    def registry_dir(self) -> Path:
        """The hospital's copy of the model registry (artefacts replicated to it, hospital_node/replicas.py)."""
        return node_registry_dir(self.node_dir)

    @classmethod
    def load(cls, node_dir: Path) -> NodeConfig:
        """Read `node.toml` of a node directory; errors name the field to fix."""
        path = node_dir / NODE_CONFIG_FILE
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise NodeConfigError(f"{path} does not exist: run `carefed node init` first") from exc
        except tomllib.TOMLDecodeError as exc:
            raise NodeConfigError(f"{path} is not valid TOML: {exc}") from exc
        try:
            return cls(**{**raw, "node_dir": node_dir})
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise NodeConfigError(f"{path}: {reasons}") from exc

    def save(self) -> Path:
        """Write `node.toml` (absolute paths, no secrets: keys stay in files beside it)."""
        self.node_dir.mkdir(parents=True, exist_ok=True)
        values = self.model_dump(mode="json", exclude={"node_dir"}, exclude_none=True)
        path = self.node_dir / NODE_CONFIG_FILE
        path.write_text(tomli_w.dumps(values), encoding="utf-8")
        return path


def open_node_ledger(node: NodeConfig) -> Ledger:
    """The ledger as the hospital's client identity sees it."""
    from fabric_network.ledger import open_ledger

    return open_ledger(backend=node.ledger_backend, state_dir=node.ledger_state_dir, org=node.hospital)
