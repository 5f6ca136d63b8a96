"""CKKS aggregation: the aggregator adds without any key, hospitals decrypt, and every bad input is named."""

import hashlib
import struct
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privacy import he

PER_CHUNK = he.DEFAULT_PARAMETERS.values_per_ciphertext
WIRE = struct.Struct(">4sBB16sQII")  # the envelope header, as documented in privacy/he.py


@pytest.fixture(scope="module")
def hospital_context() -> he.SecretContext:
    return he.generate_secret_context()


@pytest.fixture(scope="module")
def aggregator_context(hospital_context: he.SecretContext) -> he.PublicContext:
    """What the aggregator holds: the public context, restored from the bytes it was sent."""
    return he.PublicContext.deserialize(hospital_context.public().serialize())


def test_aggregator_context_holds_no_secret_key_and_cannot_decrypt(
    hospital_context: he.SecretContext, aggregator_context: he.PublicContext
) -> None:
    public_bytes = hospital_context.public().serialize()
    secret_bytes = hospital_context.serialize()
    assert len(public_bytes) < 100 < len(secret_bytes), "the public context carries parameters and key id only"
    with pytest.raises(he.MissingSecretKeyError, match="no secret key"):
        he.SecretContext.deserialize(public_bytes)
    total = he.aggregate(aggregator_context, [he.encrypt(hospital_context, np.array([0.25, -0.5]))])
    with pytest.raises(he.MissingSecretKeyError, match="only hospitals can decrypt"):
        he.decrypt(aggregator_context, total)
    with pytest.raises(he.MissingSecretKeyError):
        he.decrypt_weighted_average(aggregator_context, total)


def test_restored_secret_context_decrypts_what_the_original_encrypted(hospital_context: he.SecretContext) -> None:
    restored = he.SecretContext.deserialize(hospital_context.serialize())
    assert restored.fingerprint == hospital_context.fingerprint
    values = np.linspace(-1, 1, 7)
    np.testing.assert_allclose(he.decrypt(restored, he.encrypt(hospital_context, values)), values, atol=1e-5)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    length=st.integers(min_value=1, max_value=2 * PER_CHUNK + 5),
    records=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=10),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_weighted_average_matches_numpy_within_the_measured_bound(
    hospital_context: he.SecretContext,
    aggregator_context: he.PublicContext,
    length: int,
    records: list[int],
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    updates = [rng.uniform(-1, 1, length) for _ in records]
    unit = sum(records)  # a public unit such that the weights sum to 1
    encrypted = [
        he.encrypt_weighted(hospital_context, update, n / unit) for update, n in zip(updates, records, strict=True)
    ]
    average = he.decrypt_weighted_average(hospital_context, he.aggregate(aggregator_context, encrypted))
    assert average.shape == (length,)
    expected = np.average(updates, axis=0, weights=records)
    np.testing.assert_allclose(average, expected, rtol=0, atol=he.MEASURED_SUM_ERROR)


def test_partial_sums_add_up_like_single_updates(
    hospital_context: he.SecretContext, aggregator_context: he.PublicContext
) -> None:
    updates = [np.full(5, 0.1 * k) for k in range(1, 5)]
    blobs = [he.encrypt(hospital_context, update) for update in updates]
    nested = he.aggregate(aggregator_context, [he.aggregate(aggregator_context, blobs[:2]), *blobs[2:]])
    np.testing.assert_allclose(he.decrypt(hospital_context, nested), np.full(5, 1.0), atol=he.MEASURED_SUM_ERROR)


def test_ciphertext_from_another_context_is_refused(
    hospital_context: he.SecretContext, aggregator_context: he.PublicContext
) -> None:
    stranger = he.generate_secret_context()
    foreign = he.encrypt(stranger, np.zeros(3))
    own = he.encrypt(hospital_context, np.zeros(3))
    with pytest.raises(he.ContextMismatchError, match="not this context"):
        he.aggregate(aggregator_context, [own, foreign])
    with pytest.raises(he.ContextMismatchError):
        he.decrypt(hospital_context, foreign)


def test_updates_of_different_lengths_are_refused(
    hospital_context: he.SecretContext, aggregator_context: he.PublicContext
) -> None:
    with pytest.raises(he.LengthMismatchError, match=r"different lengths \[3, 4\]"):
        he.aggregate(aggregator_context, [he.encrypt(hospital_context, np.zeros(n)) for n in (3, 4)])


def _reseal(body: bytes) -> bytes:
    """Bytes with a valid digest: what a faulty (not a noisy) sender would produce."""
    return body + hashlib.blake2b(body, digest_size=16).digest()


def _rebuild(blob: bytes, **fields: int) -> bytes:
    """Re-pack an envelope with some header fields changed, keeping its chunk table and chunks, with a valid digest."""
    names = ("magic", "version", "kind", "fingerprint", "length", "terms", "chunks")
    header = dict(zip(names, WIRE.unpack_from(blob), strict=True))
    header.update(fields)
    return _reseal(WIRE.pack(*header.values()) + blob[WIRE.size : -16])


def _flip(blob: bytes, position: int) -> bytes:
    return blob[:position] + bytes([blob[position] ^ 0x01]) + blob[position + 1 :]


def _chunk_table(blob: bytes) -> tuple[int, list[int]]:
    n_chunks = WIRE.unpack_from(blob)[-1]
    return n_chunks, list(struct.unpack_from(f">{n_chunks}I", blob, WIRE.size))


def _replace_chunks(blob: bytes, chunks: list[bytes]) -> bytes:
    header = blob[: WIRE.size - 4] + struct.pack(">I", len(chunks))
    return _reseal(header + struct.pack(f">{len(chunks)}I", *map(len, chunks)) + b"".join(chunks))


def _foreign_seal_chunk(blob: bytes) -> bytes:
    """A well-formed SEAL ciphertext of other parameters in this context's envelope (its digest valid)."""
    other = he.generate_secret_context(
        he.CKKSParameters(poly_modulus_degree=1024, coeff_mod_bit_sizes=(27,), scale_bits=20)
    )
    n_chunks, sizes = _chunk_table(other_blob := he.encrypt(other, np.full(10, 0.5)))
    return _replace_chunks(blob, [other_blob[WIRE.size + 4 * n_chunks : WIRE.size + 4 * n_chunks + sizes[0]]])


# Each damage, the error type it must raise and the words that name its cause (so that a sender can fix it).
DAMAGES = [
    pytest.param(
        lambda b: b[:-1], he.TruncatedCiphertextError, r"truncated: \d+ bytes, its header declares", id="last byte cut"
    ),
    pytest.param(lambda b: b[: len(b) // 2], he.TruncatedCiphertextError, "truncated", id="cut in half"),
    pytest.param(lambda b: b[:56], he.TruncatedCiphertextError, "table of 1 chunk sizes", id="cut in the chunk table"),
    pytest.param(lambda b: b[:20], he.TruncatedCiphertextError, "shorter than the 54-byte header", id="cut in header"),
    pytest.param(lambda b: b"", he.TruncatedCiphertextError, "0 bytes", id="empty"),
    pytest.param(lambda b: _flip(b, 100), he.ChecksumMismatchError, "checksum mismatch.*altered", id="bit flipped"),
    pytest.param(lambda b: _flip(b, len(b) - 1), he.ChecksumMismatchError, "checksum", id="digest bit flipped"),
    pytest.param(lambda b: b + b"\0", he.MalformedCiphertextError, "trailing bytes", id="byte appended"),
    pytest.param(
        lambda b: b"not a ciphertext at all, just some bytes", he.NotACiphertextError, "not a CareFed", id="garbage"
    ),
    pytest.param(lambda b: _reseal(b"CFCX" + b[4:-16]), he.NotACiphertextError, "expected b'CFHE'", id="bad magic"),
    pytest.param(lambda b: _rebuild(b, version=2), he.NotACiphertextError, "version 2 is not supported", id="version"),
    pytest.param(lambda b: _rebuild(b, kind=7), he.MalformedCiphertextError, "kind 7", id="unknown kind"),
    pytest.param(lambda b: _rebuild(b, terms=0), he.MalformedCiphertextError, "0 summed updates", id="no terms"),
    pytest.param(lambda b: _rebuild(b, terms=3), he.MalformedCiphertextError, "kind 1 with 3", id="update terms"),
    pytest.param(
        lambda b: _rebuild(b, kind=2, terms=17), he.ValueRangeError, "17 updates exceeds max_parties=16", id="terms"
    ),
    pytest.param(
        lambda b: _rebuild(b, length=10 * PER_CHUNK),
        he.MalformedCiphertextError,
        "1 chunks does not match the declared 20480 values",
        id="length beyond the chunks",
    ),
    pytest.param(
        lambda b: _rebuild(b, length=2**63),
        he.MalformedCiphertextError,
        "declared 9223372036854775808",
        id="huge length",
    ),
    pytest.param(lambda b: _rebuild(b, length=0), he.MalformedCiphertextError, "declared 0 values", id="zero length"),
    pytest.param(
        lambda b: _rebuild(b, chunks=2**32 - 1), he.TruncatedCiphertextError, "table of 4294967295", id="chunk count"
    ),
    pytest.param(
        lambda b: _replace_chunks(b, [b"\x5e\xa1" + bytes(200)]),
        he.MalformedCiphertextError,
        "SEAL cannot load chunk 0",
        id="chunk not SEAL",
    ),
    pytest.param(_foreign_seal_chunk, he.MalformedCiphertextError, "SEAL cannot load chunk 0", id="SEAL other params"),
]


@pytest.mark.parametrize(("damage", "error", "message"), DAMAGES)
def test_each_kind_of_damaged_bytes_is_refused_with_its_own_error(
    hospital_context: he.SecretContext,
    aggregator_context: he.PublicContext,
    damage: Callable[[bytes], bytes],
    error: type[he.HEError],
    message: str,
) -> None:
    blob = he.encrypt(hospital_context, np.full(10, 0.5))
    damaged = damage(blob)
    with pytest.raises(error, match=message) as refused_by_aggregator:
        he.aggregate(aggregator_context, [blob, damaged])
    with pytest.raises(error, match=message) as refused_by_hospital:
        he.decrypt(hospital_context, damaged)
    # The exact type, not a sibling: each cause is told apart from the others.
    assert type(refused_by_aggregator.value) is type(refused_by_hospital.value) is error


def test_damage_to_a_context_is_named(hospital_context: he.SecretContext) -> None:
    secret = hospital_context.serialize()
    public = hospital_context.public().serialize()
    with pytest.raises(he.ChecksumMismatchError, match="checksum mismatch"):
        he.load_context(secret[:-3])  # a secret key's length is not declared: the digest catches the cut
    with pytest.raises(he.TruncatedCiphertextError, match="truncated"):
        he.load_context(public[:-1])
    with pytest.raises(he.NotACiphertextError, match="not a CareFed context"):
        he.load_context(b"{'not': 'a context'}" * 5)
    with pytest.raises(he.ChecksumMismatchError):
        he.load_context(_flip(secret, len(secret) // 2))
    with pytest.raises(he.MalformedCiphertextError, match="SEAL cannot load the secret key"):
        he.load_context(_reseal(secret[: -16 - 40] + bytes(40)))
    with pytest.raises(he.MalformedCiphertextError, match="unknown kind 9"):
        he.load_context(_reseal(public[:5] + b"\x09" + public[6:-16]))


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (np.array([0.0, np.nan]), "NaN"),
        (np.array([1e6]), "exceeds"),
        (np.zeros((2, 2)), "flat"),
        (np.array([]), "non-empty"),
    ],
)
def test_values_that_cannot_be_summed_safely_are_refused(
    hospital_context: he.SecretContext, vector: np.ndarray, message: str
) -> None:
    with pytest.raises(he.ValueRangeError, match=message):
        he.encrypt(hospital_context, vector)


def test_sums_beyond_max_parties_are_refused(hospital_context: he.SecretContext) -> None:
    small = he.SecretContext(
        he.CKKSParameters(poly_modulus_degree=1024, coeff_mod_bit_sizes=(27,), scale_bits=20, max_parties=2),
        key_id=b"k" * 16,
    )
    blob = he.encrypt(small, np.zeros(2))
    with pytest.raises(he.ValueRangeError, match="max_parties=2"):
        he.aggregate(small.public(), [blob, blob, blob])


def test_insecure_parameters_are_refused() -> None:
    with pytest.raises(he.ParameterError, match="128-bit security"):
        he.CKKSParameters(poly_modulus_degree=2048, coeff_mod_bit_sizes=(60,), scale_bits=40)
    with pytest.raises(he.ParameterError, match="power of two"):
        he.CKKSParameters(poly_modulus_degree=3000, coeff_mod_bit_sizes=(30,), scale_bits=20)
