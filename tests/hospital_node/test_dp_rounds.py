"""Run-level DP accounting: rounds add up to the run's ε, a shrinking cohort raises the noise, never the ε."""

from hospital_node.dp_rounds import accountant_of_charges, mechanism_of, plan_round
from privacy.accountant import RdpAccountant
from privacy.dp import DPConfig, TrainingPlan, plan_training

CONFIG = DPConfig(3.0, 1e-5, epochs=2, batch_size=32, learning_rate=0.2)


def _run(cohorts: list[int]) -> tuple[list[float], RdpAccountant]:
    accountant: RdpAccountant | None = None
    charged = []
    for done, n in enumerate(cohorts):
        plan, accountant = plan_round(CONFIG, n, len(cohorts) - done, accountant)
        accountant.step(plan.noise_multiplier, plan.sample_rate, plan.steps)
        charged.append(plan.epsilon)
    assert accountant is not None
    return charged, accountant


def test_rounds_compose_to_the_run_target_and_match_opacus_calibration() -> None:
    charged, accountant = _run([190] * 4)
    assert 2.9 < sum(charged) <= 3.0 + 1e-9
    assert abs(sum(charged) - accountant.epsilon(1e-5)) < 1e-12
    assert charged[0] > charged[1] > charged[-1] > 0, "RDP: the first round costs most"
    whole_run = plan_training(DPConfig(3.0, 1e-5, epochs=8, batch_size=32), 190)
    assert abs(accountant.history[0][0] - whole_run.noise_multiplier) / whole_run.noise_multiplier < 0.03


def test_withdrawals_raise_the_noise_and_keep_the_run_within_its_target() -> None:
    charged, accountant = _run([162, 155, 155])  # a cohort below 5 batches of 32 raises the sample rate
    assert sum(charged) <= 3.0 + 1e-9
    assert accountant.history[1][0] > accountant.history[0][0]


def test_the_ledger_charges_rebuild_the_planning_accountant() -> None:
    """The node plans from its ledger charges: the history the contract recomputes each charge from."""
    _, accountant = _run([190] * 2)
    charges = []
    for number, (noise, rate, steps) in enumerate(accountant.history, start=1):
        plan = TrainingPlan(190, rate, steps, noise, 0.0, 1e-5)
        charges.append({"round": number, "mechanism": mechanism_of(plan, CONFIG.max_grad_norm)})
    rebuilt = accountant_of_charges(reversed(charges))
    assert rebuilt.history == accountant.history
    assert charges[0]["mechanism"]["max_grad_norm"] == 1.0 and charges[0]["mechanism"]["accountant"] == "carefed-rdp"
