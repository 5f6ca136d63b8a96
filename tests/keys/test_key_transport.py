"""The sealed-key protocol alone (federation/key_transport.py): what opens, and every refusal named by its field."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from federation.key_transport import (
    KeyTransportError,
    SealedKey,
    ceremony_parameters,
    check_key_id,
    load_private_key,
    load_public_key,
    new_transport_key,
    open_sealed,
    private_key_pem,
    public_key_pem,
    seal,
    transport_key_sha256,
)
from privacy.he import SecretContext, decrypt, encrypt, generate_secret_context

B, C = new_transport_key(), new_transport_key()


@pytest.fixture(scope="module")
def key() -> tuple[bytes, bytes]:
    """A consortium key: (secret context, public context)."""
    secret = generate_secret_context(ceremony_parameters(3))
    return secret.serialize(), secret.public().serialize()


@pytest.fixture(scope="module")
def for_b(key: tuple[bytes, bytes]) -> SealedKey:
    secret, public = key
    return seal(
        secret, public, key_id="he-1", sender="hospital-a", recipient="hospital-b", recipient_key=B.public_key()
    )


def test_round_trip_through_the_bundle_bytes(key: tuple[bytes, bytes], for_b: SealedKey) -> None:
    secret, _ = key
    assert secret not in for_b.to_bytes() and for_b.ciphertext[:64] not in secret
    opened = open_sealed(SealedKey.from_bytes(for_b.to_bytes()), "hospital-b", B)
    assert opened == secret
    blob = encrypt(SecretContext.deserialize(secret), np.array([0.5, -1.25]))
    np.testing.assert_allclose(decrypt(SecretContext.deserialize(opened), blob), [0.5, -1.25], atol=1e-3)


def test_a_bundle_for_b_does_not_open_for_c(for_b: SealedKey) -> None:
    with pytest.raises(KeyTransportError, match=r"^recipient: this bundle is sealed for hospital-b, not hospital-c"):
        open_sealed(for_b, "hospital-c", C)
    # Relabelled for C (recipient and key hash), the HPKE info no longer matches: it still does not open.
    forged = replace(for_b, recipient="hospital-c", recipient_key_sha256=transport_key_sha256(C.public_key()))
    with pytest.raises(KeyTransportError, match=r"^ciphertext: does not open"):
        open_sealed(forged, "hospital-c", C)


def test_a_bundle_sealed_to_another_transport_key_is_named(for_b: SealedKey) -> None:
    with pytest.raises(
        KeyTransportError, match=r"^recipient_key_sha256: sealed to another transport key of hospital-b"
    ):
        open_sealed(for_b, "hospital-b", new_transport_key())


@pytest.mark.parametrize(
    "change",
    [
        {"key_id": "he-2"},  # replayed as another key id
        {"sender": "hospital-c"},
        {"public_context_sha256": "0" * 64},
        {"ciphertext": b"tampered"},
    ],
    ids=["key_id", "sender", "public_context_sha256", "ciphertext"],
)
def test_an_altered_header_or_ciphertext_does_not_open(for_b: SealedKey, change: dict[str, object]) -> None:
    if change.get("ciphertext"):
        change = {"ciphertext": for_b.ciphertext[:-1] + bytes([for_b.ciphertext[-1] ^ 1])}
    with pytest.raises(
        KeyTransportError, match=r"^ciphertext: does not open: .* ask hospital-\w to seal key he-\d again"
    ):
        open_sealed(replace(for_b, **change), "hospital-b", B)  # type: ignore[arg-type]


def test_a_secret_that_is_not_the_public_contexts_key_is_refused(key: tuple[bytes, bytes]) -> None:
    other = generate_secret_context(ceremony_parameters(3)).serialize()
    bundle = seal(
        other, key[1], key_id="he-1", sender="hospital-a", recipient="hospital-b", recipient_key=B.public_key()
    )
    with pytest.raises(KeyTransportError, match=r"^public_context_sha256: the sealed secret context is not the key"):
        open_sealed(bundle, "hospital-b", B)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda raw: b"not json", "format"),
        (lambda raw: json.dumps({**json.loads(raw), "version": 2}).encode(), "version"),
        (lambda raw: json.dumps({k: v for k, v in json.loads(raw).items() if k != "sender"}).encode(), "sender"),
        (lambda raw: json.dumps({**json.loads(raw), "note": "x"}).encode(), "note"),
        (lambda raw: json.dumps({**json.loads(raw), "ciphertext": "%%"}).encode(), "ciphertext"),
        (lambda raw: json.dumps({**json.loads(raw), "key_id": 7}).encode(), "key_id"),
    ],
    ids=["garbage", "version", "missing", "extra", "base64", "type"],
)
def test_a_damaged_bundle_is_named(for_b: SealedKey, edit, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyTransportError, match=rf"^{field}: "):
        SealedKey.from_bytes(edit(for_b.to_bytes()))


def test_key_ids_and_key_files_are_checked() -> None:
    assert check_key_id("he-2026-12") == "he-2026-12"
    for bad in ("", "../x", "he 1", "a" * 65):
        with pytest.raises(KeyTransportError, match=r"^key_id: "):
            check_key_id(bad)
    with pytest.raises(KeyTransportError, match=r"^k\.pub: not an X25519 public key"):
        load_public_key(b"junk", "k.pub")
    with pytest.raises(KeyTransportError, match=r"^k\.key: not an X25519 private key"):
        load_private_key(public_key_pem(B.public_key()), "k.key")
    assert load_private_key(private_key_pem(B), "k.key").public_key() == B.public_key()
