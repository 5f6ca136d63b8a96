"""PrivacyBudgetContract through the Ledger interface: limits, charges, refusal past the limit, recomputed ε."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fabric_network.contracts.budget import recompute
from fabric_network.ledger import Ledger
from privacy.accountant import RdpAccountant
from tests.contracts.conftest import QUIET_MECHANISM, new_id

PURPOSE = "CLINTRCH"
CHARGE = "PrivacyBudgetContract:charge_budget"


def _mechanism(noise: float, rate: float = 0.1, steps: int = 20) -> dict[str, Any]:
    return {**QUIET_MECHANISM, "noise_multiplier": noise, "sample_rate": rate, "steps": steps}


@pytest.fixture(scope="module")
def limit_set(consortium: Ledger) -> float:
    consortium.submit("PrivacyBudgetContract:set_budget_limit", "HospitalBMSP", PURPOSE, 3.0)
    return 3.0


def test_charge_is_refused_past_the_limit(hospital_b: Ledger, limit_set: float, refused: Callable[..., str]) -> None:
    run_id = new_id("run")
    before = hospital_b.evaluate("PrivacyBudgetContract:read_budget", "HospitalBMSP", PURPOSE)
    first = hospital_b.submit(CHARGE, PURPOSE, 1.25, run_id, 1, QUIET_MECHANISM).result
    assert first["spent"] == pytest.approx(before["spent"] + 1.25)
    remaining = first["remaining"]
    message = refused(hospital_b, CHARGE, PURPOSE, remaining + 0.01, run_id, 2, QUIET_MECHANISM)
    assert "epsilon: charging it would exceed the limit" in message
    after = hospital_b.evaluate("PrivacyBudgetContract:read_budget", "HospitalBMSP", PURPOSE)
    assert after["spent"] == first["spent"]
    exact = hospital_b.submit(CHARGE, PURPOSE, remaining, run_id, 2, QUIET_MECHANISM).result
    assert exact["remaining"] == pytest.approx(0.0)
    charges = hospital_b.evaluate("PrivacyBudgetContract:list_budget_charges", "HospitalBMSP", PURPOSE)
    assert [(c["run_id"], c["round"]) for c in charges if c["run_id"] == run_id] == [(run_id, 1), (run_id, 2)]


def test_a_round_is_charged_once_and_in_order(
    hospital_a: Ledger, consortium: Ledger, refused: Callable[..., str]
) -> None:
    consortium.submit("PrivacyBudgetContract:set_budget_limit", "HospitalAMSP", PURPOSE, 10.0)
    run_id = new_id("run")
    hospital_a.submit(CHARGE, PURPOSE, 0.5, run_id, 2, QUIET_MECHANISM)
    assert "round_number" in refused(hospital_a, CHARGE, PURPOSE, 0.5, run_id, 2, QUIET_MECHANISM)
    assert "in order" in refused(hospital_a, CHARGE, PURPOSE, 0.5, run_id, 1, QUIET_MECHANISM)
    other_delta = {**QUIET_MECHANISM, "delta": 1e-6}
    assert "mechanism.delta" in refused(hospital_a, CHARGE, PURPOSE, 0.5, run_id, 3, other_delta)


def test_understating_the_mechanism_by_one_percent_is_refused(
    hospital_a: Ledger, consortium: Ledger, refused: Callable[..., str]
) -> None:
    """Round 2's ε is the increase over round 1 under RDP composition, recomputed by the contract."""
    consortium.submit("PrivacyBudgetContract:set_budget_limit", "HospitalAMSP", PURPOSE, 10.0)
    run_id = new_id("run")
    first, second = _mechanism(1.2), _mechanism(1.2)
    accountant = RdpAccountant()
    round_one = accountant.epsilon_increment((1.2, 0.1, 20), 1e-5)
    accountant.step(1.2, 0.1, 20)
    round_two = accountant.epsilon_increment((1.2, 0.1, 20), 1e-5)
    assert 0 < round_two < round_one, "RDP composition: the second slice adds less than the first"
    message = refused(hospital_a, CHARGE, PURPOSE, round_one * 0.99, run_id, 1, first)
    assert "epsilon: understates the mechanism's ε" in message and f"{round_one:.6g} computed" in message
    charged = hospital_a.submit(CHARGE, PURPOSE, round_one, run_id, 1, first).result
    assert charged["tx_id"]
    assert "understates" in refused(hospital_a, CHARGE, PURPOSE, round_two * 0.99, run_id, 2, second)
    hospital_a.submit(CHARGE, PURPOSE, round_two, run_id, 2, second)
    charges = [
        c
        for c in hospital_a.evaluate("PrivacyBudgetContract:list_budget_charges", "HospitalAMSP", PURPOSE)
        if c["run_id"] == run_id
    ]
    assert [c["mechanism"] for c in charges] == [first, second]
    assert charges[1]["run_epsilon"] == pytest.approx(round_one + round_two, abs=1e-12)
    assert recompute(charges[:1], charges[1]["mechanism"])[0] == pytest.approx(charges[1]["epsilon"], abs=1e-9)


def test_a_mechanism_outside_the_analysis_is_refused(hospital_a: Ledger, refused: Callable[..., str]) -> None:
    for bad, field in (
        ({**QUIET_MECHANISM, "accountant": "prv"}, "mechanism.accountant"),
        ({**QUIET_MECHANISM, "sample_rate": 1.5}, "mechanism.sample_rate"),
        ({k: v for k, v in QUIET_MECHANISM.items() if k != "steps"}, "mechanism.steps"),
    ):
        assert field in refused(hospital_a, CHARGE, "HRESCH", 0.5, new_id("run"), 1, bad)


def test_who_may_set_a_limit(network, hospital_a: Ledger, limit_set: float, refused: Callable[..., str]) -> None:
    assert "caller" in refused(hospital_a, "PrivacyBudgetContract:set_budget_limit", "HospitalBMSP", PURPOSE, 50)
    assert "caller" in refused(hospital_a, "PrivacyBudgetContract:set_budget_limit", "HospitalAMSP", "PUBHLTH", 5)
    admin = network.ledger("hospital-a", "admin")
    assert admin.submit("PrivacyBudgetContract:set_budget_limit", "HospitalAMSP", "PUBHLTH", 5).result["limit"] == 5
    assert "epsilon_limit" in refused(admin, "PrivacyBudgetContract:set_budget_limit", "HospitalAMSP", "PUBHLTH", 0)
