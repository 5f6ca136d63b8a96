"""PrivacyBudget: ε accumulates across runs and the state survives a round trip through plain dicts."""

import json

import pytest

from privacy.budget import BudgetExceededError, PrivacyBudget


def test_charges_accumulate_and_round_trip_through_json() -> None:
    budget = PrivacyBudget("st-mary", epsilon_limit=5.0).charge(1.5, 1e-5).charge(2.0, 1e-5)
    assert budget.epsilon_spent == pytest.approx(3.5)
    assert budget.delta_spent == pytest.approx(2e-5)
    assert budget.runs == 2
    assert budget.epsilon_remaining == pytest.approx(1.5)
    restored = PrivacyBudget.from_state(json.loads(json.dumps(budget.to_state())))
    assert restored == budget


def test_refusal_names_hospital_spent_requested_and_limit() -> None:
    budget = PrivacyBudget("st-mary", epsilon_limit=3.0, epsilon_spent=2.5)
    with pytest.raises(BudgetExceededError) as refused:
        budget.charge(1.0, 1e-5)
    message = str(refused.value)
    for fragment in ("'st-mary'", "ε spent 2.5000", "ε requested 1.0000", "limit 3.0000", "at most 0.5000"):
        assert fragment in message
    assert budget.epsilon_spent == 2.5, "a refused charge leaves the budget as it was"


def test_spending_exactly_the_remaining_budget_is_allowed() -> None:
    budget = PrivacyBudget("north", epsilon_limit=1.0, epsilon_spent=0.7).charge(0.3, 0.0)
    assert budget.epsilon_remaining == 0.0


@pytest.mark.parametrize(
    ("state", "field"),
    [
        ({"hospital": "", "epsilon_limit": 1.0}, "hospital"),
        ({"hospital": "h", "epsilon_limit": 0}, "epsilon_limit"),
        ({"hospital": "h", "epsilon_limit": 1.0, "epsilon_spent": -1}, "epsilon_spent"),
        ({"hospital": "h", "epsilon_limit": float("nan")}, "epsilon_limit"),
        ({"hospital": "h"}, "missing fields ['epsilon_limit']"),
        ({"hospital": "h", "epsilon_limit": 1.0, "eps": 2}, "unknown fields ['eps']"),
    ],
)
def test_invalid_state_is_refused_naming_the_field(state: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        PrivacyBudget.from_state(state)
