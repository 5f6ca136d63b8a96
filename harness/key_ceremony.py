"""The CKKS key ceremony on one machine: every organisation's role of the key protocol, played in turn.

The same steps as across hosts (docs/federated.md, "The HE key"), with the relay in memory: each hospital draws
its transport key pair in its own key directory; the first hospital draws the CKKS key, records it on the ledger
and seals it to the others; each other hospital checks its own bundle against the ledger, opens it and records
its acceptance; the consortium takes only the public context and the manifest, once the ledger confirms them.
Nothing writes one organisation's private key into another's directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consortium.keys import install_public_context
from fabric_network.contracts.common import opaque_id
from fabric_network.ledger import open_ledger
from federation.key_transport import load_public_key
from federation.layout import keys_dir_for, node_dir_for
from hospital_node.he_keys import accept_key, create_key, ensure_transport_key


@dataclass(frozen=True)
class CeremonyResult:
    """What `carefed keys ceremony` reports: the key, where the aggregator's and each hospital's context went."""

    key_id: str
    public_context: Path
    secret_contexts: dict[str, Path]
    fingerprint: str
    parameters: dict[str, Any]


def run_ceremony(state_dir: Path, hospitals: list[str], backend: str = "embedded") -> CeremonyResult:
    """A new consortium key (rotation = run it again: a new key id) for ``hospitals`` under ``state_dir``."""
    if not hospitals:
        raise ValueError("--hospitals: name at least one hospital")
    creator, *others = hospitals
    published = {name: ensure_transport_key(keys_dir_for(state_dir, name)) for name in hospitals}
    recipients = {name: load_public_key(published[name].read_bytes(), str(published[name])) for name in others}
    key_id = opaque_id("he")
    outbox = node_dir_for(state_dir, creator) / "he-outbox" / key_id
    with open_ledger(backend=backend, state_dir=state_dir, org=creator) as ledger:
        created = create_key(
            ledger, keys_dir_for(state_dir, creator), creator, key_id, recipients, outbox, replace=True
        )
    secrets = {creator: created.secret_context}
    for name in others:
        with open_ledger(backend=backend, state_dir=state_dir, org=name) as ledger:
            bundle = created.sealed[name].read_bytes()
            secrets[name] = accept_key(ledger, keys_dir_for(state_dir, name), name, bundle, replace=True)
    with open_ledger(backend=backend, state_dir=state_dir, org="consortium") as ledger:
        public = install_public_context(state_dir, outbox, ledger)
    return CeremonyResult(
        key_id, public, secrets, created.manifest["fingerprint"], dict(created.manifest["parameters"])
    )
