"""Differentially private local training (DP-SGD) of a binary classifier over Opacus.

Why a wrapper: every hospital run must (1) validate its data and (ε, δ) before touching the model, (2) know the ε
it will spend *before* the first step so the hospital's budget can refuse it, and (3) spend exactly that ε. So the
noise multiplier is calibrated once (`plan_training`), the accountant is asked for the ε of that noise over the
planned number of Poisson-sampled steps, and the run then uses that very noise multiplier.

API
---
- `DPConfig(target_epsilon, target_delta, epochs=1, max_grad_norm=1.0, batch_size=64, learning_rate=0.05,
  accountant="rdp" | "prv", grad_sample_mode=DEFAULT_GRAD_SAMPLE_MODE)` — frozen, validated on construction.
- `plan_training(config, n_records) -> TrainingPlan` (sample rate, steps, noise multiplier, the ε the run will
  spend, δ); `planned_epsilon(config, n_records) -> float` is its ε; `planned_sampling(config, n_records)` its
  sample rate and step count alone (cheap: no noise calibration). Raises `PrivacyConfigError` if δ ≥ 1/n.
- `validate_training_data(features, labels, delta)` raises `TrainingDataError` / `PrivacyConfigError` for empty,
  non-finite, mis-shaped or single-class data and δ ≥ 1/n.
- `PrivateTrainer(model, features, labels, config, plan=None)` wraps the model, an Adam optimiser and a
  Poisson-sampled loader in one Opacus `PrivacyEngine`; `.plan` is known at construction. A caller that accounts
  across several trainings (one federated run = many rounds, `hospital_node/dp_rounds.py`) passes its own `plan`:
  its noise multiplier is used and its ε is what the budget is charged (the run's ε increment, not this slice's
  stand-alone ε). `.train(budget)` first calls
  `budget.ensure_affordable(plan.epsilon)` (raising `privacy.budget.BudgetExceededError` before any step), then
  trains and returns `(TrainingResult, charged_budget)`. The model passed in is trained in place and is left
  free of Opacus hooks, so it can be read with `privacy.model.parameters_to_vector` and reused next round.
- `TrainingResult`: ε and δ spent, noise multiplier, steps, mean loss, `epoch_seconds` (for round timings) and
  `epoch_cpu_seconds` (this process's CPU time per epoch: a cost that other load on the machine does not inflate).
- Accountant "rdp" is `privacy.accountant` (numpy only, the one the ledger recomputes charges with); "prv" is
  Opacus' PRV accountant.
- Labels are 0/1; the model returns one logit per row (`privacy.model.demo_mlp`). Small models train fastest
  with `torch.set_num_threads(1)` (docs/privacy.md has the measurements).

Per-sample-gradient modes (`GRAD_SAMPLE_MODES`): "hooks", "functorch", "ew" (expanded weights), "ghost" (Opacus'
ghost clipping, two backward passes) and "ghost-bk" (book-keeping ghost clipping in one backward pass,
`privacy/bookkeeping.py`; a model with a trainable layer that is not an `nn.Linear` falls back to "ghost" with a
warning naming the layer) all compute exact per-sample clipping; `bench/dp.py` measures them and the fastest on the
demo MLP is `DEFAULT_GRAD_SAMPLE_MODE`. `make_private(engine, model, optimizer, criterion, loader, ...)` wraps for
any of them and returns the `PrivateTraining` (module, DP optimiser, criterion, loader) to train with; its
`.cleanup()` leaves the model free of hooks.

Opacus runs without its cryptographically secure RNG here (`secure_mode=False`, torchcsprng is not installed): fine
for the demo, a production deployment should install it.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import create_accountant, get_noise_multiplier
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privacy.accountant import calibrate_noise, epsilon_of
from privacy.bookkeeping import BookkeepingLoss, bookkeeping_blocker
from privacy.budget import PrivacyBudget, check_finite_number

Accountant = Literal["rdp", "prv"]
GradSampleMode = Literal["hooks", "functorch", "ew", "ghost", "ghost-bk"]
ACCOUNTANTS: tuple[Accountant, ...] = get_args(Accountant)
GRAD_SAMPLE_MODES: tuple[GradSampleMode, ...] = get_args(GradSampleMode)
# Fastest exact mode on the demo MLP, measured by bench/dp.py (see its --json output).
DEFAULT_GRAD_SAMPLE_MODE: GradSampleMode = "ghost-bk"


class PrivacyConfigError(ValueError):
    """The (ε, δ) or training settings cannot give the promised guarantee."""


class TrainingDataError(ValueError):
    """The training data cannot be trained on (empty, mis-shaped, non-finite, single-class)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise PrivacyConfigError(message)


@dataclass(frozen=True)
class DPConfig:
    """One hospital run's DP-SGD settings."""

    target_epsilon: float
    target_delta: float
    epochs: int = 1
    max_grad_norm: float = 1.0
    batch_size: int = 64
    learning_rate: float = 0.05
    accountant: Accountant = "rdp"
    grad_sample_mode: GradSampleMode = DEFAULT_GRAD_SAMPLE_MODE

    def __post_init__(self) -> None:
        for name in ("target_epsilon", "max_grad_norm", "learning_rate"):
            check_finite_number(name, getattr(self, name), error=PrivacyConfigError)
        check_finite_number("target_delta", self.target_delta, error=PrivacyConfigError)
        _require(self.target_delta < 1, f"target_delta must lie in (0, 1) and below 1/n, got {self.target_delta!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, f"{name} must be an integer ≥ 1, got {value!r}")
        _require(self.accountant in ACCOUNTANTS, f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
        _require(
            self.grad_sample_mode in GRAD_SAMPLE_MODES,
            f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {self.grad_sample_mode!r}",
        )


@dataclass(frozen=True)
class TrainingPlan:
    """What a run will do and spend, known before its first step."""

    n_records: int
    sample_rate: float
    steps: int
    noise_multiplier: float
    epsilon: float
    delta: float


@dataclass(frozen=True)
class TrainingResult:
    """What a finished run did and spent."""

    epsilon: float
    delta: float
    noise_multiplier: float
    steps: int
    epochs: int
    mean_loss: float
    n_records: int
    accountant: Accountant
    grad_sample_mode: GradSampleMode
    epoch_seconds: tuple[float, ...]
    epoch_cpu_seconds: tuple[float, ...] = ()


def _check_delta(delta: float, n_records: int) -> None:
    _require(n_records >= 1, f"n_records must be ≥ 1, got {n_records}")
    _require(
        delta < 1 / n_records,
        f"target_delta δ={delta:g} must be < 1/n = {1 / n_records:.3g} for n={n_records} training records "
        f"(δ is the probability the guarantee fails; δ ≥ 1/n would allow leaking a whole record); "
        f"choose δ ≤ {1 / (10 * n_records):.3g}",
    )


def _epsilon_spent(ledger: Any, accountant: Accountant, delta: float) -> float:
    """ε of the steps an Opacus accountant has recorded, computed exactly as planning does.

    RDP goes through CareFed's own accountant (`privacy.accountant`, the one the ledger recomputes charges
    with); PRV through Opacus'.
    """
    if accountant == "rdp":
        return epsilon_of(ledger.history, delta)
    return float(ledger.get_epsilon(delta=delta))


def _epsilon_of(accountant: Accountant, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε of `steps` Poisson-sampled Gaussian steps under `accountant`."""
    ledger = create_accountant(mechanism=accountant)
    ledger.history = [(noise_multiplier, sample_rate, steps)]
    return _epsilon_spent(ledger, accountant, delta)


def _calibrate(config: DPConfig, sample_rate: float, steps: int) -> float:
    """The noise multiplier that spends the target ε over `steps` steps."""
    if config.accountant == "rdp":
        return calibrate_noise(config.target_epsilon, [], sample_rate, steps, config.target_delta)
    return float(
        get_noise_multiplier(
            target_epsilon=config.target_epsilon,
            target_delta=config.target_delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=config.accountant,
        )
    )


def _steps_per_epoch(n_records: int, batch_size: int) -> tuple[float, int]:
    # Mirrors opacus.data_loader.DPDataLoader: sample rate 1/len(loader), int(1/sample_rate) batches per epoch.
    sample_rate = 1 / math.ceil(n_records / batch_size)
    return sample_rate, int(1 / sample_rate)


@functools.lru_cache(maxsize=256)
def plan_training(config: DPConfig, n_records: int) -> TrainingPlan:
    """Calibrate the noise for (ε, δ) over the run's steps and return the ε the run will actually spend.

    Cached: calibration takes a fraction of a second (RDP) to seconds (PRV's convolutions), and a federated run
    asks for the same plan every round.
    """
    _check_delta(config.target_delta, n_records)
    sample_rate, steps_per_epoch = _steps_per_epoch(n_records, config.batch_size)
    steps = steps_per_epoch * config.epochs
    noise_multiplier = _calibrate(config, sample_rate, steps)
    epsilon = _epsilon_of(config.accountant, noise_multiplier, sample_rate, steps, config.target_delta)
    return TrainingPlan(n_records, sample_rate, steps, noise_multiplier, epsilon, config.target_delta)


def planned_sampling(config: DPConfig, n_records: int) -> tuple[float, int]:
    """The Poisson sample rate and step count of a run over `n_records`, without calibrating any noise."""
    sample_rate, steps_per_epoch = _steps_per_epoch(n_records, config.batch_size)
    return sample_rate, steps_per_epoch * config.epochs


def planned_epsilon(config: DPConfig, n_records: int) -> float:
    """The ε a run with `config` over `n_records` records will spend."""
    return plan_training(config, n_records).epsilon


def validate_training_data(features: npt.ArrayLike, labels: npt.ArrayLike, delta: float) -> None:
    """Raise a clear error if (features, labels) cannot be trained on under δ."""
    x = np.asarray(features)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise TrainingDataError(f"features must be a non-empty 2-D array (records x features), got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise TrainingDataError(f"labels must be a 1-D array with one label per record ({x.shape[0]}), got {y.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise TrainingDataError("features must be finite numbers (no NaN, no infinity); impute or drop those records")
    classes = set(np.unique(y).tolist())
    if not classes <= {0, 1}:
        raise TrainingDataError(f"labels must be 0 or 1, got values {sorted(classes)[:5]}")
    if len(classes) < 2:
        raise TrainingDataError(
            f"labels hold a single class ({classes.pop()}) across {x.shape[0]} records: a classifier needs both "
            "classes; add records of the other class or leave this hospital out of the run"
        )
    _check_delta(delta, x.shape[0])


@dataclass(frozen=True)
class PrivateTraining:
    """What to train with once Opacus has wrapped a model: module, DP optimiser, criterion and Poisson loader."""

    module: Any
    optimizer: Any
    criterion: Any
    loader: DataLoader[Any]

    def cleanup(self) -> None:
        """Leave the model free of Opacus' and book-keeping's hooks: federated runs train it again next round."""
        if isinstance(self.criterion, BookkeepingLoss):
            self.criterion.close()
        self.module.cleanup()


def make_private(
    engine: PrivacyEngine,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    loader: DataLoader[Any],
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    grad_sample_mode: GradSampleMode,
    poisson_sampling: bool = True,
) -> PrivateTraining:
    """`engine.make_private` in any of `GRAD_SAMPLE_MODES`, returning the criterion to train with too.

    The ghost modes clip inside the loss's `backward()`, so their criterion is Opacus' (or book-keeping's) wrapper;
    the others keep `criterion`. "ghost-bk" is Opacus' ghost set-up (same loader, optimiser, noise and accountant)
    with `BookkeepingLoss` as criterion, or plain "ghost" with a warning for a model book-keeping cannot clip.
    """
    blocker = bookkeeping_blocker(model) if grad_sample_mode == "ghost-bk" else None
    if blocker is not None:
        warnings.warn(
            f"grad_sample_mode 'ghost-bk' falls back to Opacus' 'ghost' (two backward passes): {blocker}", stacklevel=2
        )
    opacus_mode = "ghost" if grad_sample_mode == "ghost-bk" else grad_sample_mode
    private: Any = engine.make_private(
        module=model,
        optimizer=optimizer,
        criterion=criterion,
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        grad_sample_mode=opacus_mode,
        poisson_sampling=poisson_sampling,
    )
    if opacus_mode != "ghost":
        module, dp_optimizer, dp_loader = private
        return PrivateTraining(module, dp_optimizer, criterion, dp_loader)
    module, dp_optimizer, dp_criterion, dp_loader = private
    if grad_sample_mode == "ghost-bk" and blocker is None:
        dp_criterion = BookkeepingLoss(module, dp_optimizer, dp_criterion.criterion, dp_criterion.loss_reduction)
    return PrivateTraining(module, dp_optimizer, dp_criterion, dp_loader)


class PrivateTrainer:
    """One DP-SGD run: model, optimiser and Poisson-sampled loader wrapped by one Opacus `PrivacyEngine`."""

    def __init__(
        self,
        model: nn.Module,
        features: npt.ArrayLike,
        labels: npt.ArrayLike,
        config: DPConfig,
        plan: TrainingPlan | None = None,
    ) -> None:
        validate_training_data(features, labels, config.target_delta)
        self.model = model
        self.config = config
        self._dataset = TensorDataset(
            torch.as_tensor(np.asarray(features), dtype=torch.float32),
            torch.as_tensor(np.asarray(labels), dtype=torch.float32),
        )
        self._external_plan = plan is not None
        self.plan = plan if plan is not None else plan_training(config, len(self._dataset))
        _require(
            self.plan.n_records == len(self._dataset) and self.plan.delta == config.target_delta,
            f"plan is for n={self.plan.n_records}, δ={self.plan.delta:g} but the data has n={len(self._dataset)} "
            f"and the config δ={config.target_delta:g}",
        )

    def train(self, budget: PrivacyBudget) -> tuple[TrainingResult, PrivacyBudget]:
        """Refuse if `budget` cannot afford the plan, else train and return the result and the charged budget."""
        budget.ensure_affordable(self.plan.epsilon)
        with warnings.catch_warnings():
            # Opacus warns on every engine that secure RNG is off; the module docstring says why and what to do.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant=self.config.accountant)
        loader = DataLoader(self._dataset, batch_size=self.config.batch_size)
        self.model.train()  # Opacus refuses modules in eval mode (e.g. after predict_proba)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.learning_rate)
        criterion = nn.BCEWithLogitsLoss()
        private = make_private(
            engine,
            self.model,
            optimizer,
            criterion,
            loader,
            noise_multiplier=self.plan.noise_multiplier,
            max_grad_norm=self.config.max_grad_norm,
            grad_sample_mode=self.config.grad_sample_mode,
        )
        try:
            mean_loss, epoch_seconds, epoch_cpu_seconds = self._run_epochs(
                private.module, private.optimizer, private.criterion, private.loader
            )
        finally:
            private.cleanup()
        epsilon = _epsilon_spent(engine.accountant, self.config.accountant, self.plan.delta)
        result = TrainingResult(
            epsilon=epsilon,
            delta=self.plan.delta,
            noise_multiplier=self.plan.noise_multiplier,
            steps=self.plan.steps,
            epochs=self.config.epochs,
            mean_loss=mean_loss,
            n_records=self.plan.n_records,
            accountant=self.config.accountant,
            grad_sample_mode=self.config.grad_sample_mode,
            epoch_seconds=epoch_seconds,
            epoch_cpu_seconds=epoch_cpu_seconds,
        )
        charged = self.plan.epsilon if self._external_plan else epsilon
        return result, budget.charge(charged, self.plan.delta)

    def _run_epochs(
        self, module: nn.Module, optimizer: Any, criterion: Any, loader: DataLoader[Any]
    ) -> tuple[float, tuple[float, ...], tuple[float, ...]]:
        module.train()
        total_loss, total_records = 0.0, 0
        epoch_seconds, epoch_cpu_seconds = [], []
        for _ in range(self.config.epochs):
            started, started_cpu = time.perf_counter(), time.process_time()
            for features, labels in loader:
                optimizer.zero_grad()
                # An empty Poisson batch still steps: it counts in the accounting and adds pure noise.
                if len(labels) == 0 and self.config.grad_sample_mode == "ew":
                    # Expanded weights reject batch size 0; an empty batch's per-sample gradients are empty.
                    for parameter in self.model.parameters():
                        parameter.grad_sample = torch.zeros((0, *parameter.shape))  # type: ignore[attr-defined]  # Opacus' attr
                    optimizer.step()
                    continue
                loss = criterion(module(features).squeeze(-1), labels)
                loss.backward()
                optimizer.step()
                if len(labels):
                    total_loss += float(loss.item()) * len(labels)
                    total_records += len(labels)
            epoch_seconds.append(time.perf_counter() - started)
            epoch_cpu_seconds.append(time.process_time() - started_cpu)
        return total_loss / max(total_records, 1), tuple(epoch_seconds), tuple(epoch_cpu_seconds)
