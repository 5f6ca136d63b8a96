"""PrivacyBudgetContract through the Ledger interface: limits, charges, refusal past the limit."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fabric_network.ledger import Ledger
from tests.contracts.conftest import new_id

PURPOSE = "CLINTRCH"


@pytest.fixture(scope="module")
def limit_set(consortium: Ledger) -> float:
    consortium.submit("PrivacyBudgetContract:set_budget_limit", "HospitalBMSP", PURPOSE, 3.0)
    return 3.0


def test_charge_is_refused_past_the_limit(hospital_b: Ledger, limit_set: float, refused: Callable[..., str]) -> None:
    run_id = new_id("run")
    before = hospital_b.evaluate("PrivacyBudgetContract:read_budget", "HospitalBMSP", PURPOSE)
    first = hospital_b.submit("PrivacyBudgetContract:charge_budget", PURPOSE, 1.25, run_id, 1).result
    assert first["spent"] == pytest.approx(before["spent"] + 1.25)
    remaining = first["remaining"]
    message = refused(hospital_b, "PrivacyBudgetContract:charge_budget", PURPOSE, remaining + 0.01, run_id, 2)
    assert "epsilon: charging it would exceed the limit" in message
    after = hospital_b.evaluate("PrivacyBudgetContract:read_budget", "HospitalBMSP", PURPOSE)
    assert after["spent"] == first["spent"]
    exact = hospital_b.submit("PrivacyBudgetContract:charge_budget", PURPOSE, remaining, run_id, 2).result
    assert exact["remaining"] == pytest.approx(0.0)
    charges = hospital_b.evaluate("PrivacyBudgetContract:list_budget_charges", "HospitalBMSP", PURPOSE)
    assert [(c["run_id"], c["round"]) for c in charges if c["run_id"] == run_id] == [(run_id, 1), (run_id, 2)]


def test_a_round_is_charged_once(hospital_a: Ledger, consortium: Ledger, refused: Callable[..., str]) -> None:
    consortium.submit("PrivacyBudgetContract:set_budget_limit", "HospitalAMSP", PURPOSE, 10.0)
    run_id = new_id("run")
    hospital_a.submit("PrivacyBudgetContract:charge_budget", PURPOSE, 0.5, run_id, 1)
    assert "round_number" in refused(hospital_a, "PrivacyBudgetContract:charge_budget", PURPOSE, 0.5, run_id, 1)


def test_who_may_set_a_limit(network, hospital_a: Ledger, limit_set: float, refused: Callable[..., str]) -> None:
    assert "caller" in refused(hospital_a, "PrivacyBudgetContract:set_budget_limit", "HospitalBMSP", PURPOSE, 50)
    assert "caller" in refused(hospital_a, "PrivacyBudgetContract:set_budget_limit", "HospitalAMSP", "PUBHLTH", 5)
    admin = network.ledger("hospital-a", "admin")
    assert admin.submit("PrivacyBudgetContract:set_budget_limit", "HospitalAMSP", "PUBHLTH", 5).result["limit"] == 5
    assert "epsilon_limit" in refused(admin, "PrivacyBudgetContract:set_budget_limit", "HospitalAMSP", "PUBHLTH", 0)
