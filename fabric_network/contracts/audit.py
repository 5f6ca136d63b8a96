"""AuditContract: who did what to which object, for which purpose, with which outcome — append-only.

An event's time is the transaction's timestamp and its organisation the submitting identity's MSP id (the org
that vouches for the event); neither can be supplied by the caller. Events are keyed by time, so a time-range
query is a key-range scan: ``audit/<time>/<tx_id>/<index as 5 digits>``.

Event fields (JSON object per event):

``actor``     who acted: an opaque user or service id (no e-mail, no personal identifier)
``role``      the actor's application role, e.g. ``clinician``, ``hospital_it``, ``compliance_officer``
``action``    a dotted verb, e.g. ``consent.record``, ``model.predict``, ``audit.export``, ``round.train``
``object``    ``<type>:<id>``; ``patient:`` and ``consent:`` objects must carry a pseudonym
``outcome``   ``success`` | ``minor-failure`` | ``serious-failure`` | ``major-failure``
              (FHIR AuditEvent.outcome 0 | 4 | 8 | 12)
``purpose``   a FHIR v3 ActReason code, or "" when no purpose of use applies (e.g. a login)
"""

from __future__ import annotations

import json
from typing import Any

from fabric_network.contracts import common as c
from fabric_network.shim import Contract, TransactionContextInterface

AUDIT = "audit"
OUTCOMES = ("success", "minor-failure", "serious-failure", "major-failure")
PSEUDONYMOUS_OBJECT_TYPES = ("patient", "consent")
MAX_QUERY_RESULTS = 10_000

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["actor", "role", "action", "object", "outcome", "purpose"],
    "properties": {
        "actor": c.SCHEMA_RECORD_ID,
        "role": {"type": "string", "pattern": r"^[a-z][a-z0-9_]{0,31}$"},
        "action": {"type": "string", "pattern": r"^[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31}){0,3}$"},
        "object": {"type": "string", "pattern": r"^[a-z][a-z0-9_]{0,31}:[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"},
        "outcome": {"type": "string", "enum": list(OUTCOMES)},
        "purpose": {"type": "string", "enum": ["", *sorted(c.PURPOSE_CODES)]},
    },
}
BATCH_SCHEMA: dict[str, Any] = {"type": "array", "items": EVENT_SCHEMA, "minItems": 1, "maxItems": c.MAX_BATCH}
QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "actor": c.SCHEMA_RECORD_ID,
        "object": EVENT_SCHEMA["properties"]["object"],
        "action": EVENT_SCHEMA["properties"]["action"],
        "organisation": c.SCHEMA_MSP_ID,
        "purpose": EVENT_SCHEMA["properties"]["purpose"],
        "from": {"type": "string"},
        "to": {"type": "string"},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_QUERY_RESULTS},
    },
}


def _check_event(field: str, event: dict[str, Any]) -> None:
    """The checks a JSON schema cannot express: no identifier-shaped ids, pseudonyms on patient objects."""
    c.record_id(f"{field}.actor", event["actor"])
    object_type, object_id = event["object"].split(":", 1)
    if object_type in PSEUDONYMOUS_OBJECT_TYPES:
        c.pseudonym(f"{field}.object", object_id)
    else:
        c.record_id(f"{field}.object", object_id)


class AuditContract(Contract):  # type: ignore[misc]  # the library ships no type hints
    """Append audit events (singly or in batches) and query them by actor, object, action and time range."""

    Name = "AuditContract"

    def get_evaluate_transactions(self) -> list[str]:
        return ["query_audit"]

    async def _append(self, ctx: TransactionContextInterface, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        organisation = c.caller_msp(ctx)
        c.require_role(ctx, ("client", "admin"))  # services and people vouch for events, not peers or orderers
        now, tx = c.tx_time(ctx), c.tx_id(ctx)
        stored = []
        for index, event in enumerate(events):
            record = {**event, "organisation": organisation, "time": now, "tx_id": tx, "index": index}
            await c.put_json(ctx, c.key(ctx, AUDIT, now, tx, f"{index:05d}"), record)
            stored.append(record)
        c.emit(ctx, "AuditEventsAppended", {"count": len(stored), "organisation": organisation, "tx_id": tx})
        return stored

    async def append_audit_event(self, ctx: TransactionContextInterface, event: str) -> dict[str, Any]:
        """Append one event (JSON object; see the module doc for its fields)."""
        parsed = c.json_argument("event", event, EVENT_SCHEMA)
        _check_event("event", parsed)
        return (await self._append(ctx, [parsed]))[0]

    async def append_audit_events(self, ctx: TransactionContextInterface, events: str) -> list[dict[str, Any]]:
        """Append up to 1,000 events in one transaction (JSON array); all or none are stored."""
        parsed = c.json_argument("events", events, BATCH_SCHEMA)
        for index, event in enumerate(parsed):
            _check_event(f"events[{index}]", event)
        return await self._append(ctx, parsed)

    async def query_audit(self, ctx: TransactionContextInterface, query: str) -> list[dict[str, Any]]:
        """Events matching every given filter (JSON object: actor, object, action, organisation, purpose,
        ``from`` inclusive and ``to`` exclusive ISO 8601 UTC times, ``limit`` ≤ 10,000), oldest first."""
        parsed = c.json_argument("query", query or "{}", QUERY_SCHEMA)
        start = c.timestamp("query.from", parsed.get("from", ""), optional=True)
        end = c.timestamp("query.to", parsed.get("to", ""), optional=True)
        limit = parsed.get("limit", MAX_QUERY_RESULTS)
        filters = {f: parsed[f] for f in ("actor", "object", "action", "organisation", "purpose") if f in parsed}
        low = c.key(ctx, AUDIT, start) if start else c.key(ctx, AUDIT)
        high = c.key(ctx, AUDIT, end) if end else c.key(ctx, AUDIT) + "\U0010ffff"
        iterator = await ctx.get_stub().get_state_by_range(low, high)
        matches: list[dict[str, Any]] = []
        async for kv in iterator:
            record = json.loads(kv.value)
            if all(record.get(name) == value for name, value in filters.items()):
                matches.append(record)
                if len(matches) >= limit:
                    break
        return matches
