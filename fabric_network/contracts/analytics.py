"""AnalyticsContract: federated cohort queries — who asked what, for which purpose, at which ε, and the result's hash.

The consortium registers a query before any hospital computes anything (``register_query``): the requester (an
opaque user id and role), the purpose, the kind of statistic, the SHA-256 of the full query (cohort rules,
variable, bins, strata, privacy parameters), its ε and δ, the small-cell minimum and the hospitals asked. Each
hospital answers only a query registered with the exact hash of what it was sent, and charges its ε for it to
its own budget (``PrivacyBudgetContract:charge_budget``, run id = query id: round 1 the cohort count, round 2
the statistic), so the ledger holds every ε a query spent next to the query. The consortium then records the
outcome once (``record_query_result``): answered, suppressed (the noisy count fell below the minimum, only the
count's ε was spent) or failed, with the SHA-256 of the released result and the hospitals that took part. The
result itself stays off chain with the requester; its hash proves later what was released.

Keys: ``query/<query_id>``.
"""

from __future__ import annotations

from typing import Any

from fabric_network.contracts import common as c
from fabric_network.contracts.governance import current_members
from fabric_network.shim import Contract, TransactionContextInterface

QUERY = "query"
QUERY_KINDS = ("count", "mean", "stddev", "histogram", "quantiles", "table", "moments")
OUTCOMES = ("answered", "suppressed", "failed")
HOSPITALS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": c.SCHEMA_MSP_ID,
    "minItems": 1,
    "maxItems": 64,
    "uniqueItems": True,
}

QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["requester", "role", "purpose", "kind", "query_sha256", "epsilon", "delta", "min_count", "hospitals"],
    "properties": {
        "requester": c.SCHEMA_RECORD_ID,
        "role": {"type": "string", "pattern": r"^[a-z][a-z0-9_]{0,31}$"},
        "purpose": {"type": "string", "enum": sorted(c.PURPOSE_CODES)},
        "kind": {"type": "string", "enum": list(QUERY_KINDS)},
        "query_sha256": c.SCHEMA_SHA256,
        "epsilon": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
        "delta": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.01},
        "min_count": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        "hospitals": HOSPITALS_SCHEMA,
    },
}
RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["outcome", "result_sha256", "participants"],
    "properties": {
        "outcome": {"type": "string", "enum": list(OUTCOMES)},
        "result_sha256": {"anyOf": [c.SCHEMA_SHA256, {"const": ""}]},
        "participants": {**HOSPITALS_SCHEMA, "minItems": 0},
    },
}


class AnalyticsContract(Contract):  # type: ignore[misc]  # the library ships no type hints
    """Register federated queries and record their outcome; read them back."""

    Name = "AnalyticsContract"

    def get_evaluate_transactions(self) -> list[str]:
        return ["read_query", "list_queries"]

    async def register_query(self, ctx: TransactionContextInterface, query_id: str, query: str) -> dict[str, Any]:
        """Register a query (JSON ``query``, :data:`QUERY_SCHEMA`) as the consortium, before it is sent anywhere."""
        c.require_consortium(ctx)
        c.record_id("query_id", query_id)
        parsed = c.json_argument("query", query, QUERY_SCHEMA)
        c.record_id("query.requester", parsed["requester"])
        members = await current_members(ctx)
        outsiders = [h for h in parsed["hospitals"] if h not in members]
        if outsiders:
            raise c.ContractError(f"query.hospitals: not members of the consortium: {', '.join(outsiders)}")
        state_key = c.key(ctx, QUERY, query_id)
        if await c.get_json(ctx, state_key) is not None:
            raise c.ContractError("query_id: a query with this id is registered already; use a new id")
        record = {
            "query_id": query_id,
            **parsed,
            "status": "registered",
            "registered_at": c.tx_time(ctx),
            "tx_id": c.tx_id(ctx),
        }
        await c.put_json(ctx, state_key, record)
        c.emit(ctx, "QueryRegistered", {"query_id": query_id, "purpose": parsed["purpose"], "kind": parsed["kind"]})
        return record

    async def record_query_result(self, ctx: TransactionContextInterface, query_id: str, result: str) -> dict[str, Any]:
        """Record a registered query's outcome once (consortium): its participants and the released result's hash."""
        c.require_consortium(ctx)
        c.record_id("query_id", query_id)
        parsed = c.json_argument("result", result, RESULT_SCHEMA)
        record = await self._query(ctx, query_id)
        if record["status"] != "registered":
            raise c.ContractError(f"query_id: the query's outcome is recorded already ({record['status']})")
        outsiders = [h for h in parsed["participants"] if h not in record["hospitals"]]
        if outsiders:
            raise c.ContractError(f"result.participants: not asked by this query: {', '.join(outsiders)}")
        if parsed["outcome"] == "answered" and not parsed["result_sha256"]:
            raise c.ContractError("result.result_sha256: an answered query must record its result's hash")
        record.update(
            status=parsed["outcome"],
            result_sha256=parsed["result_sha256"],
            participants=parsed["participants"],
            answered_at=c.tx_time(ctx),
            result_tx_id=c.tx_id(ctx),
        )
        await c.put_json(ctx, c.key(ctx, QUERY, query_id), record)
        c.emit(ctx, "QueryAnswered", {"query_id": query_id, "outcome": parsed["outcome"]})
        return record

    async def _query(self, ctx: TransactionContextInterface, query_id: str) -> dict[str, Any]:
        record: dict[str, Any] = await c.require_json(
            ctx, c.key(ctx, QUERY, query_id), "query_id: no such query; register_query first"
        )
        return record

    async def read_query(self, ctx: TransactionContextInterface, query_id: str) -> dict[str, Any]:
        """One query's registration and outcome."""
        c.record_id("query_id", query_id)
        return await self._query(ctx, query_id)

    async def list_queries(self, ctx: TransactionContextInterface) -> list[dict[str, Any]]:
        """Every registered query, in key order."""
        return await c.scan_json(ctx, QUERY)
