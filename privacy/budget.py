"""A hospital's cumulative privacy budget: ε spent across training runs, checked before a run starts.

Why a separate, I/O-free value object: the budget must be charged by the node that trains, recorded on the ledger
by another component and restored from it on restart. So the state goes in and out as a plain dict
(`to_state` / `from_state`) and persistence is the caller's business.

Composition is basic sequential composition (ε and δ of successive runs add up). It is loose but always valid,
whatever the runs' mechanisms were; a tighter accountant across runs would need every run's noise history.

API
---
- `PrivacyBudget(hospital, epsilon_limit, epsilon_spent=0.0, delta_spent=0.0, runs=0)` (frozen).
- `budget.ensure_affordable(epsilon_requested)` applies CareFed's one budget rule (`privacy.accountant.fits_budget`,
  the rule the ledger contract applies too) and raises `BudgetExceededError` naming the hospital, the ε spent,
  the ε requested and the limit. Call it with the ε a run *will* spend (`privacy.dp.plan_training`) before the
  first step; `privacy.dp.PrivateTrainer.train` does.
- `budget.charge(epsilon, delta)` returns the new budget (after the same check).
- `budget.to_state()` / `PrivacyBudget.from_state(state)` round-trip through JSON-compatible dicts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from privacy.accountant import fits_budget


class BudgetExceededError(RuntimeError):
    """Training would spend more ε than the hospital's limit allows; nothing was trained."""

    def __init__(self, hospital: str, epsilon_spent: float, epsilon_requested: float, epsilon_limit: float) -> None:
        self.hospital = hospital
        self.epsilon_spent = epsilon_spent
        self.epsilon_requested = epsilon_requested
        self.epsilon_limit = epsilon_limit
        super().__init__(
            f"privacy budget of hospital {hospital!r} exceeded: ε spent {epsilon_spent:.4f} + ε requested "
            f"{epsilon_requested:.4f} > limit {epsilon_limit:.4f}; lower the run's target ε to at most "
            f"{max(epsilon_limit - epsilon_spent, 0.0):.4f} or raise the hospital's limit"
        )


def check_finite_number(
    name: str, value: object, *, allow_zero: bool = False, error: type[ValueError] = ValueError
) -> None:
    """Raise `error` naming `name` unless `value` is a finite real number > 0 (≥ 0 with `allow_zero`)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not (is_number and (value >= 0 if allow_zero else value > 0)):  # type: ignore[operator]
        raise error(f"{name} must be a finite number {'≥' if allow_zero else '>'} 0, got {value!r}")


@dataclass(frozen=True)
class PrivacyBudget:
    """The ε (and δ) one hospital has spent so far, against its ε limit."""

    hospital: str
    epsilon_limit: float
    epsilon_spent: float = 0.0
    delta_spent: float = 0.0
    runs: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.hospital, str) or not self.hospital.strip():
            raise ValueError(f"hospital must be a non-empty name, got {self.hospital!r}")
        check_finite_number("epsilon_limit", self.epsilon_limit)
        check_finite_number("epsilon_spent", self.epsilon_spent, allow_zero=True)
        check_finite_number("delta_spent", self.delta_spent, allow_zero=True)
        if not isinstance(self.runs, int) or self.runs < 0:
            raise ValueError(f"runs must be an integer ≥ 0, got {self.runs!r}")

    @property
    def epsilon_remaining(self) -> float:
        """ε still available (never negative)."""
        return max(self.epsilon_limit - self.epsilon_spent, 0.0)

    def ensure_affordable(self, epsilon_requested: float) -> None:
        """Raise `BudgetExceededError` if spending `epsilon_requested` more would pass the limit."""
        check_finite_number("epsilon_requested", epsilon_requested)
        if not fits_budget(self.epsilon_spent, epsilon_requested, self.epsilon_limit):
            raise BudgetExceededError(self.hospital, self.epsilon_spent, epsilon_requested, self.epsilon_limit)

    def charge(self, epsilon: float, delta: float) -> PrivacyBudget:
        """Return the budget after one more run that spent (`epsilon`, `delta`)."""
        self.ensure_affordable(epsilon)
        check_finite_number("delta", delta, allow_zero=True)
        return replace(
            self,
            epsilon_spent=self.epsilon_spent + epsilon,
            delta_spent=self.delta_spent + delta,
            runs=self.runs + 1,
        )

    def to_state(self) -> dict[str, Any]:
        """A JSON-compatible snapshot, for the ledger or a file."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PrivacyBudget:
        """Restore a budget from `to_state`'s output; unknown or missing fields are an error naming them."""
        expected = {"hospital", "epsilon_limit", "epsilon_spent", "delta_spent", "runs"}
        unknown = set(state) - expected
        missing = {"hospital", "epsilon_limit"} - set(state)
        if unknown or missing:
            raise ValueError(
                f"invalid privacy-budget state: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}"
            )
        return cls(**state)
