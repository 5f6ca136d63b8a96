"""CKKS aggregation: the aggregator adds without any key, hospitals decrypt, and every bad input is named."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privacy import he

PER_CHUNK = he.DEFAULT_PARAMETERS.values_per_ciphertext


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


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:-1], id="last byte cut"),
        pytest.param(lambda b: b[: len(b) // 2], id="cut in half"),
        pytest.param(lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], id="one bit flipped"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"not a ciphertext at all, just some bytes", id="garbage"),
    ],
)
def test_truncated_or_corrupted_bytes_are_refused(
    hospital_context: he.SecretContext, aggregator_context: he.PublicContext, damage: object
) -> None:
    blob = he.encrypt(hospital_context, np.full(10, 0.5))
    damaged = damage(blob)  # type: ignore[operator]
    with pytest.raises(he.CorruptCiphertextError):
        he.aggregate(aggregator_context, [blob, damaged])
    with pytest.raises(he.CorruptCiphertextError):
        he.decrypt(hospital_context, damaged)


def test_corrupted_context_bytes_are_refused(hospital_context: he.SecretContext) -> None:
    data = hospital_context.serialize()
    with pytest.raises(he.CorruptCiphertextError, match="checksum"):
        he.load_context(data[:-3])


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
