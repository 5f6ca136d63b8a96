"""Run-level DP accounting: rounds add up to the run's ε, a shrinking cohort raises the noise, never the ε."""

from hospital_node.dp_rounds import RunNoiseHistory, plan_round, rdp_epsilon
from privacy.dp import DPConfig, plan_training

CONFIG = DPConfig(3.0, 1e-5, epochs=2, batch_size=32, learning_rate=0.2)


def _run(cohorts: list[int]) -> tuple[list[float], RunNoiseHistory]:
    history: RunNoiseHistory | None = None
    charged = []
    for done, n in enumerate(cohorts):
        plan, history = plan_round(CONFIG, n, len(cohorts) - done, history)
        history.record(plan)
        charged.append(plan.epsilon)
    assert history is not None
    return charged, history


def test_rounds_compose_to_the_run_target_and_match_opacus_calibration() -> None:
    charged, history = _run([190] * 4)
    assert 2.9 < sum(charged) <= 3.0 + 1e-9
    assert sum(charged) == history.epsilon_spent == rdp_epsilon(history.slices, 1e-5)
    assert charged[0] > charged[1] > charged[-1] > 0, "RDP: the first round costs most"
    whole_run = plan_training(DPConfig(3.0, 1e-5, epochs=8, batch_size=32), 190)
    assert abs(history.slices[0][0] - whole_run.noise_multiplier) / whole_run.noise_multiplier < 0.03


def test_withdrawals_raise_the_noise_and_keep_the_run_within_its_target() -> None:
    charged, history = _run([162, 155, 155])  # a cohort below 5 batches of 32 raises the sample rate
    assert sum(charged) <= 3.0 + 1e-9
    assert history.slices[1][0] > history.slices[0][0]
