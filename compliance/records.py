"""The audit record: one row of every export, whatever its format.

An export is only verifiable if every format commits to the same facts in the same order, so the column set is
fixed here once (and documented in docs/compliance.md). Values are what the ledger holds: identities by MSP id
and certificate subject, patients by their random pseudonym only — never an MRN, name or date of birth.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """What happened, at the level of granularity the BALP profiles distinguish."""

    REST_CREATE = "rest-create"
    REST_READ = "rest-read"
    REST_UPDATE = "rest-update"
    REST_DELETE = "rest-delete"
    REST_QUERY = "rest-query"
    CONSENT_DECISION = "consent-decision"
    DISCLOSURE = "disclosure"
    LOGIN = "login"
    LOGOUT = "logout"
    TRAINING_DATA_USE = "training-data-use"
    RECORD = "record"  # any other ledger transaction (run registered, budget set, erasure, ...)


class Outcome(StrEnum):
    """The four outcomes of FHIR's audit-event-outcome code system, by name."""

    SUCCESS = "success"
    MINOR_FAILURE = "minor-failure"
    SERIOUS_FAILURE = "serious-failure"
    MAJOR_FAILURE = "major-failure"


# FHIR ids: [A-Za-z0-9\-\.]{1,64}; the event id doubles as the AuditEvent id.
_EVENT_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class RecordError(ValueError):
    """A record that cannot be exported as it stands; the message names the field."""


@dataclass(frozen=True)
class AuditRecord:
    """One audited fact, in the documented column order.

    ``detail`` holds further non-identifying facts (hashes, round numbers, ε) as a JSON object; it is written
    as compact, key-sorted JSON so that CSV, JSON Lines and FHIR commit to identical bytes for it.
    """

    event_id: str
    time: str  # ISO 8601 UTC, from the ledger transaction timestamp
    actor: str  # certificate subject common name of the submitting identity (or the API user id)
    role: str  # NodeOU (client/peer/admin/orderer) or API role
    organisation: str  # MSP id
    action: str  # CareFed action name, e.g. "consent.withdraw", "model.export"
    kind: EventKind
    object: str  # what was acted on: a ledger key, model version, run id, ...
    outcome: Outcome
    purpose: str  # v3 ActReason code (HRESCH, TREAT, HOPERAT, ...) or "" when none applies
    patient: str  # the patient's pseudonym, or "" when no single patient is involved
    recipient: str  # who received data (disclosures), or ""
    tx_id: str
    block_number: int
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _EVENT_ID.fullmatch(self.event_id):
            raise RecordError(f"event_id {self.event_id!r}: use 1-64 characters of A-Z, a-z, 0-9, '-' or '.'")
        try:
            parsed = dt.datetime.fromisoformat(self.time)
        except ValueError as exc:
            raise RecordError(f"time {self.time!r} of event {self.event_id}: not ISO 8601 ({exc})") from None
        if parsed.tzinfo is None:
            raise RecordError(f"time {self.time!r} of event {self.event_id}: give a time zone (UTC)")
        if self.block_number < 0:
            raise RecordError(f"block_number {self.block_number} of event {self.event_id}: must be >= 0")
        if self.patient and not re.fullmatch(r"[0-9a-f]{64}", self.patient):
            raise RecordError(f"patient of event {self.event_id}: must be a 64-hex-character pseudonym")

    @property
    def timestamp(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.time)

    def to_row(self) -> dict[str, str]:
        """The record as flat strings, column by column (CSV cells, JSON Lines values)."""
        row = {name: str(value) for name, value in asdict(self).items() if name != "detail"}
        row["detail"] = canonical_json(self.detail)
        return row


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(AuditRecord))


def canonical_json(value: Any) -> str:
    """Key-sorted, compact, UTF-8 JSON: the one spelling that is hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
