"""The hospital's side of the shared CKKS key: its transport key pair, drawing a key and sealing it to the other
hospitals, and accepting a key sealed to it (federation/key_transport.py has the protocol).

Every file written here is the hospital's own: its transport private key, its secret context, and an outbox of
what it may hand to the consortium (the public context, a manifest, one sealed bundle per recipient). No function
writes another organisation's private key. The ledger carries the trust the relay cannot: the creating hospital
records the key under its own identity before anything leaves it, and a recipient installs a bundle only if that
record names the bundle's sender, the recipient and the public context's hash, then records its acceptance.

Files in a hospital's ``keys/`` (mode 0700, private files 0600): ``he-transport.key`` / ``he-transport.pub``
(X25519, PEM), ``he-secret.ctx`` (the CKKS secret context) and ``he-key.json`` (which key that is).
An outbox holds ``public.ctx``, ``ceremony.json`` and ``<recipient>.sealed``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from fabric_network.identities import msp_id_for
from fabric_network.ledger import Ledger, LedgerError
from federation.key_transport import (
    MANIFEST_NAME,
    PUBLIC_CONTEXT_NAME,
    SEALED_SUFFIX,
    KeyTransportError,
    SealedKey,
    ceremony_parameters,
    check_key_id,
    load_private_key,
    new_transport_key,
    open_sealed,
    private_key_pem,
    public_key_pem,
    seal,
    sha256_hex,
)
from federation.layout import SECRET_CONTEXT_NAME

TRANSPORT_KEY_NAME = "he-transport.key"
TRANSPORT_PUBLIC_NAME = "he-transport.pub"
INSTALLED_KEY_NAME = "he-key.json"


def _write_private(path: Path, data: bytes) -> None:
    """Write a private file atomically, readable by its owner only from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    tmp = path.with_name(path.name + ".tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    tmp.chmod(0o600)
    tmp.replace(path)


def ensure_transport_key(keys_dir: Path) -> Path:
    """The hospital's X25519 transport key pair (drawn here once); returns the public key's path to publish."""
    private, public = keys_dir / TRANSPORT_KEY_NAME, keys_dir / TRANSPORT_PUBLIC_NAME
    if not private.exists():
        key = new_transport_key()
        _write_private(private, private_key_pem(key))
        public.write_bytes(public_key_pem(key.public_key()))
    return public


def installed_key(keys_dir: Path) -> dict[str, Any] | None:
    """Which CKKS key this hospital holds (``he-key.json``), or None."""
    path = keys_dir / INSTALLED_KEY_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _refuse_overwrite(keys_dir: Path, hospital: str, key_id: str, replace: bool) -> None:
    """A hospital keeps one key; replacing it is a deliberate rotation, and the same key is never installed twice."""
    held = installed_key(keys_dir)
    if held is None and not (keys_dir / SECRET_CONTEXT_NAME).exists():
        return
    held_id = held["key_id"] if held else "an unrecorded key"
    if held_id == key_id:
        raise KeyTransportError(f"key_id: {hospital} holds key {key_id} already; a key is installed once")
    if not replace:
        raise KeyTransportError(
            f"{SECRET_CONTEXT_NAME}: {hospital} holds {held_id}; a new key is for a new run: pass --replace to "
            "rotate to it (the old key can no longer decrypt that run's models)"
        )


def _install(keys_dir: Path, secret: bytes, record: dict[str, Any]) -> Path:
    path = keys_dir / SECRET_CONTEXT_NAME
    _write_private(path, secret)
    (keys_dir / INSTALLED_KEY_NAME).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return path


@dataclass(frozen=True)
class CreatedKey:
    """What `create_key` wrote: the creator's secret context and the outbox the consortium relays."""

    key_id: str
    secret_context: Path
    outbox: Path
    sealed: dict[str, Path]
    manifest: dict[str, Any]


def create_key(
    ledger: Ledger,
    keys_dir: Path,
    hospital: str,
    key_id: str,
    recipients: dict[str, X25519PublicKey],
    outbox: Path,
    *,
    replace: bool = False,
) -> CreatedKey:
    """Draw a new CKKS key, record it on the ledger as ``hospital``, install it here and seal it to each recipient."""
    from privacy.he import generate_secret_context

    check_key_id(key_id)
    if hospital in recipients:
        raise KeyTransportError(f"--recipients: {hospital} creates the key and holds it; list the other hospitals")
    if outbox.exists() and any(outbox.iterdir()):
        raise KeyTransportError(f"--outbox: {outbox} is not empty; each key gets a new outbox")
    _refuse_overwrite(keys_dir, hospital, key_id, replace)
    secret = generate_secret_context(ceremony_parameters(len(recipients) + 1))
    secret_bytes, public_bytes = secret.serialize(), secret.public().serialize()
    public_sha256 = sha256_hex(public_bytes)
    key = {"public_context_sha256": public_sha256, "recipients": [msp_id_for(name) for name in recipients]}
    ledger.submit("GovernanceContract:record_he_key", key_id, key)  # first: a refused key leaves no file behind
    p = secret.parameters
    manifest = {
        "key_id": key_id,
        "creator": hospital,
        "hospitals": [hospital, *recipients],
        "fingerprint": secret.fingerprint.hex(),
        "public_context_sha256": public_sha256,
        "parameters": {
            "scheme": "ckks",
            "poly_modulus_degree": p.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(p.coeff_mod_bit_sizes),
            "global_scale_bits": p.scale_bits,
            "packing": "seeded-complex",
        },
    }
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / PUBLIC_CONTEXT_NAME).write_bytes(public_bytes)
    (outbox / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    sealed: dict[str, Path] = {}
    for name, public_key in recipients.items():
        bundle = seal(
            secret_bytes, public_bytes, key_id=key_id, sender=hospital, recipient=name, recipient_key=public_key
        )
        sealed[name] = outbox / f"{name}{SEALED_SUFFIX}"
        sealed[name].write_bytes(bundle.to_bytes())
    own = {"key_id": key_id, "creator": hospital, "public_context_sha256": public_sha256}
    return CreatedKey(key_id, _install(keys_dir, secret_bytes, own), outbox, sealed, manifest)


def accept_key(ledger: Ledger, keys_dir: Path, hospital: str, bundle_bytes: bytes, *, replace: bool = False) -> Path:
    """Check a bundle against the ledger, open it with this hospital's transport key, record the acceptance and
    install the secret context; returns its path."""
    bundle = SealedKey.from_bytes(bundle_bytes)
    check_key_id(bundle.key_id)
    _refuse_overwrite(keys_dir, hospital, bundle.key_id, replace)
    try:
        record = ledger.evaluate("GovernanceContract:read_he_key", bundle.key_id)
    except LedgerError as exc:
        raise KeyTransportError(
            f"key_id: key {bundle.key_id} is not readable on the ledger ({exc}); not installing it"
        ) from exc
    me = msp_id_for(hospital)
    if record["creator"] != msp_id_for(bundle.sender):
        raise KeyTransportError(
            f"sender: key {bundle.key_id} was recorded by {record['creator']}, not {bundle.sender}; "
            "the bundle is forged or mislabelled: do not install it, tell the consortium"
        )
    if me not in record["recipients"]:
        raise KeyTransportError(f"recipient: the ledger does not list {hospital} as a recipient of key {bundle.key_id}")
    if record["public_context_sha256"] != bundle.public_context_sha256:
        raise KeyTransportError(
            f"public_context_sha256: differs from key {bundle.key_id}'s record on the ledger; do not install it"
        )
    private_path = keys_dir / TRANSPORT_KEY_NAME
    if not private_path.exists():
        raise KeyTransportError(f"{private_path}: no transport key; run `carefed node init --hospital {hospital}`")
    secret = open_sealed(bundle, hospital, load_private_key(private_path.read_bytes(), str(private_path)))
    if me not in record["accepted"]:  # accepted but not installed: an earlier attempt stopped in between
        ledger.submit("GovernanceContract:accept_he_key", bundle.key_id, bundle.public_context_sha256)
    own = {"key_id": bundle.key_id, "creator": bundle.sender, "public_context_sha256": bundle.public_context_sha256}
    return _install(keys_dir, secret, own)
