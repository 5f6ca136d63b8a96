"""GovernanceContract: who the consortium's hospitals are, changed only by a majority of them.

The consortium sets the founding members once (``init_members``). After that a hospital is added or removed
only by a proposal (from the consortium or any member) that a strict majority of the members *at the time of the
proposal* approve; the change applies in the transaction of the deciding vote. Training runs may only name
current members (LineageContract checks), and a run itself starts only after a majority of its hospitals
approved it (LineageContract:vote_run / start_run) — the consortium operator decides nothing alone.

Keys: ``members`` (the current list), ``membership/<proposal_id>``.
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
        return ["read_members", "read_membership_proposal"]

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
