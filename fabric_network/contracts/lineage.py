"""LineageContract: training runs, their rounds and the model versions they produce.

The consortium (``ConsortiumMSP``) registers runs, records rounds and registers models. A round names, per
participating hospital, the consent snapshot it trained on; the contract checks that snapshot exists on the
ledger, belongs to that hospital and the run's purpose, and has the stated root — so a model's lineage can only
point at consent states the ledger actually holds.

Keys: ``run/<run_id>``, ``round/<run_id>/<round as 6 digits>``, ``model/<model_id>``.
"""

from __future__ import annotations

from typing import Any

from fabric_network.contracts import common as c
from fabric_network.contracts.consent import SNAPSHOT
from fabric_network.shim import Contract, TransactionContextInterface

RUN = "run"
ROUND = "round"
MODEL = "model"
MAX_ROUNDS = 100_000

RUN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["purpose", "hospitals", "dp", "he", "code_version"],
    "properties": {
        "purpose": {"type": "string", "enum": sorted(c.PURPOSE_CODES)},
        "hospitals": {"type": "array", "items": c.SCHEMA_MSP_ID, "minItems": 1, "maxItems": 64, "uniqueItems": True},
        "dp": {
            "type": "object",
            "additionalProperties": False,
            "required": ["epsilon", "delta"],
            "properties": {
                "epsilon": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                "delta": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.01},
                "noise_multiplier": {"type": "number", "minimum": 0, "maximum": 1000},
                "max_grad_norm": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
                "accountant": {"type": "string", "enum": ["rdp", "prv", "gdp"]},
                "mode": {"type": "string", "pattern": r"^[a-z_]{1,32}$"},
            },
        },
        "he": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scheme"],
            "properties": {
                "scheme": {"type": "string", "enum": ["ckks", "bfv", "none"]},
                "poly_modulus_degree": {"type": "integer", "minimum": 1024, "maximum": 65536},
                "coeff_mod_bit_sizes": {"type": "array", "items": {"type": "integer"}, "maxItems": 16},
                "global_scale_bits": {"type": "integer", "minimum": 1, "maximum": 80},
                "packing": {"type": "string", "pattern": r"^[a-z0-9_-]{1,32}$"},
            },
        },
        "code_version": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"},
        "model_name": c.SCHEMA_RECORD_ID,
        "min_participants": {"type": "integer", "minimum": 1, "maximum": 64},
        "rounds": {"type": "integer", "minimum": 1, "maximum": MAX_ROUNDS},
    },
}

ROUND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["round", "participants", "model_sha256"],
    "properties": {
        "round": {"type": "integer", "minimum": 1, "maximum": MAX_ROUNDS},
        "participants": {
            "type": "array",
            "minItems": 1,
            "maxItems": 64,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "hospital",
                    "consent_snapshot_id",
                    "consent_snapshot_root",
                    "epsilon_spent",
                    "update_sha256",
                ],
                "properties": {
                    "hospital": c.SCHEMA_MSP_ID,
                    "consent_snapshot_id": c.SCHEMA_RECORD_ID,
                    "consent_snapshot_root": c.SCHEMA_SHA256,
                    "epsilon_spent": c.SCHEMA_EPSILON,
                    "num_examples": {"type": "integer", "minimum": 0, "maximum": 100_000_000},
                    "update_sha256": c.SCHEMA_SHA256,
                },
            },
        },
        "dropped": {"type": "array", "items": c.SCHEMA_MSP_ID, "maxItems": 64, "uniqueItems": True},
        "aggregate_sha256": c.SCHEMA_SHA256,
        "model_sha256": c.SCHEMA_SHA256,
        "metrics": c.SCHEMA_METRICS,
        "duration_s": {"type": "number", "minimum": 0, "maximum": 1e7},
    },
}

MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["run_id", "round", "sha256"],
    "properties": {
        "run_id": c.SCHEMA_RECORD_ID,
        "round": {"type": "integer", "minimum": 1, "maximum": MAX_ROUNDS},
        "sha256": c.SCHEMA_SHA256,
        "name": c.SCHEMA_RECORD_ID,
        "version": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$"},
        "metrics": c.SCHEMA_METRICS,
    },
}


def _round_key(ctx: TransactionContextInterface, run_id: str, round_number: int) -> str:
    return c.key(ctx, ROUND, run_id, f"{round_number:06d}")


class LineageContract(Contract):  # type: ignore[misc]  # the library ships no type hints
    """Training runs, rounds and model versions, and the full lineage of a model."""

    Name = "LineageContract"

    def get_evaluate_transactions(self) -> list[str]:
        return ["read_run", "read_round", "list_rounds", "read_model", "list_models", "get_model_lineage"]

    async def _run(self, ctx: TransactionContextInterface, run_id: str) -> dict[str, Any]:
        run = await c.require_json(ctx, c.key(ctx, RUN, run_id), "run_id: no such training run; register_run first")
        return run

    async def register_run(self, ctx: TransactionContextInterface, run_id: str, spec: str) -> dict[str, Any]:
        """Register a training run: purpose, hospitals, DP and HE parameters, code version (JSON ``spec``)."""
        c.require_consortium(ctx)
        c.record_id("run_id", run_id)
        parsed = c.json_argument("spec", spec, RUN_SCHEMA)
        if "model_name" in parsed:
            c.record_id("spec.model_name", parsed["model_name"])
        state_key = c.key(ctx, RUN, run_id)
        if await c.get_json(ctx, state_key) is not None:
            raise c.ContractError("run_id: a run with this id is registered already")
        run = {"run_id": run_id, **parsed, "registered_at": c.tx_time(ctx), "tx_id": c.tx_id(ctx)}
        await c.put_json(ctx, state_key, run)
        c.emit(ctx, "RunRegistered", {"run_id": run_id, "purpose": run["purpose"], "tx_id": run["tx_id"]})
        return run

    async def record_round(self, ctx: TransactionContextInterface, run_id: str, round_record: str) -> dict[str, Any]:
        """Record one round: participants with consent-snapshot roots, ε spent and update hashes; model hash."""
        c.require_consortium(ctx)
        c.record_id("run_id", run_id)
        parsed = c.json_argument("round_record", round_record, ROUND_SCHEMA)
        run = await self._run(ctx, run_id)
        number = parsed["round"]
        state_key = _round_key(ctx, run_id, number)
        if await c.get_json(ctx, state_key) is not None:
            raise c.ContractError("round_record.round: this round is recorded already")
        seen: set[str] = set()
        for i, participant in enumerate(parsed["participants"]):
            field = f"round_record.participants[{i}]"
            hospital = participant["hospital"]
            if hospital not in run["hospitals"]:
                raise c.ContractError(f"{field}.hospital: not a hospital of this run")
            if hospital in seen:
                raise c.ContractError(f"{field}.hospital: listed twice")
            seen.add(hospital)
            c.record_id(f"{field}.consent_snapshot_id", participant["consent_snapshot_id"])
            snapshot = await c.require_json(
                ctx,
                c.key(ctx, SNAPSHOT, participant["consent_snapshot_id"]),
                f"{field}.consent_snapshot_id: no such consent snapshot on the ledger",
            )
            if snapshot["hospital"] != hospital or snapshot["purpose"] != run["purpose"]:
                raise c.ContractError(f"{field}.consent_snapshot_id: belongs to another hospital or purpose")
            if snapshot["root"] != participant["consent_snapshot_root"]:
                raise c.ContractError(f"{field}.consent_snapshot_root: differs from the snapshot on the ledger")
        for hospital in parsed.get("dropped", []):
            if hospital in seen or hospital not in run["hospitals"]:
                raise c.ContractError("round_record.dropped: must list hospitals of this run that did not take part")
        record = {"run_id": run_id, **parsed, "recorded_at": c.tx_time(ctx), "tx_id": c.tx_id(ctx)}
        await c.put_json(ctx, state_key, record)
        c.emit(ctx, "RoundRecorded", {"run_id": run_id, "round": number, "model_sha256": parsed["model_sha256"]})
        return record

    async def read_run(self, ctx: TransactionContextInterface, run_id: str) -> dict[str, Any]:
        """One training run."""
        c.record_id("run_id", run_id)
        return await self._run(ctx, run_id)

    async def read_round(self, ctx: TransactionContextInterface, run_id: str, round_number: str) -> dict[str, Any]:
        """One round of a run."""
        c.record_id("run_id", run_id)
        if not round_number.isdigit() or not 1 <= int(round_number) <= MAX_ROUNDS:
            raise c.ContractError(f"round_number: must be an integer from 1 to {MAX_ROUNDS}")
        record = await c.require_json(
            ctx, _round_key(ctx, run_id, int(round_number)), "round_number: this round of the run is not recorded"
        )
        return record

    async def list_rounds(self, ctx: TransactionContextInterface, run_id: str) -> list[dict[str, Any]]:
        """Every recorded round of a run, in round order."""
        c.record_id("run_id", run_id)
        return await c.scan_json(ctx, ROUND, run_id)

    async def register_model(self, ctx: TransactionContextInterface, model_id: str, model: str) -> dict[str, Any]:
        """Register a model version (JSON ``model``: run, round, SHA-256 of the artefact, name, version)."""
        c.require_consortium(ctx)
        c.record_id("model_id", model_id)
        parsed = c.json_argument("model", model, MODEL_SCHEMA)
        c.record_id("model.run_id", parsed["run_id"])
        if "name" in parsed:
            c.record_id("model.name", parsed["name"])
        state_key = c.key(ctx, MODEL, model_id)
        if await c.get_json(ctx, state_key) is not None:
            raise c.ContractError("model_id: a model with this id is registered already")
        await self._run(ctx, parsed["run_id"])
        round_record = await c.require_json(
            ctx,
            _round_key(ctx, parsed["run_id"], parsed["round"]),
            "model.round: this round of the run is not recorded",
        )
        if round_record["model_sha256"] != parsed["sha256"]:
            raise c.ContractError("model.sha256: differs from the model hash recorded for that round")
        record = {"model_id": model_id, **parsed, "registered_at": c.tx_time(ctx), "tx_id": c.tx_id(ctx)}
        await c.put_json(ctx, state_key, record)
        c.emit(ctx, "ModelRegistered", {"model_id": model_id, "sha256": parsed["sha256"], "tx_id": record["tx_id"]})
        return record

    async def read_model(self, ctx: TransactionContextInterface, model_id: str) -> dict[str, Any]:
        """One registered model version."""
        c.record_id("model_id", model_id)
        record = await c.require_json(ctx, c.key(ctx, MODEL, model_id), "model_id: no such registered model")
        return record

    async def list_models(self, ctx: TransactionContextInterface) -> list[dict[str, Any]]:
        """Every registered model version, by model id."""
        return await c.scan_json(ctx, MODEL)

    async def get_model_lineage(self, ctx: TransactionContextInterface, model_id: str) -> dict[str, Any]:
        """The model, its run and every round of the run up to the model's round."""
        model = await self.read_model(ctx, model_id)
        run = await self._run(ctx, model["run_id"])
        rounds = [r for r in await c.scan_json(ctx, ROUND, model["run_id"]) if r["round"] <= model["round"]]
        return {"model": model, "run": run, "rounds": rounds}
