"""ConsentContract: patients' consent per purpose, consent snapshots for training rounds, erasure records.

Only pseudonyms go on chain (random 256-bit values drawn by the hospital); the MRN → pseudonym table stays at
the hospital. A consent belongs to the hospital (MSP id) that recorded it: only that hospital may update or
withdraw it, or record a consent for the same pseudonym.

Keys (one record per key, so two hospitals never contend for the same key):
``consent/<pseudonym>/<purpose>``, ``snapshot/<snapshot_id>``, ``erasure/<pseudonym>``.
"""

from __future__ import annotations

from typing import Any

from fabric_network.contracts import common as c
from fabric_network.shim import Contract, TransactionContextInterface

CONSENT = "consent"
SNAPSHOT = "snapshot"
ERASURE = "erasure"
ERASURE_BASIS = "GDPR-Art17"
PSEUDONYM_LIST_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "pattern": c.PSEUDONYM.pattern},
    "uniqueItems": True,
    "maxItems": 1_000_000,
}


def _is_active(record: dict[str, Any], at: str) -> bool:
    """Active at ``at`` (canonical UTC text): granted, within its validity period and not withdrawn by then."""
    if record["valid_from"] > at or (record["valid_until"] and at >= record["valid_until"]):
        return False
    return record["status"] == "active" or (record["withdrawn_at"] is not None and at < record["withdrawn_at"])


class ConsentContract(Contract):  # type: ignore[misc]  # the library ships no type hints
    """Record, update and withdraw consents; list active consents; consent snapshots; erasure records."""

    Name = "ConsentContract"

    def get_evaluate_transactions(self) -> list[str]:
        return ["read_consent", "list_active_consents", "read_consent_snapshot", "consent_history", "read_erasure"]

    @staticmethod
    def _validity(valid_from: str, valid_until: str) -> tuple[str, str]:
        start = c.timestamp("valid_from", valid_from)
        end = c.timestamp("valid_until", valid_until, optional=True)
        if end and end <= start:
            raise c.ContractError("valid_until: must be later than valid_from (or empty for no end)")
        return start, end

    @staticmethod
    def _scope(scope: str) -> str:
        if scope not in c.CONSENT_SCOPES:
            raise c.ContractError(f"scope: must be a FHIR Consent scope code, one of {', '.join(c.CONSENT_SCOPES)}")
        return scope

    async def _consent(self, ctx: TransactionContextInterface, pseudonym: str, purpose: str) -> dict[str, Any]:
        """The consent record of this pseudonym and purpose; an error naming the pseudonym when none exists."""
        return await c.require_json(
            ctx,
            c.key(ctx, CONSENT, pseudonym, purpose),
            "pseudonym: no consent recorded for this pseudonym and purpose",
        )

    async def _owned(self, ctx: TransactionContextInterface, pseudonym: str, purpose: str) -> dict[str, Any]:
        """The existing consent, which the calling hospital must own."""
        hospital = c.require_hospital(ctx)
        record = await self._consent(ctx, pseudonym, purpose)
        if record["hospital"] != hospital:
            raise c.ContractError("caller: this consent belongs to another hospital; only it may change it")
        return record

    async def _store(self, ctx: TransactionContextInterface, record: dict[str, Any], event: str) -> None:
        """Write a consent record under its one key and announce it with the pseudonym, never more."""
        await c.put_json(ctx, c.key(ctx, CONSENT, record["pseudonym"], record["purpose"]), record)
        summary = {k: record[k] for k in ("hospital", "pseudonym", "purpose", "tx_id")}
        c.emit(ctx, event, summary)

    async def _refuse_if_erased(self, ctx: TransactionContextInterface, pseudonym: str) -> None:
        if await c.get_json(ctx, c.key(ctx, ERASURE, pseudonym)) is not None:
            raise c.ContractError("pseudonym: this patient was erased (GDPR Art. 17); no new consent can be recorded")

    async def record_consent(
        self,
        ctx: TransactionContextInterface,
        pseudonym: str,
        purpose: str,
        scope: str,
        valid_from: str,
        valid_until: str,
    ) -> dict[str, Any]:
        """Record a new consent of the caller's hospital's patient; valid_until "" means open-ended."""
        hospital = c.require_hospital(ctx)
        c.pseudonym("pseudonym", pseudonym)
        c.purpose("purpose", purpose)
        self._scope(scope)
        start, end = self._validity(valid_from, valid_until)
        await self._refuse_if_erased(ctx, pseudonym)
        state_key = c.key(ctx, CONSENT, pseudonym, purpose)
        existing = await c.get_json(ctx, state_key)
        if existing is not None:
            if existing["hospital"] != hospital:
                raise c.ContractError("caller: this consent belongs to another hospital; only it may change it")
            raise c.ContractError("pseudonym: a consent for this purpose exists already; use update_consent")
        now = c.tx_time(ctx)
        record = {
            "pseudonym": pseudonym,
            "purpose": purpose,
            "scope": scope,
            "hospital": hospital,
            "status": "active",
            "valid_from": start,
            "valid_until": end,
            "recorded_at": now,
            "updated_at": now,
            "withdrawn_at": None,
            "tx_id": c.tx_id(ctx),
        }
        await self._store(ctx, record, "ConsentRecorded")
        return record

    async def update_consent(
        self,
        ctx: TransactionContextInterface,
        pseudonym: str,
        purpose: str,
        scope: str,
        valid_from: str,
        valid_until: str,
    ) -> dict[str, Any]:
        """Change scope or validity of the caller's consent; this (re-)activates a withdrawn consent."""
        c.pseudonym("pseudonym", pseudonym)
        c.purpose("purpose", purpose)
        self._scope(scope)
        start, end = self._validity(valid_from, valid_until)
        await self._refuse_if_erased(ctx, pseudonym)
        record = await self._owned(ctx, pseudonym, purpose)
        record.update(
            scope=scope,
            valid_from=start,
            valid_until=end,
            status="active",
            withdrawn_at=None,
            updated_at=c.tx_time(ctx),
            tx_id=c.tx_id(ctx),
        )
        await self._store(ctx, record, "ConsentUpdated")
        return record

    async def withdraw_consent(self, ctx: TransactionContextInterface, pseudonym: str, purpose: str) -> dict[str, Any]:
        """Withdraw the caller's consent; it is no longer active from the transaction's time on."""
        c.pseudonym("pseudonym", pseudonym)
        c.purpose("purpose", purpose)
        record = await self._owned(ctx, pseudonym, purpose)
        if record["status"] != "active":
            raise c.ContractError("pseudonym: this consent is already withdrawn")
        now = c.tx_time(ctx)
        record.update(status="withdrawn", withdrawn_at=now, updated_at=now, tx_id=c.tx_id(ctx))
        await self._store(ctx, record, "ConsentWithdrawn")
        return record

    async def read_consent(self, ctx: TransactionContextInterface, pseudonym: str, purpose: str) -> dict[str, Any]:
        """One consent record."""
        c.pseudonym("pseudonym", pseudonym)
        c.purpose("purpose", purpose)
        record = await self._consent(ctx, pseudonym, purpose)
        return record

    async def _active(self, ctx: TransactionContextInterface, purpose: str, hospital: str, at: str) -> list[str]:
        records = await c.scan_json(ctx, CONSENT)
        return sorted(
            r["pseudonym"]
            for r in records
            if r["purpose"] == purpose and (not hospital or r["hospital"] == hospital) and _is_active(r, at)
        )

    async def list_active_consents(
        self, ctx: TransactionContextInterface, purpose: str, hospital: str, at_time: str
    ) -> list[str]:
        """Sorted pseudonyms with active consent for ``purpose`` at ``at_time`` ("" = now), of ``hospital``
        (an MSP id; "" = every hospital)."""
        c.purpose("purpose", purpose)
        if hospital:
            c.msp_id("hospital", hospital)
        at = c.timestamp("at_time", at_time, optional=True) or c.tx_time(ctx)
        return await self._active(ctx, purpose, hospital, at)

    async def create_consent_snapshot(
        self, ctx: TransactionContextInterface, snapshot_id: str, purpose: str, pseudonyms: str
    ) -> dict[str, Any]:
        """Commit to the patients a hospital trains on: count and RFC 9162 root of their sorted pseudonyms.

        ``pseudonyms`` is a JSON array of the pseudonyms used, each of which must have the caller's active
        consent for ``purpose`` now (so the snapshot proves consent for every patient used); "" takes every
        pseudonym with the caller's active consent.
        """
        hospital = c.require_hospital(ctx)
        c.record_id("snapshot_id", snapshot_id)
        c.purpose("purpose", purpose)
        state_key = c.key(ctx, SNAPSHOT, snapshot_id)
        if await c.get_json(ctx, state_key) is not None:
            raise c.ContractError("snapshot_id: a snapshot with this id exists already")
        now = c.tx_time(ctx)
        active = await self._active(ctx, purpose, hospital, now)
        if pseudonyms:
            used = c.json_argument("pseudonyms", pseudonyms, PSEUDONYM_LIST_SCHEMA)
            consented = set(active)
            for i, value in enumerate(used):
                if value not in consented:
                    raise c.ContractError(f"pseudonyms[{i}]: has no active consent of this hospital for {purpose}")
            active = sorted(used)
        snapshot = {
            "snapshot_id": snapshot_id,
            "hospital": hospital,
            "purpose": purpose,
            "taken_at": now,
            "count": len(active),
            "root": c.snapshot_root(active),
            "tx_id": c.tx_id(ctx),
        }
        await c.put_json(ctx, state_key, snapshot)
        c.emit(ctx, "ConsentSnapshotCreated", snapshot)
        return snapshot

    async def read_consent_snapshot(self, ctx: TransactionContextInterface, snapshot_id: str) -> dict[str, Any]:
        """One consent snapshot."""
        c.record_id("snapshot_id", snapshot_id)
        snapshot = await c.require_json(ctx, c.key(ctx, SNAPSHOT, snapshot_id), "snapshot_id: no such consent snapshot")
        return snapshot

    async def consent_history(self, ctx: TransactionContextInterface, pseudonym: str) -> list[dict[str, Any]]:
        """Every version of every consent of this pseudonym (all purposes), oldest first per purpose."""
        c.pseudonym("pseudonym", pseudonym)
        versions: list[dict[str, Any]] = []
        for record in await c.scan_json(ctx, CONSENT, pseudonym):
            versions += await c.history_json(ctx, c.key(ctx, CONSENT, pseudonym, record["purpose"]))
        return versions

    async def record_erasure(self, ctx: TransactionContextInterface, pseudonym: str) -> dict[str, Any]:
        """Record that the hospital erased this patient (crypto-shredding of its MRN → pseudonym entry).

        Carries the pseudonym itself, not a hash of it: the pseudonym is random and already on chain in the
        consent records, so a hash would hide nothing, while the plain value lets every report filter the
        erased patient out. Every consent of the pseudonym is withdrawn in the same transaction and no new one
        can be recorded.
        """
        hospital = c.require_hospital(ctx)
        c.pseudonym("pseudonym", pseudonym)
        state_key = c.key(ctx, ERASURE, pseudonym)
        if await c.get_json(ctx, state_key) is not None:
            raise c.ContractError("pseudonym: this patient's erasure is recorded already")
        consents = await c.scan_json(ctx, CONSENT, pseudonym)
        if any(r["hospital"] != hospital for r in consents):
            raise c.ContractError("caller: this patient's consents belong to another hospital; only it may erase")
        now = c.tx_time(ctx)
        for record in consents:
            if record["status"] == "active":
                record.update(status="withdrawn", withdrawn_at=now, updated_at=now, tx_id=c.tx_id(ctx))
                await c.put_json(ctx, c.key(ctx, CONSENT, pseudonym, record["purpose"]), record)
        erasure = {
            "pseudonym": pseudonym,
            "hospital": hospital,
            "basis": ERASURE_BASIS,
            "erased_at": now,
            "withdrawn_purposes": sorted(r["purpose"] for r in consents),
            "tx_id": c.tx_id(ctx),
        }
        await c.put_json(ctx, state_key, erasure)
        c.emit(ctx, "ErasureRecorded", {"hospital": hospital, "pseudonym": pseudonym, "tx_id": erasure["tx_id"]})
        return erasure

    async def read_erasure(self, ctx: TransactionContextInterface, pseudonym: str) -> dict[str, Any]:
        """The erasure record of a pseudonym; an error when none exists."""
        c.pseudonym("pseudonym", pseudonym)
        erasure = await c.require_json(
            ctx, c.key(ctx, ERASURE, pseudonym), "pseudonym: no erasure recorded for this pseudonym"
        )
        return erasure
