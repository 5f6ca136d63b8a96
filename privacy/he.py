"""CKKS aggregation of model updates: hospitals encrypt, the aggregator adds holding no secret key, hospitals decrypt.

Why this construction (measured by `bench/he.py`, numbers in its output and the module constants):
- The aggregator only adds, so no relinearisation or rotation keys, no middle primes and no key-switching prime are
  needed: one coefficient prime suffices, and a ciphertext's size is (prime bits) x N per N/2 slots.
- Hospitals share the consortium's CKKS secret key (docs/design.md), so they encrypt *symmetrically* with it.
  SEAL then stores the second ciphertext polynomial as a PRNG seed ("seeded" ciphertexts), halving the size, and
  every complex slot carries two reals. Together that brings an update to ~1x its float32 size (TenSEAL's
  high-level public-key API with two primes reaches ~5.3-5.9x). Adding seeded ciphertexts needs only the
  encryption parameters, so the aggregator's context holds no key at all. The sum travels back as an ordinary
  (unseeded) ciphertext: twice the size of one update.
- SEAL is reached through `tenseal.sealapi` (the SEAL bundled in the TenSEAL wheel); its save/load take file paths,
  so serialisation goes through a private temporary directory (tmpfs when available) that is removed at once.

Wire format (version 1, all integers big-endian) for an encrypted update or sum:
    b"CFHE" | version u8 | kind u8 (1 update, 2 sum) | context fingerprint 16 B | length u64 | terms u32 |
    chunks u32 | chunk sizes u32 x chunks | chunk bytes … | BLAKE2b-128 digest of everything before it
The fingerprint (key id + parameters) rejects ciphertexts from another context; the lengths reject truncation;
the digest rejects corruption; `terms` (updates summed so far) lets the aggregator refuse sums that could overflow.

API
---
- `CKKSParameters(poly_modulus_degree, coeff_mod_bit_sizes, scale_bits, max_parties)`; `DEFAULT_PARAMETERS`.
  `max_abs_value` is the largest |value| an update may hold so that a sum of `max_parties` updates cannot overflow.
- `generate_secret_context(parameters)` → `SecretContext` (hospitals; holds the secret key).
  `secret.public()` → `PublicContext` (aggregator; parameters and key id only). Both have `.serialize()` and
  `.fingerprint`; restore with `SecretContext.deserialize` / `PublicContext.deserialize` / `load_context`.
- `encrypt(secret, vector) -> bytes` (any length; chunked), `aggregate(context, [bytes, …]) -> bytes` (public or
  secret context), `decrypt(secret, blob) -> np.ndarray` (unpadded; a `PublicContext` raises
  `MissingSecretKeyError`).
- Sample-weighted averaging: `encrypt_weighted(secret, vector, weight)` encrypts [weight·vector…, weight] with
  weight = nᵢ / u for a public unit u (e.g. the consortium's declared record total, so the weights sum to ≈ 1);
  the aggregator adds as usual and never sees nᵢ; `decrypt_weighted_average(secret, blob)` returns
  Σ weightᵢ·vectorᵢ / Σ weightᵢ. Its absolute error is about `MEASURED_SUM_ERROR` / Σ weightᵢ.
- Errors (all `HEError`): `ContextMismatchError`, `LengthMismatchError`, `CorruptCiphertextError`,
  `MissingSecretKeyError`, `ValueRangeError`, `ParameterError`. Damaged bytes raise one subclass of
  `CorruptCiphertextError` per cause, checked in this order so that each damage is named for what it is:
  `NotACiphertextError` (wrong magic or version: garbage), `TruncatedCiphertextError` (fewer bytes than the
  header and chunk table declare), `ChecksumMismatchError` (declared length, altered bytes),
  `MalformedCiphertextError` (valid digest, inconsistent contents: kind, chunk table, SEAL data). A valid envelope
  claiming more summed updates than `max_parties` raises `ValueRangeError`.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

WIRE_MAGIC = b"CFHE"
CONTEXT_MAGIC = b"CFCX"
WIRE_VERSION = 1
_KIND_UPDATE = 1
_KIND_SUM = 2
_CONTEXT_PUBLIC = 1
_CONTEXT_SECRET = 2
_FINGERPRINT_BYTES = 16
_DIGEST_BYTES = 16
_KEY_ID_BYTES = 16
_WIRE_HEADER = struct.Struct(">4sBB16sQII")
_CONTEXT_HEADER = struct.Struct(">4sBB16sIBHB")


class HEError(ValueError):
    """Base class of every CKKS aggregation error."""


class ParameterError(HEError):
    """The CKKS parameters are insecure or inconsistent."""


class ContextMismatchError(HEError):
    """A ciphertext was made under another key or other parameters than the context in use."""


class LengthMismatchError(HEError):
    """Encrypted vectors of different lengths cannot be added."""


class CorruptCiphertextError(HEError):
    """Bytes that are truncated, corrupted or not a CareFed ciphertext/context at all (base of the four below)."""


class NotACiphertextError(CorruptCiphertextError):
    """The bytes do not start like a CareFed ciphertext/context of this version: garbage or another format."""


class TruncatedCiphertextError(CorruptCiphertextError):
    """Fewer bytes arrived than the message's own header declares: cut in transit or by a short read."""


class ChecksumMismatchError(CorruptCiphertextError):
    """The message has its declared length but its digest does not match: bytes were altered."""


class MalformedCiphertextError(CorruptCiphertextError):
    """The digest matches but the contents are inconsistent (chunk table, kind, SEAL data): a faulty sender."""


class MissingSecretKeyError(HEError):
    """Decryption was asked of a context without the secret key (the aggregator's)."""


class ValueRangeError(HEError):
    """A value is too large (or not finite) to be summed without overflow."""


@dataclass(frozen=True)
class CKKSParameters:
    """CKKS parameters for summation only: ring degree, coefficient primes (bits), scale, largest party count."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    max_parties: int = 16

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n < 1024 or n > 32768 or n & (n - 1):
            raise ParameterError(f"poly_modulus_degree must be a power of two in [1024, 32768], got {n}")
        if not self.coeff_mod_bit_sizes or any(not 20 <= bits <= 60 for bits in self.coeff_mod_bit_sizes):
            raise ParameterError(f"coeff_mod_bit_sizes must be 1+ primes of 20-60 bits, got {self.coeff_mod_bit_sizes}")
        limit = int(seal.CoeffModulus.MaxBitCount(n, seal.SEC_LEVEL_TYPE.TC128))
        if sum(self.coeff_mod_bit_sizes) > limit:
            raise ParameterError(
                f"coeff_mod_bit_sizes {self.coeff_mod_bit_sizes} total {sum(self.coeff_mod_bit_sizes)} bits: above the "
                f"{limit} bits that keep N={n} at 128-bit security; use fewer bits or a larger poly_modulus_degree"
            )
        if self.max_parties < 1:
            raise ParameterError(f"max_parties must be ≥ 1, got {self.max_parties}")
        if self.max_abs_value < 1.0:
            raise ParameterError(
                f"scale 2^{self.scale_bits} leaves |value| ≤ {self.max_abs_value:.3g} for {self.max_parties} "
                f"parties under primes {self.coeff_mod_bit_sizes}; lower scale_bits or max_parties or use larger primes"
            )

    @property
    def max_abs_value(self) -> float:
        """Largest |value| per update such that a sum of `max_parties` updates stays decodable (¼ safety margin)."""
        # A fresh ciphertext lives modulo every prime but the key-switching one (the last, when there are several).
        data_modulus_bits = sum(self.coeff_mod_bit_sizes[:-1]) or self.coeff_mod_bit_sizes[0]
        headroom: float = 2.0 ** (data_modulus_bits - 1 - self.scale_bits) / 4
        return headroom / self.max_parties

    @property
    def values_per_ciphertext(self) -> int:
        """Reals per ciphertext: N/2 complex slots, two reals each."""
        return self.poly_modulus_degree

    def encode(self) -> bytes:
        """The prime sizes as bytes, for the context's serialisation and fingerprint."""
        return bytes(self.coeff_mod_bit_sizes)


# Chosen by `python -m bench.he --search`: the smallest wire size among 128-bit-secure single-prime sets whose max
# error on the sum of 10 updates of 100,000 values in [-1, 1] stays ≤ 1e-4, with |value| ≤ 1 allowed for up to 16
# parties. Measured: N=2048, 32-bit prime, scale 2^25: 1.047x float32, 4.3e-5 max error (31 bits at 2^24: 1.053x,
# 1.1e-4; N=4096: 1.061x, 5.9e-5; zstd packs 32-bit coefficients best, so fewer bits do not shrink the wire).
DEFAULT_PARAMETERS = CKKSParameters(poly_modulus_degree=2048, coeff_mod_bit_sizes=(32,), scale_bits=25)
# The acceptance bound for the sum of 10 updates; the measured max error at DEFAULT_PARAMETERS is below half of it.
MEASURED_SUM_ERROR = 1e-4


@contextmanager
def _scratch_dir() -> Iterator[Path]:
    """A private directory for SEAL's path-based save/load, on tmpfs when there is one."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="carefed-he-", dir=base) as path:
        yield Path(path)


class PublicContext:
    """The aggregator's context: encryption parameters and the key id, no key material. It can only add."""

    def __init__(self, parameters: CKKSParameters, key_id: bytes) -> None:
        if len(key_id) != _KEY_ID_BYTES:
            raise ParameterError(f"key_id must be {_KEY_ID_BYTES} bytes, got {len(key_id)}")
        self.parameters = parameters
        self.key_id = key_id
        encryption_parameters = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        encryption_parameters.set_poly_modulus_degree(parameters.poly_modulus_degree)
        encryption_parameters.set_coeff_modulus(
            seal.CoeffModulus.Create(parameters.poly_modulus_degree, list(parameters.coeff_mod_bit_sizes))
        )
        self._seal = seal.SEALContext(encryption_parameters, True, seal.SEC_LEVEL_TYPE.TC128)
        if not self._seal.parameters_set():
            raise ParameterError(f"SEAL rejects {parameters}: {self._seal.parameters_error_message()}")
        self._evaluator = seal.Evaluator(self._seal)
        self.fingerprint = hashlib.blake2b(
            key_id + struct.pack(">IB", parameters.poly_modulus_degree, parameters.scale_bits) + parameters.encode(),
            digest_size=_FINGERPRINT_BYTES,
        ).digest()

    def _header(self, kind: int) -> bytes:
        p = self.parameters
        return (
            _CONTEXT_HEADER.pack(
                CONTEXT_MAGIC,
                WIRE_VERSION,
                kind,
                self.key_id,
                p.poly_modulus_degree,
                p.scale_bits,
                p.max_parties,
                len(p.coeff_mod_bit_sizes),
            )
            + p.encode()
        )

    def serialize(self) -> bytes:
        """Parameters and key id only: safe to hand to the aggregator."""
        return _seal_with_digest(self._header(_CONTEXT_PUBLIC))

    @classmethod
    def deserialize(cls, data: bytes) -> PublicContext:
        """Restore a public context; a secret context's bytes are accepted and stripped of their key."""
        context = load_context(data)
        return context.public() if isinstance(context, SecretContext) else context


class SecretContext(PublicContext):
    """A hospital's context: the parameters plus the consortium's CKKS secret key. Never leaves the hospital."""

    def __init__(self, parameters: CKKSParameters, key_id: bytes, secret_key: Any = None) -> None:
        super().__init__(parameters, key_id)
        self._secret_key = secret_key if secret_key is not None else seal.KeyGenerator(self._seal).secret_key()
        self._encryptor = seal.Encryptor(self._seal, self._secret_key)
        self._decryptor = seal.Decryptor(self._seal, self._secret_key)
        self._encoder = seal.CKKSEncoder(self._seal)

    def public(self) -> PublicContext:
        """The aggregator's view of this context: same parameters and key id, no secret key."""
        return PublicContext(self.parameters, self.key_id)

    def serialize(self) -> bytes:
        """Parameters, key id and the SECRET KEY: for the hospitals' key store only."""
        with _scratch_dir() as scratch:
            path = scratch / "secret-key"
            self._secret_key.save(str(path))
            key_bytes = path.read_bytes()
        return _seal_with_digest(self._header(_CONTEXT_SECRET) + key_bytes)

    @classmethod
    def deserialize(cls, data: bytes) -> SecretContext:
        context = load_context(data)
        if not isinstance(context, SecretContext):
            raise MissingSecretKeyError("these context bytes hold no secret key (an aggregator's public context)")
        return context


def generate_secret_context(parameters: CKKSParameters = DEFAULT_PARAMETERS) -> SecretContext:
    """Create a new consortium key (run once, in the key ceremony) with a random key id."""
    return SecretContext(parameters, secrets.token_bytes(_KEY_ID_BYTES))


def _seal_with_digest(body: bytes) -> bytes:
    return body + hashlib.blake2b(body, digest_size=_DIGEST_BYTES).digest()


def _frame(data: bytes, what: str, header: struct.Struct, magic: bytes) -> tuple[Any, ...]:
    """Unpack a message's header, refusing garbage and other versions before anything else is read."""
    prefix = bytes(data[: len(magic)])
    if prefix != magic[: len(prefix)]:
        raise NotACiphertextError(
            f"{what}: not a CareFed {what} (starts with {bytes(data[:8])!r}, expected {magic!r}); "
            "check that the sender sent the right file or message"
        )
    if len(data) < header.size + _DIGEST_BYTES:
        raise TruncatedCiphertextError(
            f"{what}: truncated: {len(data)} bytes, shorter than the {header.size + _DIGEST_BYTES}-byte header and "
            "digest; resend the whole message"
        )
    fields = header.unpack_from(data)
    if fields[1] != WIRE_VERSION:
        raise NotACiphertextError(f"{what}: wire version {fields[1]} is not supported (this is v{WIRE_VERSION})")
    return fields


def _verified_body(data: bytes, what: str, declared: int | None) -> bytes:
    """The body before the digest, once its declared length (when known) and its digest match."""
    if declared is not None and len(data) != declared:
        state = "truncated" if len(data) < declared else "has trailing bytes"
        raise (TruncatedCiphertextError if len(data) < declared else MalformedCiphertextError)(
            f"{what}: {state}: {len(data)} bytes, its header declares {declared}; resend the whole message"
        )
    body, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if hashlib.blake2b(body, digest_size=_DIGEST_BYTES).digest() != digest:
        raise ChecksumMismatchError(
            f"{what}: checksum mismatch: the bytes have their declared length but were altered; resend them"
        )
    return body


def load_context(data: bytes) -> PublicContext | SecretContext:
    """Restore whichever context `data` holds (public or secret)."""
    _, _, kind, key_id, degree, scale_bits, max_parties, n_primes = _frame(
        data, "context", _CONTEXT_HEADER, CONTEXT_MAGIC
    )
    # A public context's length is fixed by its header; a secret one ends with SEAL's key of unstated length.
    declared = _CONTEXT_HEADER.size + n_primes + _DIGEST_BYTES if kind == _CONTEXT_PUBLIC else None
    body = _verified_body(data, "context", declared)
    if kind not in (_CONTEXT_PUBLIC, _CONTEXT_SECRET):
        raise MalformedCiphertextError(f"context: unknown kind {kind} (1 public, 2 secret)")
    offset = _CONTEXT_HEADER.size
    parameters = CKKSParameters(degree, tuple(body[offset : offset + n_primes]), scale_bits, max_parties)
    offset += n_primes
    if kind == _CONTEXT_PUBLIC:
        return PublicContext(parameters, key_id)
    public = PublicContext(parameters, key_id)
    secret_key = seal.SecretKey()
    with _scratch_dir() as scratch:
        path = scratch / "secret-key"
        path.write_bytes(body[offset:])
        try:
            secret_key.load(public._seal, str(path))
        except (RuntimeError, ValueError) as error:
            raise MalformedCiphertextError(f"context: SEAL cannot load the secret key: {error}") from error
    return SecretContext(parameters, key_id, secret_key)


@dataclass(frozen=True)
class _Envelope:
    """A verified wire message of this context: its vector length, how many updates it sums, its SEAL chunks."""

    length: int
    terms: int
    chunks: list[bytes]


def _pack(context: PublicContext, kind: int, length: int, terms: int, chunks: Sequence[bytes]) -> bytes:
    header = _WIRE_HEADER.pack(WIRE_MAGIC, WIRE_VERSION, kind, context.fingerprint, length, terms, len(chunks))
    sizes = struct.pack(f">{len(chunks)}I", *(len(chunk) for chunk in chunks))
    return _seal_with_digest(header + sizes + b"".join(chunks))


def _unpack(context: PublicContext, data: bytes) -> _Envelope:
    _, _, kind, fingerprint, length, terms, n_chunks = _frame(data, "ciphertext", _WIRE_HEADER, WIRE_MAGIC)
    table_end = _WIRE_HEADER.size + 4 * n_chunks
    if len(data) < table_end + _DIGEST_BYTES:
        raise TruncatedCiphertextError(
            f"ciphertext: truncated: {len(data)} bytes, shorter than its header and table of {n_chunks} chunk sizes; "
            "resend the whole message"
        )
    sizes = struct.unpack_from(f">{n_chunks}I", data, _WIRE_HEADER.size)
    body = _verified_body(data, "ciphertext", table_end + sum(sizes) + _DIGEST_BYTES)
    if fingerprint != context.fingerprint:
        raise ContextMismatchError(
            f"ciphertext was encrypted under context {fingerprint.hex()}, not this context "
            f"{context.fingerprint.hex()}; every party of a run must use the consortium's current key"
        )
    if kind not in (_KIND_UPDATE, _KIND_SUM) or terms < 1 or (kind == _KIND_UPDATE and terms != 1):
        raise MalformedCiphertextError(f"ciphertext: kind {kind} with {terms} summed updates is not a valid message")
    if terms > context.parameters.max_parties:
        raise ValueRangeError(
            f"ciphertext: a sum of {terms} updates exceeds max_parties={context.parameters.max_parties}, so its "
            "values may have overflowed; refuse it"
        )
    expected_chunks = math.ceil(length / context.parameters.values_per_ciphertext)
    if length < 1 or n_chunks != expected_chunks:
        raise MalformedCiphertextError(
            f"ciphertext: chunk table of {n_chunks} chunks does not match the declared {length} values "
            f"({expected_chunks} chunks)"
        )
    chunks = []
    offset = table_end
    for size in sizes:
        chunks.append(body[offset : offset + size])
        offset += size
    return _Envelope(length, terms, chunks)


def _load_ciphertexts(context: PublicContext, chunks: Sequence[bytes], scratch: Path) -> list[Any]:
    ciphertexts = []
    path = scratch / "ciphertext"
    for index, chunk in enumerate(chunks):
        path.write_bytes(chunk)
        ciphertext = seal.Ciphertext()
        try:
            ciphertext.load(context._seal, str(path))
        except (RuntimeError, ValueError) as error:
            raise MalformedCiphertextError(f"ciphertext: SEAL cannot load chunk {index}: {error}") from error
        ciphertexts.append(ciphertext)
    return ciphertexts


def _flat_finite(vector: npt.ArrayLike, bound: float) -> npt.NDArray[np.float64]:
    values = np.asarray(vector, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueRangeError(f"expected a non-empty flat vector, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueRangeError("vector contains NaN or infinite values; fix the update before encrypting it")
    largest = float(np.max(np.abs(values)))
    if largest > bound:
        raise ValueRangeError(
            f"|value| up to {largest:.4g} exceeds {bound:.4g}, the bound that keeps a sum of max_parties updates from "
            "overflowing; clip or rescale the update (e.g. smaller weights, or a larger weight unit)"
        )
    return values


def encrypt(context: SecretContext, vector: npt.ArrayLike) -> bytes:
    """Encrypt a flat float vector of any length into the compact wire format."""
    parameters = context.parameters
    values = _flat_finite(vector, parameters.max_abs_value)
    per_chunk = parameters.values_per_ciphertext
    half = per_chunk // 2
    padded = np.zeros(math.ceil(values.size / per_chunk) * per_chunk)
    padded[: values.size] = values
    scale = 2.0**parameters.scale_bits
    chunks = []
    with _scratch_dir() as scratch:
        path = scratch / "ciphertext"
        for start in range(0, padded.size, per_chunk):
            block = padded[start : start + per_chunk]
            plaintext = seal.Plaintext()
            context._encoder.encode((block[:half] + 1j * block[half:]).tolist(), scale, plaintext)
            context._encryptor.encrypt_symmetric(plaintext).save(str(path))
            chunks.append(path.read_bytes())
    return _pack(context, _KIND_UPDATE, values.size, 1, chunks)


def aggregate(context: PublicContext, updates: Sequence[bytes]) -> bytes:
    """Add encrypted updates (or partial sums) holding only the public context; returns the encrypted sum."""
    if not updates:
        raise HEError("aggregate needs at least one encrypted update")
    envelopes = [_unpack(context, update) for update in updates]
    lengths = {envelope.length for envelope in envelopes}
    if len(lengths) != 1:
        raise LengthMismatchError(
            f"encrypted updates have different lengths {sorted(lengths)}; every hospital must send the full model"
        )
    terms = sum(envelope.terms for envelope in envelopes)
    if terms > context.parameters.max_parties:
        raise ValueRangeError(
            f"a sum of {terms} updates could overflow parameters made for max_parties="
            f"{context.parameters.max_parties}; generate a context with a larger max_parties"
        )
    with _scratch_dir() as scratch:
        total = _load_ciphertexts(context, envelopes[0].chunks, scratch)
        for envelope in envelopes[1:]:
            for accumulated, ciphertext in zip(
                total, _load_ciphertexts(context, envelope.chunks, scratch), strict=True
            ):
                context._evaluator.add_inplace(accumulated, ciphertext)
        chunks = []
        path = scratch / "sum"
        for ciphertext in total:
            ciphertext.save(str(path))
            chunks.append(path.read_bytes())
    return _pack(context, _KIND_SUM, lengths.pop(), terms, chunks)


def decrypt(context: PublicContext | SecretContext, data: bytes) -> npt.NDArray[np.float64]:
    """Decrypt an encrypted update or sum and drop the padding; needs the secret context."""
    if not isinstance(context, SecretContext):
        raise MissingSecretKeyError(
            "this context holds no secret key (it is the aggregator's public context): only hospitals can decrypt"
        )
    envelope = _unpack(context, data)
    half = context.parameters.values_per_ciphertext // 2
    blocks = []
    with _scratch_dir() as scratch:
        for ciphertext in _load_ciphertexts(context, envelope.chunks, scratch):
            plaintext = seal.Plaintext()
            context._decryptor.decrypt(ciphertext, plaintext)
            slots = np.asarray(context._encoder.decode_complex(plaintext), dtype=np.complex128)
            blocks += [slots.real[:half], slots.imag[:half]]
    return np.concatenate(blocks)[: envelope.length]


def encrypt_weighted(context: SecretContext, vector: npt.ArrayLike, weight: float) -> bytes:
    """Encrypt [weight·vector…, weight]: summed by `aggregate`, then read with `decrypt_weighted_average`."""
    if not (math.isfinite(weight) and weight > 0):
        raise ValueRangeError(f"weight must be a finite number > 0 (records / public unit), got {weight!r}")
    values = np.asarray(vector, dtype=np.float64)
    if values.ndim != 1:
        raise ValueRangeError(f"expected a flat vector, got shape {values.shape}")
    return encrypt(context, np.append(weight * values, weight))


def decrypt_weighted_average(context: PublicContext | SecretContext, data: bytes) -> npt.NDArray[np.float64]:
    """Σ weightᵢ·vectorᵢ / Σ weightᵢ from an encrypted sum of `encrypt_weighted` updates."""
    totals = decrypt(context, data)
    total_weight = float(totals[-1])
    if total_weight <= 0:
        raise MalformedCiphertextError(f"decrypted total weight {total_weight:.3g} is not positive: not a weighted sum")
    return totals[:-1] / total_weight
