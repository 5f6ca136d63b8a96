"""Moving the hospitals' shared CKKS secret key from the hospital that draws it to the others, sealed end to end.

The consortium relays the key but must not be able to read it (it aggregates ciphertexts under that key). So each
hospital holds an X25519 transport key pair drawn on its own machine, and the creating hospital seals the secret
context once per recipient with HPKE (RFC 9180 base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM;
`cryptography`'s implementation). What the relay must not be able to swap goes into HPKE's ``info``, which the
key schedule binds to the ciphertext: the key id, the sender, the recipient, the hash of the recipient's transport
public key and the SHA-256 of the key's public context. A bundle shown to another recipient, relabelled with
another key id or edited in any header field therefore does not open. Base mode does not authenticate the
sender; the ledger does: the creating hospital records the key id and the public context's hash under its own
identity, and a recipient installs a key only if that record names the bundle's sender and itself
(hospital_node/he_keys.py). Opening also checks that the unsealed secret context belongs to that public context.

Bundle (UTF-8 JSON, one per recipient): ``{format, version, key_id, sender, recipient, recipient_key_sha256,
public_context_sha256, ciphertext}`` with ``ciphertext`` = base64(HPKE enc ‖ AEAD ciphertext); ``info`` is the
canonical JSON of every field but ``ciphertext``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

if TYPE_CHECKING:
    from privacy.he import CKKSParameters

FORMAT = "carefed-sealed-he-key"
VERSION = 1
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
#: A key id is also a file and directory name on every hospital's machine, so it is a plain token.
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: The outbox a creating hospital hands the consortium: the public context and its manifest (the consortium keeps
#: both) and one ``<recipient>.sealed`` bundle per recipient (the consortium relays each, and cannot open it).
PUBLIC_CONTEXT_NAME = "public.ctx"
MANIFEST_NAME = "ceremony.json"
SEALED_SUFFIX = ".sealed"
_HEADER_FIELDS = ("format", "version", "key_id", "sender", "recipient", "recipient_key_sha256", "public_context_sha256")


class KeyTransportError(ValueError):
    """A key cannot be sealed or a bundle cannot be opened; the message names the field and the fix."""


def check_key_id(value: str) -> str:
    """A key id: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    if not KEY_ID.fullmatch(value):
        raise KeyTransportError(
            "key_id: must be 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit, e.g. he-2026-12"
        )
    return value


def ceremony_parameters(hospitals: int) -> CKKSParameters:
    """Summation-only CKKS parameters: one 40-bit prime at N=4096 (128-bit secure), scale 2^25.

    `privacy.he`'s default prime leaves |weight·value| ≤ 1; a trained model's weights exceed that, so a wider
    prime buys headroom (≤ 256 for 16 parties) at the same precision (error follows the scale) for 25% more bytes.
    """
    from privacy.he import CKKSParameters

    return CKKSParameters(
        poly_modulus_degree=4096, coeff_mod_bit_sizes=(40,), scale_bits=25, max_parties=max(16, hospitals)
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_transport_key() -> X25519PrivateKey:
    """A hospital's transport key pair, drawn on the hospital's own machine."""
    return X25519PrivateKey.generate()


def private_key_pem(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(pem: bytes, where: str) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError:
        key = None
    if not isinstance(key, X25519PrivateKey):
        raise KeyTransportError(f"{where}: not an X25519 private key in PEM; `carefed node init` writes one")
    return key


def load_public_key(pem: bytes, where: str) -> X25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        key = None
    if not isinstance(key, X25519PublicKey):
        raise KeyTransportError(f"{where}: not an X25519 public key in PEM (a hospital's keys/he-transport.pub)")
    return key


def transport_key_sha256(key: X25519PublicKey) -> str:
    """What a bundle names its recipient's key by: the SHA-256 of the raw 32-byte public key."""
    return sha256_hex(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


@dataclass(frozen=True)
class SealedKey:
    """One recipient's bundle: the header HPKE binds as ``info``, and the sealed secret context."""

    key_id: str
    sender: str
    recipient: str
    recipient_key_sha256: str
    public_context_sha256: str
    ciphertext: bytes
    format: str = FORMAT
    version: int = VERSION

    def info(self) -> bytes:
        header = {name: getattr(self, name) for name in _HEADER_FIELDS}
        return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()

    def to_bytes(self) -> bytes:
        fields = {**asdict(self), "ciphertext": base64.b64encode(self.ciphertext).decode()}
        return json.dumps(fields, indent=2, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedKey:
        """Parse a bundle; anything that is not one is refused by name before any key is touched."""
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, ValueError):
            raw = None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise KeyTransportError(f"format: not a sealed CareFed HE key (expected format {FORMAT!r})")
        if raw.get("version") != VERSION:
            raise KeyTransportError(f"version: sealed-key version {raw.get('version')!r} is not supported (v{VERSION})")
        expected = {*_HEADER_FIELDS, "ciphertext"}
        if set(raw) != expected:
            odd = sorted(set(raw) ^ expected)[0]
            raise KeyTransportError(f"{odd}: {'missing' if odd in expected else 'not a field of a sealed key'}")
        for name in expected - {"version"}:
            if not isinstance(raw[name], str):
                raise KeyTransportError(f"{name}: must be a string")
        try:
            ciphertext = base64.b64decode(raw.pop("ciphertext"), validate=True)
        except binascii.Error:
            raise KeyTransportError("ciphertext: not base64; the bundle was damaged in transit") from None
        return cls(ciphertext=ciphertext, **raw)


def seal(
    secret_context: bytes,
    public_context: bytes,
    *,
    key_id: str,
    sender: str,
    recipient: str,
    recipient_key: X25519PublicKey,
) -> SealedKey:
    """Seal the secret context for one recipient's transport key, bound to this key id, sender and public context."""
    unsealed = SealedKey(
        key_id=check_key_id(key_id),
        sender=sender,
        recipient=recipient,
        recipient_key_sha256=transport_key_sha256(recipient_key),
        public_context_sha256=sha256_hex(public_context),
        ciphertext=b"",
    )
    ciphertext = SUITE.encrypt(secret_context, recipient_key, info=unsealed.info())
    return SealedKey(**{**asdict(unsealed), "ciphertext": ciphertext})


def open_sealed(bundle: SealedKey, recipient: str, private_key: X25519PrivateKey) -> bytes:
    """The secret context sealed in ``bundle`` for ``recipient``; every mismatch is refused with what to do."""
    from privacy.he import HEError, SecretContext

    if bundle.recipient != recipient:
        raise KeyTransportError(
            f"recipient: this bundle is sealed for {bundle.recipient}, not {recipient}; "
            f"ask the consortium for {recipient}'s own bundle of key {bundle.key_id}"
        )
    if bundle.recipient_key_sha256 != transport_key_sha256(private_key.public_key()):
        raise KeyTransportError(
            f"recipient_key_sha256: sealed to another transport key of {recipient} (an older key pair?); "
            f"{bundle.sender} must seal key {bundle.key_id} again to {recipient}'s current keys/he-transport.pub"
        )
    try:
        secret = SUITE.decrypt(bundle.ciphertext, private_key, info=bundle.info())
    except (InvalidTag, ValueError):
        raise KeyTransportError(
            "ciphertext: does not open: the bundle's ciphertext or one of its header fields (key_id, sender, "
            f"public_context_sha256) was altered after sealing; ask {bundle.sender} to seal key {bundle.key_id} again"
        ) from None
    try:
        public = SecretContext.deserialize(secret).public().serialize()
    except HEError:
        public = b""
    if sha256_hex(public) != bundle.public_context_sha256:
        raise KeyTransportError(
            f"public_context_sha256: the sealed secret context is not the key of this public context; "
            f"do not install it and tell the consortium ({bundle.sender} sealed a different key)"
        )
    return secret
