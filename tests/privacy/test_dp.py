"""DP-SGD training: the ε spent is known before the first step, budgets refuse early, bad input is named."""

import numpy as np
import numpy.typing as npt
import pytest
import torch

from privacy.budget import BudgetExceededError, PrivacyBudget
from privacy.dp import (
    GRAD_SAMPLE_MODES,
    DPConfig,
    PrivacyConfigError,
    PrivateTrainer,
    TrainingDataError,
    plan_training,
    planned_epsilon,
)
from privacy.model import demo_mlp, parameters_to_vector

Data = tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]


def test_run_spends_exactly_the_planned_epsilon_and_charges_the_budget(breast_cancer: Data) -> None:
    features, labels = breast_cancer
    config = DPConfig(target_epsilon=2.0, target_delta=1e-4, epochs=2, batch_size=32)
    model = demo_mlp(seed=1)
    before = parameters_to_vector(model)
    trainer = PrivateTrainer(model, features, labels, config)
    assert trainer.plan.epsilon <= 2.0 + 1e-9
    assert trainer.plan.epsilon == pytest.approx(2.0, rel=0.05)
    assert trainer.plan.steps == 2 * 4  # ceil(120 / 32) Poisson batches per epoch

    result, budget = trainer.train(PrivacyBudget("st-mary", epsilon_limit=5.0))

    assert result.epsilon == pytest.approx(trainer.plan.epsilon, rel=1e-9)
    assert budget.epsilon_spent == pytest.approx(result.epsilon)
    assert budget.delta_spent == 1e-4
    assert budget.runs == 1
    assert not np.allclose(parameters_to_vector(model), before), "training changed the model in place"
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules()), "Opacus hooks removed"


def test_budget_that_would_be_exceeded_refuses_before_any_step(breast_cancer: Data) -> None:
    features, labels = breast_cancer
    model = demo_mlp(seed=2)
    before = parameters_to_vector(model)
    trainer = PrivateTrainer(model, features, labels, DPConfig(target_epsilon=1.0, target_delta=1e-4))
    nearly_spent = PrivacyBudget("st-mary", epsilon_limit=3.0, epsilon_spent=2.5)
    rng_before = torch.random.get_rng_state()

    with pytest.raises(BudgetExceededError) as refused:
        trainer.train(nearly_spent)

    assert "'st-mary'" in str(refused.value) and "limit 3.0000" in str(refused.value)
    assert refused.value.epsilon_requested == pytest.approx(trainer.plan.epsilon)
    # Every DP step adds Gaussian noise to every parameter and draws a Poisson batch from torch's RNG:
    # unchanged parameters and an untouched RNG prove that not a single step ran.
    np.testing.assert_array_equal(parameters_to_vector(model), before)
    assert torch.equal(torch.random.get_rng_state(), rng_before)


def test_delta_at_or_above_one_over_n_is_refused_naming_delta(breast_cancer: Data) -> None:
    features, labels = breast_cancer
    with pytest.raises(PrivacyConfigError, match=r"target_delta δ=0\.01 must be < 1/n = 0\.00833 for n=120"):
        PrivateTrainer(demo_mlp(), features, labels, DPConfig(target_epsilon=1.0, target_delta=0.01))
    with pytest.raises(PrivacyConfigError, match=r"δ=0\.5"):
        planned_epsilon(DPConfig(target_epsilon=1.0, target_delta=0.5), n_records=2)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"target_epsilon": -1.0}, "target_epsilon"),
        ({"target_epsilon": float("inf")}, "target_epsilon"),
        ({"target_epsilon": "3"}, "target_epsilon"),
        ({"target_delta": 1.0}, "target_delta"),
        ({"epochs": 2.5}, "epochs"),
        ({"target_delta": 0.0}, "target_delta"),
        ({"epochs": 0}, "epochs"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"accountant": "gdp"}, "accountant"),
        ({"grad_sample_mode": "fast"}, "grad_sample_mode"),
    ],
)
def test_invalid_settings_are_refused_naming_the_field(settings: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"target_epsilon": 1.0, "target_delta": 1e-5, **settings}
    with pytest.raises(PrivacyConfigError, match=field):
        DPConfig(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (np.zeros((0, 30)), np.zeros(0), "non-empty 2-D"),
        (np.zeros((10, 30)), np.zeros(9), "one label per record"),
        (np.full((10, 3), np.nan), np.array([0, 1] * 5), "finite"),
        (np.zeros((10, 3)), np.array([0, 2] * 5), "0 or 1"),
        (np.zeros((10, 3)), np.ones(10), "single class"),
    ],
)
def test_untrainable_data_is_refused(features: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(TrainingDataError, match=message):
        PrivateTrainer(demo_mlp(n_features=features.shape[1] or 30), features, labels, DPConfig(1.0, 1e-5))


def test_prv_accountant_is_selectable_and_meets_the_target() -> None:
    prv = plan_training(DPConfig(target_epsilon=3.0, target_delta=1e-4, batch_size=32, accountant="prv"), 120)
    assert 2.8 <= prv.epsilon <= 3.0 + 1e-9
    rdp = plan_training(DPConfig(target_epsilon=3.0, target_delta=1e-4, batch_size=32), 120)
    assert prv.noise_multiplier != rdp.noise_multiplier, "the two accountants calibrate differently"


def test_every_grad_sample_mode_trains_the_same_model(breast_cancer: Data) -> None:
    """All modes clip exact per-sample gradients, so with the same noise and batches they reach the same weights.

    Batches of expected size 2 over 24 records leave ~1 in 8 Poisson batches empty: every mode must take those
    steps too (noise only) and account for them, so each run spends exactly its planned ε.
    """
    features, labels = breast_cancer[0][:24], breast_cancer[1][:24]
    trained = {}
    for mode in GRAD_SAMPLE_MODES:
        torch.manual_seed(3)
        model = demo_mlp(seed=3)
        config = DPConfig(target_epsilon=2.0, target_delta=1e-3, epochs=2, batch_size=2, grad_sample_mode=mode)
        trainer = PrivateTrainer(model, features, labels, config)
        result, _ = trainer.train(PrivacyBudget("h", epsilon_limit=10.0))
        assert result.epsilon == pytest.approx(trainer.plan.epsilon, rel=1e-12), mode
        trained[mode] = parameters_to_vector(model)
    for mode, weights in trained.items():
        np.testing.assert_allclose(weights, trained["hooks"], atol=1e-5, err_msg=mode)
