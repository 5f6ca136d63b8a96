"""The audit trail read from the ledger: every committed contract event turned into audit records.

The ledger is the only source. Events are replayed in commit order (``Ledger.events``) up to the height read
at the start, so an export describes one exact ledger state; the facts an event does not carry itself (the
audited events of an ``AuditEventsAppended``, the participants of a round) are read from the committed state
by the contracts' own read-only queries.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from compliance.records import AuditRecord, EventKind, Outcome
from fabric_network.ledger import Ledger, LedgerEvent

# "release": a federated query's noisy statistic released to its requester (query.release).
_DISCLOSURE_VERBS = {"predict", "export", "disclose", "download", "share", "release"}
_REST_VERBS = {
    "create": EventKind.REST_CREATE,
    "read": EventKind.REST_READ,
    "get": EventKind.REST_READ,
    "view": EventKind.REST_READ,
    "update": EventKind.REST_UPDATE,
    "patch": EventKind.REST_UPDATE,
    "delete": EventKind.REST_DELETE,
    "list": EventKind.REST_QUERY,
    "search": EventKind.REST_QUERY,
    "query": EventKind.REST_QUERY,
}
_CONSENT_VERBS = {"record", "grant", "update", "withdraw"}
_PATIENT_OBJECTS = ("patient", "consent")
AUDIT_PAGE = 10_000


def kind_of_action(action: str) -> EventKind:
    """The BALP category of a dotted CareFed action such as ``model.predict`` or ``consent.withdraw``."""
    parts = action.split(".")
    verb = parts[-1]
    if parts[0] == "consent" and verb in _CONSENT_VERBS:
        return EventKind.CONSENT_DECISION
    if verb in _DISCLOSURE_VERBS:
        return EventKind.DISCLOSURE
    if verb in ("login", "logout"):
        return EventKind.LOGIN if verb == "login" else EventKind.LOGOUT
    if verb == "train":
        return EventKind.TRAINING_DATA_USE
    return _REST_VERBS.get(verb, EventKind.RECORD)


def _event_id(tx_id: str, index: int) -> str:
    return f"{tx_id[:48]}-{index}"


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _scalars(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if isinstance(v, str | int | float) and k != "tx_id"}


@dataclass(frozen=True)
class TrailFilter:
    """`carefed audit export --from/--to/--actor`: from inclusive, to exclusive, actor exact."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    actor: str | None = None

    def keeps(self, record: AuditRecord) -> bool:
        moment = record.timestamp
        return (
            (self.since is None or moment >= self.since)
            and (self.until is None or moment < self.until)
            and (self.actor is None or record.actor == self.actor)
        )

    def as_manifest(self) -> dict[str, str | None]:
        return {
            "from": self.since.isoformat() if self.since else None,
            "to": self.until.isoformat() if self.until else None,
            "actor": self.actor,
        }


def query_all_audit_events(ledger: Ledger) -> list[dict[str, Any]]:
    """Every stored audit event, oldest first, paging through ``query_audit``'s result limit by time."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    since = ""
    while True:
        query: dict[str, Any] = {"limit": AUDIT_PAGE} | ({"from": since} if since else {})
        page = ledger.evaluate("AuditContract:query_audit", query)
        fresh = [r for r in page if (r["tx_id"], r["index"]) not in seen]
        for row in fresh:
            seen.add((row["tx_id"], row["index"]))
        rows.extend(fresh)
        if len(page) < AUDIT_PAGE or not fresh:
            return rows
        since = page[-1]["time"]


class _TrailBuilder:
    """Turns ledger events into audit records, reading what an event does not carry from committed state."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.audit_rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in query_all_audit_events(ledger):
            self.audit_rows[row["tx_id"]].append(row)
        self._run_purposes: dict[str, str] = {}

    def _run_purpose(self, run_id: str) -> str:
        if run_id not in self._run_purposes:
            self._run_purposes[run_id] = str(self.ledger.evaluate("LineageContract:read_run", run_id)["purpose"])
        return self._run_purposes[run_id]

    def _contract_record(self, event: LedgerEvent, index: int, **facts: Any) -> AuditRecord:
        values: dict[str, Any] = {
            "actor": event.creator_msp,
            "role": "consortium" if event.creator_msp == "ConsortiumMSP" else "hospital",
            "organisation": event.creator_msp,
            "outcome": Outcome.SUCCESS,
            "purpose": "",
            "patient": "",
            "recipient": "",
            "detail": {},
        } | facts
        return AuditRecord(
            event_id=_event_id(event.tx_id, index),
            time=_time(event.timestamp).isoformat(),
            tx_id=event.tx_id,
            block_number=event.block_number,
            **values,
        )

    def records(self, event: LedgerEvent) -> list[AuditRecord]:
        payload, name = event.payload, event.name
        if name == "AuditEventsAppended":
            return [self._audited(event, row) for row in sorted(self.audit_rows[event.tx_id], key=lambda r: r["index"])]
        if name in ("ConsentRecorded", "ConsentUpdated", "ConsentWithdrawn"):
            verb = {"ConsentRecorded": "record", "ConsentUpdated": "update", "ConsentWithdrawn": "withdraw"}[name]
            return [
                self._contract_record(
                    event,
                    0,
                    action=f"consent.{verb}",
                    kind=EventKind.CONSENT_DECISION,
                    object=f"consent:{payload.get('purpose', '')}",
                    purpose=payload.get("purpose", ""),
                    patient=payload.get("pseudonym", ""),
                    detail={"decision": "deny" if verb == "withdraw" else "permit"},
                )
            ]
        if name == "RoundRecorded":
            return self._round(event)
        actions = {
            "ConsentSnapshotCreated": ("consent.snapshot", f"consent-snapshot:{payload.get('snapshot_id', '')}"),
            "ErasureRecorded": ("patient.erase", "patient:erasure"),
            "RunRegistered": ("run.register", f"run:{payload.get('run_id', '')}"),
            "ModelRegistered": ("model.register", f"model:{payload.get('model_id', '')}"),
            "BudgetLimitSet": ("budget.set", f"budget:{payload.get('hospital', '')}/{payload.get('purpose', '')}"),
            "BudgetCharged": ("budget.charge", f"budget:{payload.get('hospital', '')}/{payload.get('purpose', '')}"),
        }
        action, obj = actions.get(name, (name.lower(), f"event:{name}"))
        return [
            self._contract_record(
                event,
                0,
                action=action,
                kind=EventKind.RECORD,
                object=obj,
                purpose=str(payload.get("purpose", "")),
                patient=str(payload.get("pseudonym", "")),
                detail=_scalars({k: v for k, v in payload.items() if k not in ("pseudonym", "purpose")}),
            )
        ]

    def _audited(self, event: LedgerEvent, row: dict[str, Any]) -> AuditRecord:
        kind = kind_of_action(row["action"])
        object_type, _, object_id = row["object"].partition(":")
        return AuditRecord(
            event_id=_event_id(event.tx_id, int(row["index"])),
            time=_time(row["time"]).isoformat(),
            actor=row["actor"],
            role=row["role"],
            organisation=row["organisation"],
            action=row["action"],
            kind=kind,
            object=row["object"],
            outcome=Outcome(row["outcome"]),
            purpose=row["purpose"],
            patient=object_id if object_type in _PATIENT_OBJECTS else "",
            recipient=row["actor"] if kind == EventKind.DISCLOSURE else "",
            tx_id=event.tx_id,
            block_number=event.block_number,
        )

    def _round(self, event: LedgerEvent) -> list[AuditRecord]:
        run_id, number = str(event.payload["run_id"]), int(event.payload["round"])
        round_record = self.ledger.evaluate("LineageContract:read_round", run_id, str(number))
        purpose = self._run_purpose(run_id)
        obj = f"round:{run_id}/{number}"
        records = [
            self._contract_record(
                event,
                0,
                action="round.record",
                kind=EventKind.RECORD,
                object=obj,
                purpose=purpose,
                detail={"round": number, "model_sha256": round_record["model_sha256"]},
            )
        ]
        for index, participant in enumerate(round_record["participants"], start=1):
            records.append(
                self._contract_record(
                    event,
                    index,
                    actor=participant["hospital"],
                    role="hospital",
                    organisation=participant["hospital"],
                    action="round.train",
                    kind=EventKind.TRAINING_DATA_USE,
                    object=obj,
                    purpose=purpose,
                    detail={
                        "round": number,
                        "snapshot_id": participant["consent_snapshot_id"],
                        "snapshot_root": participant["consent_snapshot_root"],
                        "epsilon_spent": participant["epsilon_spent"],
                        "update_sha256": participant["update_sha256"],
                    },
                )
            )
        return records


def ledger_events(ledger: Ledger, height: int) -> Iterable[LedgerEvent]:
    """The committed events of blocks below `height`, in commit order."""
    for event in ledger.events(0):
        if event.block_number >= height:
            return
        yield event


def audit_trail(ledger: Ledger, trail_filter: TrailFilter | None = None) -> tuple[list[AuditRecord], int]:
    """The audit records of the whole ledger (filtered), in commit order, and the height they were read at."""
    height = ledger.height()
    builder = _TrailBuilder(ledger)
    keep = trail_filter or TrailFilter()
    records = [r for event in ledger_events(ledger, height) for r in builder.records(event) if keep.keeps(r)]
    return records, height
