"""PrivacyBudgetContract: each hospital's ε limit per purpose, and every charge against it.

A charge that would take a hospital past its limit is refused, so DP training cannot outspend the budget the
consortium agreed. Limits are set by the consortium or by the hospital's own admin; charges only by the
hospital itself (it is the party that spends its patients' privacy).

Keys: ``budget/<hospital MSP>/<purpose>`` (limit and running total; written only by that hospital's charges and
the limit setter) and ``budget-charge/<hospital MSP>/<purpose>/<run_id>/<round as 6 digits>`` (one per charge,
so a charge can never be recorded twice).
"""

from __future__ import annotations

from typing import Any

from fabric_network.contracts import common as c
from fabric_network.shim import Contract, TransactionContextInterface

BUDGET = "budget"
CHARGE = "budget-charge"
# Float sums of many charges drift by ~1e-15; a charge equal to the remainder must still fit.
EPSILON_TOLERANCE = 1e-9


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
        if limit + EPSILON_TOLERANCE < budget["spent"]:
            raise c.ContractError("epsilon_limit: lower than the ε this hospital has already spent for this purpose")
        budget.update(limit=limit, updated_at=c.tx_time(ctx), tx_id=c.tx_id(ctx))
        await c.put_json(ctx, state_key, budget)
        c.emit(ctx, "BudgetLimitSet", {"hospital": hospital, "purpose": purpose, "limit": limit})
        return self._with_remaining(budget)

    @staticmethod
    def _with_remaining(budget: dict[str, Any]) -> dict[str, Any]:
        return {**budget, "remaining": max(0.0, budget["limit"] - budget["spent"])}

    async def charge_budget(
        self, ctx: TransactionContextInterface, purpose: str, epsilon: str, run_id: str, round_number: str
    ) -> dict[str, Any]:
        """Charge the caller hospital ``epsilon`` for ``purpose`` in a run's round; refused past the limit."""
        hospital = c.require_hospital(ctx)
        c.purpose("purpose", purpose)
        amount = c.epsilon("epsilon", epsilon)
        c.record_id("run_id", run_id)
        number = _round_number("round_number", round_number)
        state_key = c.key(ctx, BUDGET, hospital, purpose)
        budget = await c.require_json(
            ctx, state_key, "purpose: no ε limit is set for this hospital and purpose; set_budget_limit first"
        )
        charge_key = c.key(ctx, CHARGE, hospital, purpose, run_id, f"{number:06d}")
        if await c.get_json(ctx, charge_key) is not None:
            raise c.ContractError("round_number: this hospital was charged for this run and round already")
        if budget["spent"] + amount > budget["limit"] + EPSILON_TOLERANCE:
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
            "charged_at": now,
            "tx_id": c.tx_id(ctx),
        }
        await c.put_json(ctx, state_key, budget)
        await c.put_json(ctx, charge_key, charge)
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
