"""Differentially private cohort statistics: the Gaussian mechanism, its ε, and exact sums of CKKS-encrypted totals.

Why the Gaussian mechanism (not Laplace or the discrete Gaussian): a query's ε is charged on the ledger and
recomputed there by CareFed's one accountant, the RDP accountant that also prices DP-SGD. A Gaussian release of
a vector whose L2 sensitivity is Δ, with noise σ = z·Δ, is exactly one DP-SGD step at sample rate 1 and noise
multiplier z, so the contract recomputes a query's ε with the code it already runs, and a query composes with
the training runs of the same purpose under one rule. The discrete Gaussian would remove the floating-point
attack surface of continuous noise, but CKKS sums are approximate reals anyway, and every released value is
rounded by the caller before it is shown.

Every hospital adds the full noise for its own ε to its own statistic: the hospitals do not trust each other, and
any coalition of the others can subtract their own contributions from the decrypted total. So a consortium total
over H hospitals carries noise of standard deviation σ·√H, and its 95 % interval is ±1.96·σ·√H.

A query runs in two phases so that the small-cell rule cannot itself leak: first the cohort's (stratified) counts,
then, only if the noisy count reaches the declared minimum, the statistic. The query's ε is split between the
two in RDP: 1/z² = 1/z_count² + 1/z_statistic², so both phases together spend exactly the query's ε and a
suppressed query has spent only the count's share.

CKKS (privacy.he) decodes |value| ≤ 1 per party, with an absolute error of ~1e-4. Totals are counts and sums in
the thousands, so each value v is sent as two limbs, v = UNIT·a + b with a = round(v / UNIT): a/HIGH_UNIT is
summed and rounded back to an integer (exact while HIGH_UNIT·error < ½), b/UNIT carries the remainder with an
error of UNIT·1e-4 ≈ 0.4 — far below the DP noise of any ε this module calibrates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from privacy.accountant import ACCOUNTANT, ACCOUNTANT_VERSION, AccountingError, calibrate_noise, epsilon_of

#: z of the two limbs: |b| ≤ UNIT/2 and |a| ≤ HIGH_UNIT keep both within CKKS' |value| ≤ 1 per party.
UNIT = 4096.0
HIGH_UNIT = 2048.0
#: The largest |total| a hospital may send per value (UNIT·HIGH_UNIT); counts of a cohort of 8 million patients.
MAX_TOTAL = UNIT * HIGH_UNIT
Z_95 = 1.959963984540054


class QueryPrivacyError(ValueError):
    """A query's privacy parameters cannot be honoured; the message names the parameter and the fix."""


@dataclass(frozen=True)
class PhaseNoise:
    """The noise of one phase: σ = `noise_multiplier` · `sensitivity` on every released value."""

    noise_multiplier: float
    sensitivity: float

    @property
    def sigma(self) -> float:
        return self.noise_multiplier * self.sensitivity

    def mechanism(self, delta: float) -> dict[str, Any]:
        """The phase as a budget charge records it (`PrivacyBudgetContract:charge_budget`'s mechanism): one
        Gaussian release is one step at sample rate 1, and the L2 sensitivity is the clipping norm."""
        return {
            "accountant": ACCOUNTANT,
            "accountant_version": ACCOUNTANT_VERSION,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": 1.0,
            "steps": 1,
            "max_grad_norm": self.sensitivity,
            "delta": delta,
        }


def split_noise(epsilon: float, delta: float, count_share: float) -> tuple[float, float]:
    """(z of the count phase, z of the statistic phase) spending `epsilon` together, the count taking
    `count_share` of the RDP budget; a count-only query passes `count_share` = 1 and gets (z, inf)."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise QueryPrivacyError(f"epsilon: must be a finite number > 0, got {epsilon!r}")
    if not 0 < count_share <= 1:
        raise QueryPrivacyError(f"count_share: must be in (0, 1], got {count_share!r}")
    try:
        z = calibrate_noise(epsilon, [], 1.0, 1, delta)
    except AccountingError as exc:
        raise QueryPrivacyError(f"epsilon: {exc}") from exc
    count_z = z / math.sqrt(count_share)
    statistic_z = math.inf if count_share == 1 else z / math.sqrt(1 - count_share)
    return count_z, statistic_z


def phase_epsilons(count_z: float, statistic_z: float, delta: float) -> tuple[float, float]:
    """The ε each phase is charged: ε(count), then ε(count + statistic) − ε(count), as the contract recomputes."""
    count = epsilon_of([(count_z, 1.0, 1)], delta)
    if math.isinf(statistic_z):
        return count, 0.0
    return count, max(epsilon_of([(count_z, 1.0, 1), (statistic_z, 1.0, 1)], delta) - count, 0.0)


def add_noise(values: npt.ArrayLike, sigma: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """`values` plus independent N(0, σ²) noise on every entry."""
    exact = np.asarray(values, dtype=np.float64)
    return exact + rng.normal(0.0, sigma, size=exact.shape)


def interval_halfwidth(sigma: float, hospitals: int) -> float:
    """Half-width of the 95 % interval of a consortium total to which `hospitals` each added N(0, σ²)."""
    return Z_95 * sigma * math.sqrt(hospitals)


def to_limbs(totals: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """[a/HIGH_UNIT…, b/UNIT…] with total = UNIT·a + b: what a hospital encrypts (see the module doc)."""
    values = np.asarray(totals, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise QueryPrivacyError("totals: NaN or infinite values cannot be sent")
    if values.size and float(np.max(np.abs(values))) > MAX_TOTAL:
        raise QueryPrivacyError(f"totals: |value| above {MAX_TOTAL:.0f} cannot be sent; split the cohort")
    high = np.round(values / UNIT)
    return np.concatenate([high / HIGH_UNIT, (values - UNIT * high) / UNIT])


def from_limbs(summed: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The totals from a decrypted sum of `to_limbs` vectors (the high limb rounded back to an integer)."""
    values = np.asarray(summed, dtype=np.float64)
    half = values.size // 2
    return UNIT * np.round(values[:half] * HIGH_UNIT) + UNIT * values[half:]


def quantiles_from_histogram(
    edges: npt.ArrayLike, counts: npt.ArrayLike, probabilities: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Quantiles read off a (noisy) histogram by linear interpolation within bins — post-processing, no ε.

    Negative noisy counts are set to 0 first; an empty histogram has no quantiles (NaN).
    """
    bounds = np.asarray(edges, dtype=np.float64)
    mass = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)
    wanted = np.asarray(probabilities, dtype=np.float64)
    total = float(mass.sum())
    if total <= 0:
        return np.full(wanted.shape, np.nan)
    cumulative = np.concatenate([[0.0], np.cumsum(mass) / total])
    return np.asarray(np.interp(wanted, cumulative, bounds), dtype=np.float64)
