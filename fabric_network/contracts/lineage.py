"""LineageContract: training runs, their approval, the updates hospitals vouch for, rounds and model versions.

A run is proposed by the consortium (``register_run``: purpose, cohort schema hash, model, DP target, HE
parameters, rounds, code version, participating member hospitals) and starts (``start_run``) only once a strict
majority of its hospitals approved it with their own identities (``vote_run``); the refusal names who has not
approved. A hospital trains only in a run it approved itself.

Before it sends an update, each hospital records the update's SHA-256 with its round, consent snapshot and ε
charge (``record_update``, signed by the hospital). The consortium's round record must reference exactly those:
the contract refuses a participant whose hash, snapshot or ε differ from what that hospital recorded, and names
the hospital. A round also names, per hospital, the consent snapshot it trained on; the snapshot must exist,
belong to that hospital and the run's purpose, and have the stated root — so a model's lineage can only point at
consent states the ledger actually holds.

Keys: ``run/<run_id>``, ``update/<run_id>/<round as 6 digits>/<MSP>``, ``round/<run_id>/<round as 6 digits>``,
``model/<model_id>``.
"""

from __future__ import annotations

from typing import Any

from fabric_network.contracts import common as c
from fabric_network.contracts.budget import CHARGE
from fabric_network.contracts.consent import SNAPSHOT
from fabric_network.contracts.governance import current_members
from fabric_network.shim import Contract, TransactionContextInterface
from privacy.accountant import EPSILON_TOLERANCE

RUN = "run"
NO_RUN = "run_id: no such training run; register_run first"
RUN_BALLOT = c.Ballot(
    field="run_id",
    object_type=RUN,
    missing=NO_RUN,
    voters="hospitals",
    open_status="proposed",
    not_voter="not a hospital of this run",
    event="RunVoted",
)
UPDATE = "update"
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
        "schema_sha256": c.SCHEMA_SHA256,
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

UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["round", "update_sha256", "consent_snapshot_id", "consent_snapshot_root", "charge_tx_id"],
    "properties": {
        "round": {"type": "integer", "minimum": 1, "maximum": MAX_ROUNDS},
        "update_sha256": c.SCHEMA_SHA256,
        "consent_snapshot_id": c.SCHEMA_RECORD_ID,
        "consent_snapshot_root": c.SCHEMA_SHA256,
        "charge_tx_id": {"type": "string", "pattern": r"^[0-9a-f]{16,128}$"},
        "metrics": c.SCHEMA_METRICS,
    },
}

# Why a run ended, as a code: free text stays off the chain (the aggregator's results file has the details).
END_REASONS = ("completed", "too-few-hospitals", "too-few-updates", "resume-impossible")

END_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["status", "rounds_completed", "reason"],
    "properties": {
        "status": {"type": "string", "enum": ["completed", "failed"]},
        "rounds_completed": {"type": "integer", "minimum": 0, "maximum": MAX_ROUNDS},
        "reason": {"type": "string", "enum": list(END_REASONS)},
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


def _update_key(ctx: TransactionContextInterface, run_id: str, round_number: int, hospital: str) -> str:
    return c.key(ctx, UPDATE, run_id, f"{round_number:06d}", hospital)


def _round_number(field: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_ROUNDS:
        raise c.ContractError(f"{field}: must be an integer from 1 to {MAX_ROUNDS}")
    return int(value)


def approval(run: dict[str, Any]) -> dict[str, Any]:
    """The run's approval tally (``common.tally``) plus its status."""
    return {"run_id": run["run_id"], "status": run["status"], **c.tally(run["hospitals"], run["votes"])}


def not_approved_message(run: dict[str, Any]) -> str:
    """Why a run cannot start, naming the hospitals that have not approved it."""
    counted = approval(run)
    missing = [*counted["rejected"], *counted["pending"]]
    return (
        f"run_id: not approved by a majority of its hospitals ({len(counted['approved'])} of "
        f"{len(run['hospitals'])} approved, {counted['needed']} needed); not approved by {', '.join(missing)}"
        + (f" ({', '.join(counted['rejected'])} rejected)" if counted["rejected"] else "")
    )


class LineageContract(Contract):  # type: ignore[misc]  # the library ships no type hints
    """Training runs, rounds and model versions, and the full lineage of a model."""

    Name = "LineageContract"

    def get_evaluate_transactions(self) -> list[str]:
        return [
            "read_run",
            "run_approval",
            "read_update",
            "list_updates",
            "read_round",
            "list_rounds",
            "read_model",
            "list_models",
            "get_model_lineage",
        ]

    async def _run(self, ctx: TransactionContextInterface, run_id: str) -> dict[str, Any]:
        run = await c.require_json(ctx, c.key(ctx, RUN, run_id), NO_RUN)
        return run

    async def _started_run(self, ctx: TransactionContextInterface, run_id: str) -> dict[str, Any]:
        """The run, refused unless it is started (proposed, completed and failed runs take no updates or rounds)."""
        run = await self._run(ctx, run_id)
        if run["status"] != "started":
            raise c.ContractError(f"run_id: the run is {run['status']}, not started")
        return run

    async def register_run(self, ctx: TransactionContextInterface, run_id: str, spec: str) -> dict[str, Any]:
        """Propose a training run (JSON ``spec``); it starts only after a majority of its hospitals approve it."""
        c.require_consortium(ctx)
        c.record_id("run_id", run_id)
        parsed = c.json_argument("spec", spec, RUN_SCHEMA)
        if "model_name" in parsed:
            c.record_id("spec.model_name", parsed["model_name"])
        members = await current_members(ctx)
        if not members:
            raise c.ContractError("spec.hospitals: the consortium has no members yet; GovernanceContract:init_members")
        outsiders = [h for h in parsed["hospitals"] if h not in members]
        if outsiders:
            raise c.ContractError(f"spec.hospitals: not members of the consortium: {', '.join(outsiders)}")
        state_key = c.key(ctx, RUN, run_id)
        if await c.get_json(ctx, state_key) is not None:
            raise c.ContractError("run_id: a run with this id is registered already")
        run = {
            "run_id": run_id,
            **parsed,
            "status": "proposed",
            "votes": {},
            "registered_at": c.tx_time(ctx),
            "tx_id": c.tx_id(ctx),
        }
        await c.put_json(ctx, state_key, run)
        c.emit(ctx, "RunRegistered", {"run_id": run_id, "purpose": run["purpose"], "tx_id": run["tx_id"]})
        return run

    async def vote_run(self, ctx: TransactionContextInterface, run_id: str, vote: str) -> dict[str, Any]:
        """A hospital of the run approves or rejects it with its own identity (until the run starts).

        The majority is applied by ``start_run`` (the consortium starts the run), not by the deciding vote.
        """
        run, _ = await c.cast_vote(ctx, RUN_BALLOT, run_id, vote)
        return {**run, "approval": approval(run)}

    async def start_run(self, ctx: TransactionContextInterface, run_id: str) -> dict[str, Any]:
        """Start a proposed run (consortium); refused, naming who has not approved, without a strict majority."""
        c.require_consortium(ctx)
        c.record_id("run_id", run_id)
        run = await self._run(ctx, run_id)
        if run["status"] != "proposed":
            raise c.ContractError(f"run_id: the run is {run['status']} already")
        if not approval(run)["majority"]:
            raise c.ContractError(not_approved_message(run))
        run.update(status="started", started_at=c.tx_time(ctx))
        await c.put_json(ctx, c.key(ctx, RUN, run_id), run)
        c.emit(ctx, "RunStarted", {"run_id": run_id, "tx_id": c.tx_id(ctx)})
        return run

    async def end_run(self, ctx: TransactionContextInterface, run_id: str, outcome: str) -> dict[str, Any]:
        """End a started run (consortium): ``completed`` after its last round, else ``failed`` with a reason code.

        Once ended, no hospital can vouch for an update and no round can be recorded: a run that crashed and could
        not be resumed is closed for good, so nobody trains (and spends ε) in it again.
        """
        c.require_consortium(ctx)
        c.record_id("run_id", run_id)
        parsed = c.json_argument("outcome", outcome, END_SCHEMA)
        run = await self._started_run(ctx, run_id)
        completed, planned = parsed["rounds_completed"], run.get("rounds", MAX_ROUNDS)
        if completed > planned:
            raise c.ContractError(f"outcome.rounds_completed: the run has {planned} rounds")
        if (parsed["status"] == "completed") != (parsed["reason"] == "completed"):
            raise c.ContractError("outcome.reason: 'completed' goes with status completed, and only with it")
        if parsed["status"] == "completed" and "rounds" in run and completed != planned:
            raise c.ContractError(f"outcome.rounds_completed: a completed run ran all {planned} rounds")
        run.update(status=parsed["status"], ended_at=c.tx_time(ctx), end=parsed)
        await c.put_json(ctx, c.key(ctx, RUN, run_id), run)
        c.emit(ctx, "RunEnded", {"run_id": run_id, **parsed, "tx_id": c.tx_id(ctx)})
        return run

    async def run_approval(self, ctx: TransactionContextInterface, run_id: str) -> dict[str, Any]:
        """Who approved, rejected and has not voted on a run; whether the majority is reached; its status."""
        c.record_id("run_id", run_id)
        return approval(await self._run(ctx, run_id))

    async def record_update(self, ctx: TransactionContextInterface, run_id: str, update: str) -> dict[str, Any]:
        """A hospital vouches for the update it is about to send: its hash, round, consent snapshot and ε charge."""
        hospital = c.require_hospital(ctx)
        c.record_id("run_id", run_id)
        parsed = c.json_argument("update", update, UPDATE_SCHEMA)
        run = await self._started_run(ctx, run_id)
        if run["votes"].get(hospital) != "approve":
            raise c.ContractError(f"caller: {hospital} has not approved this run")
        number = parsed["round"]
        state_key = _update_key(ctx, run_id, number, hospital)
        if await c.get_json(ctx, state_key) is not None:
            raise c.ContractError("update.round: this hospital recorded its update for this round already")
        c.record_id("update.consent_snapshot_id", parsed["consent_snapshot_id"])
        await self._check_snapshot(ctx, "update", hospital, run, parsed)
        charge = await c.require_json(
            ctx,
            c.key(ctx, CHARGE, hospital, run["purpose"], run_id, f"{number:06d}"),
            "update.charge_tx_id: this hospital has no ε charge for this run and round",
        )
        if charge["tx_id"] != parsed["charge_tx_id"]:
            raise c.ContractError("update.charge_tx_id: differs from this hospital's ε charge for this round")
        record = {
            "run_id": run_id,
            "hospital": hospital,
            **parsed,
            "epsilon": charge["epsilon"],
            "recorded_at": c.tx_time(ctx),
            "tx_id": c.tx_id(ctx),
        }
        await c.put_json(ctx, state_key, record)
        c.emit(ctx, "UpdateRecorded", {"run_id": run_id, "round": number, "hospital": hospital})
        return record

    async def read_update(
        self, ctx: TransactionContextInterface, run_id: str, round_number: str, hospital: str
    ) -> dict[str, Any]:
        """The update a hospital recorded for a round."""
        c.record_id("run_id", run_id)
        c.msp_id("hospital", hospital)
        number = _round_number("round_number", round_number)
        return await c.require_json(
            ctx, _update_key(ctx, run_id, number, hospital), f"round_number: {hospital} recorded no update for it"
        )

    async def list_updates(self, ctx: TransactionContextInterface, run_id: str) -> list[dict[str, Any]]:
        """Every update the hospitals recorded in a run, by round and hospital."""
        c.record_id("run_id", run_id)
        return await c.scan_json(ctx, UPDATE, run_id)

    async def _check_snapshot(
        self,
        ctx: TransactionContextInterface,
        field: str,
        hospital: str,
        run: dict[str, Any],
        record: dict[str, Any],
    ) -> None:
        """The consent snapshot a record names exists, is the hospital's for the run's purpose, and has its root."""
        snapshot = await c.require_json(
            ctx,
            c.key(ctx, SNAPSHOT, record["consent_snapshot_id"]),
            f"{field}.consent_snapshot_id: no such consent snapshot on the ledger",
        )
        if snapshot["hospital"] != hospital or snapshot["purpose"] != run["purpose"]:
            raise c.ContractError(f"{field}.consent_snapshot_id: belongs to another hospital or purpose")
        if snapshot["root"] != record["consent_snapshot_root"]:
            raise c.ContractError(f"{field}.consent_snapshot_root: differs from the snapshot on the ledger")

    async def record_round(self, ctx: TransactionContextInterface, run_id: str, round_record: str) -> dict[str, Any]:
        """Record one round: participants with consent-snapshot roots, ε spent and update hashes; model hash."""
        c.require_consortium(ctx)
        c.record_id("run_id", run_id)
        parsed = c.json_argument("round_record", round_record, ROUND_SCHEMA)
        run = await self._started_run(ctx, run_id)
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
            await self._check_snapshot(ctx, field, hospital, run, participant)
            await self._check_vouched(ctx, field, run, number, participant)
        for hospital in parsed.get("dropped", []):
            if hospital in seen or hospital not in run["hospitals"]:
                raise c.ContractError("round_record.dropped: must list hospitals of this run that did not take part")
        record = {"run_id": run_id, **parsed, "recorded_at": c.tx_time(ctx), "tx_id": c.tx_id(ctx)}
        await c.put_json(ctx, state_key, record)
        c.emit(ctx, "RoundRecorded", {"run_id": run_id, "round": number, "model_sha256": parsed["model_sha256"]})
        return record

    async def _check_vouched(
        self,
        ctx: TransactionContextInterface,
        field: str,
        run: dict[str, Any],
        number: int,
        participant: dict[str, Any],
    ) -> None:
        """A participant must be exactly what its hospital recorded for the round (``record_update``)."""
        hospital = participant["hospital"]
        vouched = await c.require_json(
            ctx,
            _update_key(ctx, run["run_id"], number, hospital),
            f"{field}.update_sha256: {hospital} recorded no update for round {number}",
        )
        for name in ("update_sha256", "consent_snapshot_id", "consent_snapshot_root"):
            if participant[name] != vouched[name]:
                raise c.ContractError(f"{field}.{name}: differs from what {hospital} recorded for round {number}")
        if abs(participant["epsilon_spent"] - vouched["epsilon"]) > EPSILON_TOLERANCE:
            raise c.ContractError(f"{field}.epsilon_spent: differs from {hospital}'s ε charge for round {number}")

    async def read_run(self, ctx: TransactionContextInterface, run_id: str) -> dict[str, Any]:
        """One training run."""
        c.record_id("run_id", run_id)
        return await self._run(ctx, run_id)

    async def read_round(self, ctx: TransactionContextInterface, run_id: str, round_number: str) -> dict[str, Any]:
        """One round of a run."""
        c.record_id("run_id", run_id)
        number = _round_number("round_number", round_number)
        record = await c.require_json(
            ctx, _round_key(ctx, run_id, number), "round_number: this round of the run is not recorded"
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
        """The model, its run, every round of the run up to the model's round and the updates hospitals vouched for."""
        model = await self.read_model(ctx, model_id)
        run = await self._run(ctx, model["run_id"])
        rounds = [r for r in await c.scan_json(ctx, ROUND, model["run_id"]) if r["round"] <= model["round"]]
        updates = [u for u in await c.scan_json(ctx, UPDATE, model["run_id"]) if u["round"] <= model["round"]]
        return {"model": model, "run": run, "rounds": rounds, "updates": updates}
