"""The durable outbox: ledger writes off the hot path, delivered at least once, committed exactly once.

Training rounds and API requests must not wait for (or fail with) the ledger. They ``enqueue`` the transaction
instead: it is written to a local SQLite queue (WAL, ``synchronous=FULL``) and the call returns once it is on
disk. A deliverer — ``deliver_pending`` called by the owner, or the background thread of ``start`` — submits
queued calls in order, in batches (one block each on the embedded ledger), and marks them delivered only after
the ledger committed them. A crash between commit and mark re-delivers the call; its idempotency key (stored
with it, fixing the ledger transaction id) makes the ledger answer with the first commit instead of writing
twice. So nothing queued is lost if the process is killed, and nothing is recorded twice.

Runs of consecutive audit events are sent as one ``append_audit_events`` transaction (``_plan``): the audit
trail of a busy API then costs one transaction per few hundred events instead of one per event.

Outcomes: ``delivered`` (with tx id and block), ``pending`` (ledger unavailable: retried with backoff), or
``rejected`` — the contract refused it (a bad argument will never become valid): kept with the contract's
message for an operator, never retried, never blocking the calls behind it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabric_network.ledger import (
    Call,
    ContractRejected,
    Ledger,
    LedgerError,
    LedgerSettings,
    TxResult,
    encode_argument,
    open_ledger,
)

log = logging.getLogger(__name__)
AUDIT_ONE = "AuditContract:append_audit_event"
AUDIT_MANY = "AuditContract:append_audit_events"
MAX_GROUP = 500  # audit events per grouped transaction (the contract takes up to 1,000)
COLUMNS = "id, idempotency_key, function, args, status, attempts, tx_id, block_number, error, group_key"

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    function TEXT NOT NULL,
    args TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'rejected')),
    attempts INTEGER NOT NULL DEFAULT 0,
    tx_id TEXT,
    block_number INTEGER,
    error TEXT,
    finished_at REAL,
    group_key TEXT  -- audit events sent together: NULL not yet grouped, '' never again (its group was refused)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, id);
"""


@dataclass(frozen=True)
class DeliveryReport:
    """What one delivery pass did."""

    delivered: int
    rejected: int
    still_pending: int


@dataclass(frozen=True)
class QueuedCall:
    """One outbox entry as stored."""

    id: int
    idempotency_key: str
    function: str
    args: tuple[str, ...]
    status: str
    attempts: int
    tx_id: str | None
    block_number: int | None
    error: str | None
    group_key: str | None = None


@dataclass(frozen=True)
class _Delivery:
    """One ledger call standing for one queued entry, or for a group of queued audit events."""

    call: Call
    members: tuple[QueuedCall, ...]
    group_key: str | None

    @classmethod
    def alone(cls, queued: QueuedCall) -> _Delivery:
        return cls(Call(queued.function, queued.args, queued.idempotency_key), (queued,), None)

    @classmethod
    def group(cls, key: str, members: list[QueuedCall]) -> _Delivery:
        """All of a group's members, in queue order, in one ``append_audit_events`` call under the group's key."""
        ordered = tuple(sorted(members, key=lambda q: q.id))
        events = "[" + ",".join(q.args[0] for q in ordered) + "]"
        return cls(Call(AUDIT_MANY, (events,), key), ordered, key)


class Outbox:
    """A durable queue of ledger transactions in ``path``; ``ledger`` is opened lazily by ``ledger_factory``
    (so a process can enqueue while the ledger is down) and reused until it fails."""

    def __init__(self, path: Path, ledger_factory: Callable[[], Ledger], *, batch_size: int = 200) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ledger_factory = ledger_factory
        self._ledger: Ledger | None = None
        self._batch_size = batch_size
        self._db_lock = threading.Lock()
        self._delivery_lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "group_key" not in columns:  # an outbox written before audit grouping existed
            self._db.execute("ALTER TABLE outbox ADD COLUMN group_key TEXT")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- producers ----------------------------------------------------------------------------------------------

    def enqueue(self, function: str, *args: Any, idempotency_key: str | None = None) -> str:
        """Queue a transaction durably; returns its idempotency key. Enqueuing the same key twice is a no-op."""
        key = idempotency_key or f"outbox-{uuid.uuid4().hex}"
        encoded = json.dumps([encode_argument(a) for a in args])
        with self._db_lock:
            self._db.execute(
                "INSERT OR IGNORE INTO outbox (idempotency_key, function, args, enqueued_at) VALUES (?, ?, ?, ?)",
                (key, function, encoded, time.time()),
            )
        self._wake.set()
        return key

    def enqueue_many(self, calls: Sequence[Call]) -> list[str]:
        """Queue several transactions in one durable write (one fsync for all: group commit for busy producers
        such as the API's audit trail); returns their idempotency keys. Keys already queued are no-ops."""
        keys = [call.idempotency_key or f"outbox-{uuid.uuid4().hex}" for call in calls]
        now = time.time()
        rows = [
            (key, call.function, json.dumps([encode_argument(a) for a in call.args]), now)
            for key, call in zip(keys, calls, strict=True)
        ]
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO outbox (idempotency_key, function, args, enqueued_at) VALUES (?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        self._wake.set()
        return keys

    # --- delivery -----------------------------------------------------------------------------------------------

    def deliver_pending(self) -> DeliveryReport:
        """Deliver every pending call, oldest first, in batches; stops early (leaving them pending) if the ledger
        is unavailable. Safe to call from several threads or processes: idempotency keys prevent double writes."""
        delivered = rejected = 0
        with self._delivery_lock:
            while True:
                deliveries = self._plan(self._pending(self._batch_size))
                if not deliveries:
                    break
                outcomes = self._submit(deliveries)
                if outcomes is None:
                    break
                delivered_now, rejected_now, unavailable = self._record(deliveries, outcomes)
                delivered, rejected = delivered + delivered_now, rejected + rejected_now
                if unavailable:
                    break
        return DeliveryReport(delivered, rejected, self.count("pending"))

    def _pending(self, limit: int) -> list[QueuedCall]:
        """The oldest pending entries, completed with every member of any audit group among them (a group is
        always submitted whole: its idempotency key stands for exactly its members)."""
        with self._db_lock:
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM outbox WHERE status = 'pending' ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            boundary = rows[-1][0] if rows else 0
            for group in sorted({row[9] for row in rows if row[9]}):
                rows += self._db.execute(
                    f"SELECT {COLUMNS} FROM outbox WHERE status = 'pending' AND group_key = ? AND id > ?",
                    (group, boundary),
                ).fetchall()
        return sorted((_queued(row) for row in rows), key=lambda q: q.id)

    def _plan(self, batch: list[QueuedCall]) -> list[_Delivery]:
        """One ledger call per entry, except runs of audit events, which travel as one ``append_audit_events``
        transaction (a run's grouping is stored before it is sent, so a retry after a crash resends the very
        same group under the same idempotency key)."""
        deliveries: list[_Delivery] = []
        run: list[QueuedCall] = []
        new_groups: list[tuple[str, list[int]]] = []

        def close_run() -> None:
            for first in range(0, len(run), MAX_GROUP):
                chunk = run[first : first + MAX_GROUP]
                if len(chunk) == 1:
                    deliveries.append(_Delivery.alone(chunk[0]))
                    continue
                key = "audit-group-" + hashlib.sha256("\n".join(q.idempotency_key for q in chunk).encode()).hexdigest()
                new_groups.append((key, [q.id for q in chunk]))
                deliveries.append(_Delivery.group(key, chunk))
            run.clear()

        persisted: dict[str, list[QueuedCall]] = {}
        for queued in batch:
            if queued.group_key:
                persisted.setdefault(queued.group_key, []).append(queued)
        deliveries += [_Delivery.group(key, members) for key, members in persisted.items()]
        for queued in batch:
            if queued.group_key:
                continue
            if queued.function == AUDIT_ONE and queued.group_key is None and len(queued.args) == 1:
                run.append(queued)
            else:
                close_run()
                deliveries.append(_Delivery.alone(queued))
        close_run()
        if new_groups:
            with self._db_lock:
                self._db.execute("BEGIN IMMEDIATE")
                for key, ids in new_groups:
                    self._db.executemany("UPDATE outbox SET group_key = ? WHERE id = ?", [(key, i) for i in ids])
                self._db.execute("COMMIT")
        return sorted(deliveries, key=lambda d: d.members[0].id)

    def _submit(self, deliveries: list[_Delivery]) -> list[TxResult | LedgerError] | None:
        try:
            if self._ledger is None:
                self._ledger = self._ledger_factory()
            return self._ledger.submit_batch([d.call for d in deliveries])
        except LedgerError as exc:
            count = sum(len(d.members) for d in deliveries)
            log.warning("outbox: ledger unavailable, %d call(s) stay queued: %s", count, type(exc).__name__)
            self._drop_ledger()
            self._count_attempt([q.id for d in deliveries for q in d.members])
            return None

    def _record(self, deliveries: list[_Delivery], outcomes: list[TxResult | LedgerError]) -> tuple[int, int, bool]:
        delivered = rejected = 0
        unavailable = False
        now = time.time()
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            for delivery, outcome in zip(deliveries, outcomes, strict=True):
                ids = [(q.id,) for q in delivery.members]
                if isinstance(outcome, TxResult):
                    self._db.executemany(
                        "UPDATE outbox SET status = 'delivered', tx_id = ?, block_number = ?, finished_at = ?, "
                        "attempts = attempts + 1 WHERE id = ?",
                        [(outcome.tx_id, outcome.block_number, now, i) for (i,) in ids],
                    )
                    delivered += len(ids)
                elif delivery.group_key and isinstance(outcome, ContractRejected):
                    # Nothing of a refused group was written: its events go one by one, so only the bad one fails.
                    self._db.executemany("UPDATE outbox SET group_key = '', attempts = attempts + 1 WHERE id = ?", ids)
                elif isinstance(outcome, ContractRejected) or type(outcome) is LedgerError:
                    # A contract refusal or a malformed call: retrying cannot help.
                    self._db.executemany(
                        "UPDATE outbox SET status = 'rejected', error = ?, finished_at = ?, attempts = attempts + 1 "
                        "WHERE id = ?",
                        [(str(outcome), now, i) for (i,) in ids],
                    )
                    log.warning(
                        "outbox: %s was rejected by the ledger (entry %d kept)", delivery.call.function, ids[0][0]
                    )
                    rejected += len(ids)
                else:
                    self._db.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", ids)
                    unavailable = True
            self._db.execute("COMMIT")
        if delivered or rejected:
            log.info("outbox: delivered %d, rejected %d", delivered, rejected)
        return delivered, rejected, unavailable

    def _count_attempt(self, ids: list[int]) -> None:
        with self._db_lock:
            self._db.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in ids])

    def _drop_ledger(self) -> None:
        if self._ledger is not None:
            try:
                self._ledger.close()
            finally:
                self._ledger = None

    # --- background delivery --------------------------------------------------------------------------------------

    def start(self, *, poll_s: float = 0.5, max_backoff_s: float = 30.0) -> None:
        """Deliver in a background thread: right after each enqueue, else every ``poll_s``; back off while the
        ledger is unavailable."""
        if self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            backoff = poll_s
            while not self._stop.is_set():
                try:
                    pending = self.deliver_pending().still_pending
                except Exception as exc:  # keep delivering after any surprise (e.g. a locked database)
                    log.error("outbox: delivery pass failed (%s); retrying", type(exc).__name__)
                    self._drop_ledger()
                    pending = 1
                backoff = min(backoff * 2, max_backoff_s) if pending else poll_s
                self._wake.wait(backoff)
                self._wake.clear()

        self._thread = threading.Thread(target=run, name="carefed-outbox", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Deliver now and wait until nothing is pending (or the timeout passes); True if the queue is drained."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.deliver_pending().still_pending == 0:
                return True
            time.sleep(0.1)
        return self.count("pending") == 0

    def stop(self) -> None:
        """Stop the background thread (queued calls stay on disk for the next start)."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._thread = None

    def close(self) -> None:
        """Stop delivering and release the queue and the ledger."""
        self.stop()
        with self._delivery_lock:
            self._drop_ledger()
        with self._db_lock:
            self._db.close()

    # --- inspection -----------------------------------------------------------------------------------------------

    def count(self, status: str) -> int:
        """How many entries have ``status`` (pending, delivered or rejected)."""
        with self._db_lock:
            row = self._db.execute("SELECT COUNT(*) FROM outbox WHERE status = ?", (status,)).fetchone()
        return int(row[0])

    def backlog(self) -> tuple[int, float]:
        """Pending entries and the age in seconds of the oldest (0.0 when none): what a monitor alerts on."""
        with self._db_lock:
            count, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(enqueued_at) FROM outbox WHERE status = 'pending'"
            ).fetchone()
        return int(count), (time.time() - float(oldest)) if oldest is not None else 0.0

    def entries(self, status: str | None = None) -> list[QueuedCall]:
        """Stored entries, oldest first, optionally of one status (e.g. ``rejected`` for an operator)."""
        sql = f"SELECT {COLUMNS} FROM outbox"
        params: tuple[str, ...] = ()
        if status is not None:
            sql, params = sql + " WHERE status = ?", (status,)
        with self._db_lock:
            rows = self._db.execute(sql + " ORDER BY id", params).fetchall()
        return [_queued(row) for row in rows]


def _queued(row: tuple[Any, ...]) -> QueuedCall:
    return QueuedCall(
        group_key=row[9],
        id=row[0],
        idempotency_key=row[1],
        function=row[2],
        args=tuple(json.loads(row[3])),
        status=row[4],
        attempts=row[5],
        tx_id=row[6],
        block_number=row[7],
        error=row[8],
    )


def open_outbox(name: str, settings: LedgerSettings | None = None, **overrides: Any) -> Outbox:
    """The outbox ``<state_dir>/outbox/<name>.sqlite`` delivering to the ledger ``open_ledger`` would open with
    the same settings (e.g. ``open_outbox("hospital-a", org="hospital-a")``)."""
    config = settings.model_copy(update=overrides) if settings else LedgerSettings(**overrides)
    if not name.replace("-", "").replace("_", "").isalnum():
        raise LedgerError(f"name: {name!r} must be letters, digits, - and _ (it names the outbox file)")
    return Outbox(Path(config.state_dir) / "outbox" / f"{name}.sqlite", lambda: open_ledger(config))
