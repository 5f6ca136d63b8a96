"""Privacy accounting of one hospital across the rounds of a federated run.

A run of R rounds is one DP-SGD process seen in R slices, accounted with RDP composition over every step (far
tighter than adding R per-round ε's) by CareFed's one accountant, `privacy.accountant.RdpAccountant`. Before each
round the hospital calibrates the noise multiplier so that the steps already taken plus this round and the
rounds still to come, at today's cohort size, spend exactly the run's target ε; with an unchanged cohort that is
the same multiplier every round. When withdrawals shrink the cohort, the Poisson sample rate of the later rounds
rises and the noise rises with it, so the run still stays within its target. The round then charges the ledger
the *increase* of the run's ε caused by its own steps, ε(history + this round) - ε(history), known before its
first step, so a budget that cannot afford it refuses before anything trains.

The history is the hospital's earlier charges of the run on the ledger (each records its mechanism), so the
hospital plans with exactly the history the contract recomputes the charge from: no local file can drift from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from privacy.accountant import ACCOUNTANT, ACCOUNTANT_VERSION, AccountingError, RdpAccountant, calibrate_noise
from privacy.dp import DPConfig, PrivacyConfigError, TrainingPlan, planned_sampling


def accountant_of_charges(charges: Iterable[dict[str, Any]]) -> RdpAccountant:
    """The run's accountant rebuilt from its ledger charges (`list_budget_charges` rows of one run), in round order."""
    accountant = RdpAccountant()
    for charge in sorted(charges, key=lambda c: int(c["round"])):
        mechanism = charge["mechanism"]
        accountant.step(mechanism["noise_multiplier"], mechanism["sample_rate"], int(mechanism["steps"]))
    return accountant


def mechanism_of(plan: TrainingPlan, max_grad_norm: float) -> dict[str, Any]:
    """What a budget charge records so that anyone can recompute its ε (PrivacyBudgetContract:charge_budget)."""
    return {
        "accountant": ACCOUNTANT,
        "accountant_version": ACCOUNTANT_VERSION,
        "noise_multiplier": plan.noise_multiplier,
        "sample_rate": plan.sample_rate,
        "steps": plan.steps,
        "max_grad_norm": max_grad_norm,
        "delta": plan.delta,
    }


def plan_round(
    config: DPConfig, n_records: int, rounds_left: int, accountant: RdpAccountant | None
) -> tuple[TrainingPlan, RdpAccountant]:
    """The plan of this hospital's next round (noise, steps, ε to charge) and the accountant it continues.

    `config.epochs` is the number of local epochs per round and `config.target_epsilon` the whole run's ε;
    `rounds_left` counts this round and those still to come.
    """
    accountant = accountant or RdpAccountant()
    delta = config.target_delta
    sample_rate, steps = planned_sampling(config, n_records)
    try:
        noise = calibrate_noise(
            config.target_epsilon, accountant.history, sample_rate, steps * max(rounds_left, 1), delta
        )
    except AccountingError as exc:
        raise PrivacyConfigError(str(exc)) from exc
    increment = accountant.epsilon_increment((noise, sample_rate, steps), delta)
    return TrainingPlan(n_records, sample_rate, steps, noise, increment, delta), accountant
