"""GovernanceContract: who the consortium's hospitals are, changed only by a majority of them.

The consortium sets the founding members once (``init_members``). After that a hospital is added or removed
only by a proposal (from the consortium or any member) that a strict majority of the members *at the time of the
proposal* approve; the change applies in the transaction of the deciding vote. Training runs may only name
current members (LineageContract checks), and a run itself starts only after a majority of its hospitals
approved it (LineageContract:vote_run / start_run) — the consortium operator decides nothing alone.

The hospitals' shared CKKS key is theirs too: the hospital that draws it records the key id, the SHA-256 of its
public context and the recipients under its own identity (``record_he_key``), and each recipient records that it
accepted exactly that key (``accept_he_key``). No key material reaches the ledger; a recipient installs a sealed
key only if this record names its sender and itself (federation/key_transport.py). A new key (rotation) takes a
new key id, and a key id or public context is recorded once.

Keys: ``members`` (the current list), ``membership/<proposal_id>``, ``he-key/<key_id>``,
``he-key-context/<public_context_sha256>`` (the key id a public context was recorded under).
"""

from __future__ import annotations

from typing import Any

from fabric_network.contracts import common as c
from fabric_network.shim import Contract, TransactionContextInterface

MEMBERS = "members"
MEMBERSHIP = "membership"
NO_PROPOSAL = "proposal_id: no such membership proposal"
PROPOSAL_BALLOT = c.Ballot(
    field="proposal_id",
    object_type=MEMBERSHIP,
    missing=NO_PROPOSAL,
    voters="voters",
    open_status="open",
    not_voter="only the hospitals that were members when it was proposed may vote",
    event="MembershipVoted",
)

CHANGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["action", "hospital"],
    "properties": {"action": {"type": "string", "enum": ["add", "remove"]}, "hospital": c.SCHEMA_MSP_ID},
}
HE_KEY = "he-key"
HE_KEY_CONTEXT = "he-key-context"
NO_HE_KEY = "key_id: no such HE key; its creating hospital records it with record_he_key first"
HE_KEY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["public_context_sha256", "recipients"],
    "properties": {
        "public_context_sha256": c.SCHEMA_SHA256,
        "recipients": {"type": "array", "items": c.SCHEMA_MSP_ID, "maxItems": 63, "uniqueItems": True},
    },
}
MEMBERS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": c.SCHEMA_MSP_ID,
    "minItems": 1,
    "maxItems": 64,
    "uniqueItems": True,
}


async def current_members(ctx: TransactionContextInterface) -> list[str]:
    """The current member hospitals' MSP ids (empty before ``init_members``)."""
    record = await c.get_json(ctx, c.key(ctx, MEMBERS))
    return list(record["hospitals"]) if record else []


class GovernanceContract(Contract):  # type: ignore[misc]  # the library ships no type hints
    """Consortium membership, changed by majority-approved proposals."""

    Name = "GovernanceContract"

    def get_evaluate_transactions(self) -> list[str]:
        return ["read_members", "read_membership_proposal", "read_he_key", "list_he_keys"]

    async def _store_members(self, ctx: TransactionContextInterface, hospitals: list[str]) -> dict[str, Any]:
        record = {"hospitals": sorted(hospitals), "updated_at": c.tx_time(ctx), "tx_id": c.tx_id(ctx)}
        await c.put_json(ctx, c.key(ctx, MEMBERS), record)
        return record

    async def init_members(self, ctx: TransactionContextInterface, hospitals: str) -> dict[str, Any]:
        """Set the founding member hospitals (consortium, once; later changes go through proposals)."""
        c.require_consortium(ctx)
        parsed = c.json_argument("hospitals", hospitals, MEMBERS_SCHEMA)
        if c.CONSORTIUM_MSP in parsed:
            raise c.ContractError(f"hospitals: {c.CONSORTIUM_MSP} is the operator, not a member hospital")
        if await current_members(ctx):
            raise c.ContractError("hospitals: the members are set already; propose_membership to change them")
        record = await self._store_members(ctx, parsed)
        c.emit(ctx, "MembersInitialised", {"hospitals": record["hospitals"], "tx_id": record["tx_id"]})
        return record

    async def read_members(self, ctx: TransactionContextInterface) -> dict[str, Any]:
        """The current member hospitals (``{"hospitals": []}`` before ``init_members``)."""
        record = await c.get_json(ctx, c.key(ctx, MEMBERS))
        return record or {"hospitals": []}

    async def propose_membership(
        self, ctx: TransactionContextInterface, proposal_id: str, change: str
    ) -> dict[str, Any]:
        """Propose adding or removing a hospital (JSON ``{action: add|remove, hospital}``); members then vote."""
        caller = c.caller_msp(ctx)
        members = await current_members(ctx)
        if caller != c.CONSORTIUM_MSP and caller not in members:
            raise c.ContractError("caller: only the consortium or a member hospital may propose a membership change")
        c.require_role(ctx, ("client", "admin"))
        c.record_id("proposal_id", proposal_id)
        parsed = c.json_argument("change", change, CHANGE_SCHEMA)
        if not members:
            raise c.ContractError("change: the consortium has no members yet; init_members first")
        if parsed["hospital"] == c.CONSORTIUM_MSP:
            raise c.ContractError(f"change.hospital: {c.CONSORTIUM_MSP} is the operator, not a member hospital")
        if (parsed["action"] == "add") == (parsed["hospital"] in members):
            raise c.ContractError(
                "change.hospital: is a member already" if parsed["action"] == "add" else "change.hospital: not a member"
            )
        state_key = c.key(ctx, MEMBERSHIP, proposal_id)
        if await c.get_json(ctx, state_key) is not None:
            raise c.ContractError("proposal_id: a proposal with this id exists already")
        proposal = {
            "proposal_id": proposal_id,
            "change": parsed,
            "proposer": caller,
            "voters": members,
            "votes": {},
            "status": "open",
            "proposed_at": c.tx_time(ctx),
            "tx_id": c.tx_id(ctx),
        }
        await c.put_json(ctx, state_key, proposal)
        c.emit(ctx, "MembershipProposed", {"proposal_id": proposal_id, **parsed})
        return proposal

    async def vote_membership(self, ctx: TransactionContextInterface, proposal_id: str, vote: str) -> dict[str, Any]:
        """A member votes approve or reject; the deciding vote applies (or closes) the proposal."""

        async def settle(proposal: dict[str, Any], counted: dict[str, Any]) -> None:
            if counted["majority"]:
                members = await current_members(ctx)
                change = proposal["change"]
                if change["action"] == "add" and change["hospital"] not in members:
                    members.append(change["hospital"])
                elif change["action"] == "remove" and change["hospital"] in members:
                    members.remove(change["hospital"])
                await self._store_members(ctx, members)
                proposal["status"] = "approved"
            elif counted["out_of_reach"]:
                proposal["status"] = "rejected"
            proposal.update(updated_at=c.tx_time(ctx), tx_id=c.tx_id(ctx))

        proposal, counted = await c.cast_vote(ctx, PROPOSAL_BALLOT, proposal_id, vote, settle)
        return {**proposal, "tally": counted}

    async def read_membership_proposal(self, ctx: TransactionContextInterface, proposal_id: str) -> dict[str, Any]:
        """One membership proposal with its tally."""
        c.record_id("proposal_id", proposal_id)
        proposal = await c.require_json(ctx, c.key(ctx, MEMBERSHIP, proposal_id), NO_PROPOSAL)
        return {**proposal, "tally": c.tally(proposal["voters"], proposal["votes"])}

    async def record_he_key(self, ctx: TransactionContextInterface, key_id: str, key: str) -> dict[str, Any]:
        """The creating hospital records a new CKKS key (JSON ``{public_context_sha256, recipients}``), once."""
        creator = c.require_hospital(ctx)
        c.record_id("key_id", key_id)
        parsed = c.json_argument("key", key, HE_KEY_SCHEMA)
        if creator in parsed["recipients"]:
            raise c.ContractError("key.recipients: the creating hospital holds the key already; list the others")
        if c.CONSORTIUM_MSP in parsed["recipients"]:
            raise c.ContractError(f"key.recipients: {c.CONSORTIUM_MSP} aggregates and may never hold the secret key")
        state_key = c.key(ctx, HE_KEY, key_id)
        if await c.get_json(ctx, state_key) is not None:
            raise c.ContractError("key_id: a key with this id is recorded already; a new key takes a new key id")
        context_key = c.key(ctx, HE_KEY_CONTEXT, parsed["public_context_sha256"])
        if await c.get_json(ctx, context_key) is not None:
            raise c.ContractError("key.public_context_sha256: this public context is recorded already; draw a new key")
        record = {
            "key_id": key_id,
            "creator": creator,
            "public_context_sha256": parsed["public_context_sha256"],
            "recipients": sorted(parsed["recipients"]),
            "accepted": {},
            "recorded_at": c.tx_time(ctx),
            "tx_id": c.tx_id(ctx),
        }
        await c.put_json(ctx, state_key, record)
        await c.put_json(ctx, context_key, {"key_id": key_id})
        c.emit(ctx, "HEKeyRecorded", {"key_id": key_id, "creator": creator, "recipients": record["recipients"]})
        return record

    async def accept_he_key(
        self, ctx: TransactionContextInterface, key_id: str, public_context_sha256: str
    ) -> dict[str, Any]:
        """A recipient records that it installed the key whose public context has this SHA-256, once."""
        hospital = c.require_hospital(ctx)
        c.record_id("key_id", key_id)
        if not isinstance(public_context_sha256, str) or not c.SHA256_HEX.fullmatch(public_context_sha256):
            raise c.ContractError("public_context_sha256: must be 64 lowercase hex characters (a SHA-256)")
        state_key = c.key(ctx, HE_KEY, key_id)
        record = await c.require_json(ctx, state_key, NO_HE_KEY)
        if hospital not in record["recipients"]:
            raise c.ContractError("caller: not a recipient of this key")
        if public_context_sha256 != record["public_context_sha256"]:
            raise c.ContractError(
                "public_context_sha256: differs from the key's recorded public context; the installed key is another"
            )
        if hospital in record["accepted"]:
            raise c.ContractError("caller: has accepted this key already")
        record["accepted"][hospital] = {"accepted_at": c.tx_time(ctx), "tx_id": c.tx_id(ctx)}
        await c.put_json(ctx, state_key, record)
        c.emit(ctx, "HEKeyAccepted", {"key_id": key_id, "hospital": hospital})
        return record

    async def read_he_key(self, ctx: TransactionContextInterface, key_id: str) -> dict[str, Any]:
        """One HE key's record: creator, public context hash, recipients and who accepted it."""
        c.record_id("key_id", key_id)
        return await c.require_json(ctx, c.key(ctx, HE_KEY, key_id), NO_HE_KEY)

    async def list_he_keys(self, ctx: TransactionContextInterface) -> list[dict[str, Any]]:
        """Every recorded HE key, in key order."""
        return await c.scan_json(ctx, HE_KEY)
