"""Privacy accounting of one hospital across the rounds of a federated run.

A run of R rounds is one DP-SGD process seen in R slices: its noise multiplier is calibrated once, at the
hospital's first round, so that all R rounds together spend the run's target ε (RDP composition over every
step, far tighter than adding R per-round ε's). Each round then charges the ledger the *increase* of the run's
ε caused by its steps — ε(history + this round) − ε(history) — computed before the round's first step, so a
budget that cannot afford it refuses before anything trains. The noise history (σ, sample rate, steps per
round) is the accountant's memory; it lives in the node's state directory because the ClientApp is a fresh
process for every round. If withdrawals shrink the cohort, the sample rate of later rounds changes and the
history records that exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from opacus.accountants.utils import create_accountant

from privacy.dp import DPConfig, TrainingPlan, plan_training


@dataclass
class RunNoiseHistory:
    """The DP steps one hospital has taken in one run."""

    noise_multiplier: float
    delta: float
    accountant: Literal["rdp", "prv"]
    steps: list[tuple[float, int]] = field(default_factory=list)  # (sample rate, steps) per trained round

    def epsilon(self, extra: tuple[float, int] | None = None) -> float:
        """ε of the run so far, optionally with one more round of `extra` = (sample rate, steps)."""
        entries = [*self.steps, *([extra] if extra else [])]
        if not entries:
            return 0.0
        accountant = create_accountant(mechanism=self.accountant)
        accountant.history = [(self.noise_multiplier, rate, count) for rate, count in entries]
        return float(accountant.get_epsilon(delta=self.delta))

    @classmethod
    def load(cls, path: Path) -> RunNoiseHistory | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["steps"] = [tuple(entry) for entry in raw["steps"]]
        return cls(**raw)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)), encoding="utf-8")
        tmp.replace(path)


def plan_round(config: DPConfig, n_records: int, rounds: int, history: RunNoiseHistory | None) -> tuple[
    TrainingPlan, RunNoiseHistory
]:
    """The plan of this hospital's next round (noise, steps, ε to charge) and the history it starts from.

    `config.epochs` is the number of local epochs per round; the run's σ comes from planning all `rounds`
    rounds at once with today's cohort size.
    """
    round_plan = plan_training(config, n_records)
    if history is None:
        whole_run = plan_training(
            DPConfig(
                target_epsilon=config.target_epsilon,
                target_delta=config.target_delta,
                epochs=config.epochs * rounds,
                max_grad_norm=config.max_grad_norm,
                batch_size=config.batch_size,
                learning_rate=config.learning_rate,
                accountant=config.accountant,
                grad_sample_mode=config.grad_sample_mode,
            ),
            n_records,
        )
        history = RunNoiseHistory(whole_run.noise_multiplier, config.target_delta, config.accountant)
    this_round = (round_plan.sample_rate, round_plan.steps)
    increment = history.epsilon(this_round) - history.epsilon()
    plan = TrainingPlan(
        n_records=n_records,
        sample_rate=round_plan.sample_rate,
        steps=round_plan.steps,
        noise_multiplier=history.noise_multiplier,
        epsilon=increment,
        delta=config.target_delta,
    )
    return plan, history
