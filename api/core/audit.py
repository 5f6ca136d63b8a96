"""The audit trail of the service itself: every request becomes an AuditContract event on the ledger.

Who (an opaque user id and role), what (the route), which object, with which outcome, for which purpose of
use; the time is the ledger transaction's. The event is handed to the ledger's durable outbox *before* the
response leaves, so no answer is ever given whose audit record could still be lost; delivery to the ledger
happens off the request path. A refused request (401/403) is audited like any other, as `<action>.refused`.

Nothing from the request body or query goes into an event: a prediction is recorded with the model's id
and hash, never the patient's features; a consent with the pseudonym, never the MRN. The object defaults to
the route when the handler names none, and an unknown URL is recorded without its path (it could hold
anything a user typed).
"""

import asyncio
import hashlib
import json
import queue
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core.ledger import LedgerHub, org_of
from fabric_network.contracts.common import PSEUDONYM, ContractError, record_id
from fabric_network.ledger import Call

AUDIT_FUNCTION = "AuditContract:append_audit_event"
REFUSED = {401, 403}
UNAUDITED_PREFIXES = ("/static/",)  # style sheets and scripts carry no access to data


@dataclass(frozen=True)
class AuditEvent:
    """One AuditContract event and the organisation that vouches for it."""

    organisation: str
    actor: str
    role: str
    action: str
    object: str
    outcome: str
    purpose: str

    def contract_argument(self) -> str:
        """The event as the contract's JSON argument (the organisation is the submitter, not a field)."""
        fields = {name: getattr(self, name) for name in ("actor", "role", "action", "object", "outcome", "purpose")}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def outcome_of(status: int) -> str:
    """FHIR AuditEvent outcome of an HTTP status: 4xx is a minor failure, 5xx a serious one."""
    if status < 400:
        return "success"
    return "minor-failure" if status < 500 else "serious-failure"


def default_object(route_name: str, path_params: dict[str, Any]) -> str:
    """The object a route acts on, from its path parameters, when the handler named none.

    Path parameters are whatever the caller sent (the request may be refused for them), so a value the
    AuditContract would refuse — not a pseudonym where one is due, or shaped like a personal identifier — is
    recorded as its SHA-256 instead: the event is never lost, and no such value reaches the ledger.
    """
    if "pseudonym" in path_params:
        value = str(path_params["pseudonym"])
        return f"consent:{value}" if PSEUDONYM.fullmatch(value) else f"route:{route_name}"
    for param, object_type in (("model_id", "model"), ("node_id", "node")):
        if param in path_params:
            value = str(path_params[param])
            try:
                return f"{object_type}:{record_id(param, value)}"
            except ContractError:
                return f"{object_type}:sha256-{hashlib.sha256(value.encode()).hexdigest()}"
    return f"route:{route_name}"


def event_for(scope: Scope, status: int) -> AuditEvent:
    """The audit event of a finished (or failed) request, from what the routing and the handler left in scope."""
    state = scope.get("state", {})
    user = state.get("user")
    route = scope.get("route")
    route_name = getattr(route, "name", None) if route is not None else None
    action = f"api.{route_name}" if route_name else "api.unknown_route"
    if status in REFUSED:
        action += ".refused"
    audit_object = state.get("audit_object")
    if audit_object is None:
        audit_object = default_object(route_name or "unknown", scope.get("path_params", {}))
    return AuditEvent(
        organisation=org_of(user.hospital if user is not None else None),
        actor=f"user-{user.id}" if user is not None else "anonymous",
        role=user.role.value if user is not None else "anonymous",
        action=action,
        object=audit_object,
        outcome=outcome_of(status),
        purpose=state.get("audit_purpose", ""),
    )


class LedgerAuditTrail:
    """Queues events durably in their organisations' outboxes, with group commit.

    One writer thread takes every event that arrived while it was writing and queues them in one durable
    write per organisation, so concurrent requests share an fsync instead of waiting for one each. A request's
    future completes once its event is on disk; the idempotency key makes a redelivery commit only once.
    """

    def __init__(self, hub: LedgerHub) -> None:
        self._hub = hub
        self._waiting: queue.SimpleQueue[tuple[AuditEvent, Future[None]] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_forever, name="carefed-api-audit-writer", daemon=True)
        self._writer.start()

    def record(self, event: AuditEvent) -> Future[None]:
        """Queue the event; the future completes when it is durable (or fails with the write's error)."""
        done: Future[None] = Future()
        self._waiting.put((event, done))
        return done

    def close(self) -> None:
        """Write what is waiting, then stop the writer."""
        self._waiting.put(None)
        self._writer.join()

    def _write_forever(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._waiting.get()]
            while not self._waiting.empty():
                batch.append(self._waiting.get_nowait())
            stopping = None in batch
            pending = [item for item in batch if item is not None]
            by_org: dict[str, list[tuple[AuditEvent, Future[None]]]] = {}
            for event, done in pending:
                by_org.setdefault(event.organisation, []).append((event, done))
            for org, items in by_org.items():
                calls = [
                    Call(AUDIT_FUNCTION, (event.contract_argument(),), f"api-audit-{uuid.uuid4().hex}")
                    for event, _ in items
                ]
                try:
                    self._hub.outbox(org).enqueue_many(calls)
                except Exception as error:  # the requests fail (500) rather than answer unaudited
                    for _, done in items:
                        done.set_exception(error)
                else:
                    for _, done in items:
                        done.set_result(None)


class AuditMiddleware:
    """Pure ASGI middleware: hold the response start, record the request's audit event, then answer."""

    def __init__(self, app: ASGIApp, trail: LedgerAuditTrail) -> None:
        self.app = app
        self.trail = trail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UNAUDITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        audited = False

        async def send_after_audit(message: Message) -> None:
            nonlocal audited
            if message["type"] == "http.response.start" and not audited:
                audited = True
                await asyncio.wrap_future(self.trail.record(event_for(scope, message["status"])))
            await send(message)

        try:
            await self.app(scope, receive, send_after_audit)
        except BaseException:
            if not audited:  # the error page is sent further out; record the failure here
                audited = True
                await asyncio.wrap_future(self.trail.record(event_for(scope, 500)))
            raise
