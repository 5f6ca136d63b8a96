"""The consortium's part of the CKKS key, and the guard that keeps secret keys out of the aggregator's process.

A hospital draws the key and seals it to the others (hospital_node/he_keys.py, federation/key_transport.py); the
consortium relays the sealed bundles and keeps only the public context — parameters and key id, no key — once the
ledger confirms it (`install_public_context`). The aggregator's process additionally installs
`forbid_secret_reads` before it does anything else: a Python audit hook that refuses to open any hospital
directory or any secret-context file. It records both what it opened under the state directory and every
attempt it refused, so a run can show that the aggregator not only read no secret key but never tried to (a
refusal alone would hide an attempt that some fallback then survived).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.key_transport import PUBLIC_CONTEXT_NAME
from federation.layout import SECRET_CONTEXT_NAME, keys_dir_for

if TYPE_CHECKING:
    from fabric_network.ledger import Ledger


def public_context_path(state_dir: Path) -> Path:
    return state_dir / "consortium" / "he" / PUBLIC_CONTEXT_NAME


def secret_context_path(state_dir: Path, hospital: str) -> Path:
    return keys_dir_for(state_dir, hospital) / SECRET_CONTEXT_NAME


def install_public_context(state_dir: Path, outbox: Path, ledger: Ledger) -> Path:
    """Take the public context and manifest from a creating hospital's outbox into the aggregator's directory.

    Refused unless it is a public context (no secret key) and the ledger's record of its key id, written by the
    hospital named as creator, has this public context's SHA-256: the consortium aggregates only under a key the
    hospitals recorded. The sealed bundles beside them are relayed, never read here.
    """
    from fabric_network.identities import msp_id_for
    from federation.key_transport import MANIFEST_NAME, PUBLIC_CONTEXT_NAME, KeyTransportError, sha256_hex
    from privacy.he import SecretContext, load_context

    public_bytes = (outbox / PUBLIC_CONTEXT_NAME).read_bytes()
    manifest = json.loads((outbox / MANIFEST_NAME).read_text(encoding="utf-8"))
    if isinstance(load_context(public_bytes), SecretContext):
        raise KeyTransportError(
            f"{outbox / PUBLIC_CONTEXT_NAME}: holds a secret key; the consortium must never receive one: delete it "
            "and ask the creating hospital for its public context"
        )
    record = ledger.evaluate("GovernanceContract:read_he_key", manifest["key_id"])
    if record["creator"] != msp_id_for(manifest["creator"]):
        raise KeyTransportError(f"creator: key {manifest['key_id']} was recorded by {record['creator']}")
    if (
        sha256_hex(public_bytes) != record["public_context_sha256"]
        or manifest["public_context_sha256"] != (record["public_context_sha256"])
    ):
        raise KeyTransportError(
            f"public_context_sha256: {PUBLIC_CONTEXT_NAME} is not key {manifest['key_id']}'s public context on the "
            "ledger; ask the creating hospital for its outbox again"
        )
    path = public_context_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(public_bytes)
    (path.parent / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return path


def he_parameters(state_dir: Path) -> dict[str, Any]:
    """The HE parameters of the installed key (for the run's lineage)."""
    manifest = json.loads((public_context_path(state_dir).parent / "ceremony.json").read_text(encoding="utf-8"))
    return dict(manifest["parameters"])


class SecretKeyAccessDenied(PermissionError):
    """The aggregator tried to open a hospital's directory or a secret context."""


@dataclass
class KeyGuard:
    """What the aggregator's guard saw: files opened under the state dir, and refused attempts at key material."""

    opened: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)


def forbid_secret_reads(state_dir: Path) -> KeyGuard:
    """Install the aggregator's guard; the returned record grows as the process opens files."""
    state = os.path.realpath(state_dir)
    nodes = os.path.realpath(state_dir / "nodes")
    guard = KeyGuard()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or not args or not isinstance(args[0], str | bytes | Path):
            return
        raw = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        path = os.path.realpath(raw) if raw else raw
        if path.startswith(nodes) or path.endswith(SECRET_CONTEXT_NAME):
            guard.denied.append(path)
            raise SecretKeyAccessDenied(f"the aggregator may not read hospital key material: {path}")
        if path.startswith(state):
            guard.opened.append(path)

    sys.addaudithook(hook)
    return guard
