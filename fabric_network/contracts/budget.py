"""PrivacyBudgetContract: each hospital's ε limit per purpose, and every charge against it.

A charge that would take a hospital past its limit is refused, so DP training cannot outspend the budget the
consortium agreed. Limits are set by the consortium or by the hospital's own admin; charges only by the
hospital itself (it is the party that spends its patients' privacy).

A charge carries its mechanism (noise multiplier, Poisson sample rate, steps, clipping norm, δ, accountant and
version). Every endorsing peer recomputes the charge's ε with CareFed's accountant (`privacy.accountant`, numpy
only) as ε(this run's earlier charges + this one) - ε(earlier charges), and refuses a charge whose claimed ε is
lower: a hospital cannot understate what it spent. Anyone can repeat the computation from the ledger alone.

Keys: ``budget/<hospital MSP>/<purpose>`` (limit and running total; written only by that hospital's charges and
the limit setter) and ``budget-charge/<hospital MSP>/<purpose>/<run_id>/<round as 6 digits>`` (one per charge,
so a charge can never be recorded twice).
"""

from __future__ import annotations

from typing import Any

from fabric_network.contracts import common as c
from fabric_network.shim import Contract, TransactionContextInterface
from privacy.accountant import (
    ACCOUNTANT,
    ACCOUNTANT_VERSION,
    RdpAccountant,
    fits_budget,
    understates,
)

BUDGET = "budget"
CHARGE = "budget-charge"

MECHANISM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "accountant",
        "accountant_version",
        "noise_multiplier",
        "sample_rate",
        "steps",
        "max_grad_norm",
        "delta",
    ],
    "properties": {
        "accountant": {"type": "string", "enum": [ACCOUNTANT]},
        "accountant_version": {"type": "string", "enum": [ACCOUNTANT_VERSION]},
        "noise_multiplier": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
        "sample_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "steps": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
        "max_grad_norm": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
        "delta": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.01},
    },
}


def recompute(earlier: list[dict[str, Any]], mechanism: dict[str, Any]) -> tuple[float, float]:
    """(ε of this charge, ε of the run so far) from the run's earlier charges' mechanisms and this one.

    The same function serves the contract and `carefed report privacy-budget --recompute`.
    """
    accountant = RdpAccountant()
    for charge in earlier:
        m = charge["mechanism"]
        accountant.step(m["noise_multiplier"], m["sample_rate"], m["steps"])
    this = (mechanism["noise_multiplier"], mechanism["sample_rate"], mechanism["steps"])
    increment = accountant.epsilon_increment(this, mechanism["delta"])
    accountant.step(*this)
    return increment, accountant.epsilon(mechanism["delta"])


def _round_number(field: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 100_000:
        raise c.ContractError(f"{field}: must be an integer from 1 to 100000")
    return int(value)


class PrivacyBudgetContract(Contract):  # type: ignore[misc]  # the library ships no type hints
    """Set ε limits, charge ε, read spent and remaining budget."""

    Name = "PrivacyBudgetContract"

    def get_evaluate_transactions(self) -> list[str]:
        return ["read_budget", "list_budgets", "list_budget_charges"]

    async def set_budget_limit(
        self, ctx: TransactionContextInterface, hospital: str, purpose: str, epsilon_limit: str
    ) -> dict[str, Any]:
        """Set ``hospital``'s ε limit for ``purpose`` (consortium, or that hospital's admin); never below ε spent."""
        caller = c.caller_msp(ctx)
        c.msp_id("hospital", hospital)
        c.purpose("purpose", purpose)
        limit = c.epsilon("epsilon_limit", epsilon_limit)
        if caller == c.CONSORTIUM_MSP:
            c.require_role(ctx, ("client", "admin"))
        elif caller == hospital:
            c.require_role(ctx, ("admin",))
        else:
            raise c.ContractError("caller: only the consortium or the hospital's own admin may set its limit")
        if hospital == c.CONSORTIUM_MSP:
            raise c.ContractError("hospital: budgets belong to hospitals, not the consortium")
        state_key = c.key(ctx, BUDGET, hospital, purpose)
        budget = await c.get_json(ctx, state_key) or {"hospital": hospital, "purpose": purpose, "spent": 0.0}
        if not fits_budget(budget["spent"], 0.0, limit):
            raise c.ContractError("epsilon_limit: lower than the ε this hospital has already spent for this purpose")
        budget.update(limit=limit, updated_at=c.tx_time(ctx), tx_id=c.tx_id(ctx))
        await c.put_json(ctx, state_key, budget)
        c.emit(ctx, "BudgetLimitSet", {"hospital": hospital, "purpose": purpose, "limit": limit})
        return self._with_remaining(budget)

    @staticmethod
    def _with_remaining(budget: dict[str, Any]) -> dict[str, Any]:
        return {**budget, "remaining": max(0.0, budget["limit"] - budget["spent"])}

    async def charge_budget(
        self,
        ctx: TransactionContextInterface,
        purpose: str,
        epsilon: str,
        run_id: str,
        round_number: str,
        mechanism: str,
    ) -> dict[str, Any]:
        """Charge the caller hospital ``epsilon`` for a run's round; refused past the limit or below the mechanism's ε.

        ``mechanism`` (JSON, :data:`MECHANISM_SCHEMA`) is what spent it; the contract recomputes the ε from it and
        the run's earlier charges and refuses a claim lower than its own result. Rounds of a run are charged in
        order, with one δ.
        """
        hospital = c.require_hospital(ctx)
        c.purpose("purpose", purpose)
        amount = c.epsilon("epsilon", epsilon)
        c.record_id("run_id", run_id)
        number = _round_number("round_number", round_number)
        parsed = c.json_argument("mechanism", mechanism, MECHANISM_SCHEMA)
        state_key = c.key(ctx, BUDGET, hospital, purpose)
        budget = await c.require_json(
            ctx, state_key, "purpose: no ε limit is set for this hospital and purpose; set_budget_limit first"
        )
        earlier = await c.scan_json(ctx, CHARGE, hospital, purpose, run_id)
        if any(charge["round"] == number for charge in earlier):
            raise c.ContractError("round_number: this hospital was charged for this run and round already")
        if any(charge["round"] > number for charge in earlier):
            raise c.ContractError("round_number: a later round of this run is charged already (charge rounds in order)")
        if any(charge["mechanism"]["delta"] != parsed["delta"] for charge in earlier):
            raise c.ContractError("mechanism.delta: differs from this run's earlier charges (one δ per run)")
        computed, run_epsilon = recompute(earlier, parsed)
        if understates(amount, computed):
            raise c.ContractError(
                f"epsilon: understates the mechanism's ε ({amount:.6g} claimed, {computed:.6g} computed by "
                f"{ACCOUNTANT} {ACCOUNTANT_VERSION} from this charge and the run's earlier ones); charge at least that"
            )
        if not fits_budget(budget["spent"], amount, budget["limit"]):
            raise c.ContractError(
                f"epsilon: charging it would exceed the limit (spent {budget['spent']:.6g} of "
                f"{budget['limit']:.6g}, remaining {budget['limit'] - budget['spent']:.6g})"
            )
        now = c.tx_time(ctx)
        budget.update(spent=budget["spent"] + amount, updated_at=now, tx_id=c.tx_id(ctx))
        charge = {
            "hospital": hospital,
            "purpose": purpose,
            "run_id": run_id,
            "round": number,
            "epsilon": amount,
            "mechanism": parsed,
            "run_epsilon": run_epsilon,
            "charged_at": now,
            "tx_id": c.tx_id(ctx),
        }
        await c.put_json(ctx, state_key, budget)
        await c.put_json(ctx, c.key(ctx, CHARGE, hospital, purpose, run_id, f"{number:06d}"), charge)
        c.emit(ctx, "BudgetCharged", {"hospital": hospital, "purpose": purpose, "epsilon": amount, "run_id": run_id})
        return self._with_remaining(budget)

    async def read_budget(self, ctx: TransactionContextInterface, hospital: str, purpose: str) -> dict[str, Any]:
        """Limit, spent and remaining ε of a hospital for a purpose."""
        c.msp_id("hospital", hospital)
        c.purpose("purpose", purpose)
        budget = await c.require_json(
            ctx, c.key(ctx, BUDGET, hospital, purpose), "purpose: no ε limit is set for this hospital and purpose"
        )
        return self._with_remaining(budget)

    async def list_budgets(self, ctx: TransactionContextInterface) -> list[dict[str, Any]]:
        """Every hospital's budget per purpose, with the remaining ε."""
        return [self._with_remaining(b) for b in await c.scan_json(ctx, BUDGET)]

    async def list_budget_charges(
        self, ctx: TransactionContextInterface, hospital: str, purpose: str
    ) -> list[dict[str, Any]]:
        """Every charge, of one hospital and/or for one purpose when given ("" = any), in key order."""
        if hospital:
            c.msp_id("hospital", hospital)
        c.purpose("purpose", purpose, optional=True)
        if purpose and not hospital:
            return [ch for ch in await c.scan_json(ctx, CHARGE) if ch["purpose"] == purpose]
        attributes = [a for a in (hospital, purpose) if a]
        return await c.scan_json(ctx, CHARGE, *attributes)
