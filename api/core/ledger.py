"""The service's way to the consortium ledger: one `Ledger` and one audit outbox per organisation it acts for.

A hospital's consents must be written with that hospital's identity (the ConsentContract checks the caller's
MSP id), and an audit event is vouched for by the organisation of the user it concerns, so the service holds
one ledger handle per organisation, opened on first use through the ledger package's factory and closed
with the app. The backend (embedded by default, Fabric by configuration) is the ledger package's business:
`CAREFED_LEDGER_*` settings reach `open_ledger` unchanged.

Audit events go through each organisation's durable outbox (`<state_dir>/outbox/api-<org>.sqlite`). A request
only enqueues (durable when it returns); delivery — one ledger transaction per event, signed and validated —
costs milliseconds of CPU per event, so the service delivers from a separate process by default, where it
does not hold the GIL the request threads need. The thread mode delivers in-process (tests use it).

Several worker processes (`carefed api --workers N`) never write the same outbox file: each claims a writer slot
(an exclusive lock on `<state_dir>/outbox/api-writer-<slot>.lock`, the lowest free one) and enqueues into its
own files, `api-<org>.sqlite` for slot 0 and `api-<org>-w<slot>.sqlite` for the others. One shared file made the
workers queue for SQLite's write lock, whose busy handler sleeps and retries: once fsyncs kept the lock busy,
a worker could wait for seconds while the other took the lock again and again. A restarted worker takes over
a slot left free, so the files are as many as workers ever ran at once. Each worker starts a delivery process,
of which only the holder of an exclusive lock on `<state_dir>/outbox/api-delivery.lock` delivers every slot's
files (two deliverers could group the same pending events into two different ledger transactions). When it
dies with its worker, the lock passes to another one.
"""

import fcntl
import logging
import multiprocessing
import os
import re
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO, Literal

from api.core.problems import ProblemError
from fabric_network.identities import CONSORTIUM_ORG, load_consortium, msp_id_for
from fabric_network.ledger import Ledger, LedgerConfigError, LedgerSettings, open_ledger
from fabric_network.outbox import Outbox, open_outbox

AuditDelivery = Literal["process", "thread"]
DELIVERY_POLL_S = 0.25
logger = logging.getLogger(__name__)


def org_of(hospital: str | None) -> str:
    """The ledger organisation acting for a user: their hospital, or the consortium for consortium-wide roles."""
    return hospital or CONSORTIUM_ORG


def hospital_msp(hospital: str) -> str:
    """A hospital's MSP id as the ledger records it (`hospital-a` → `HospitalAMSP`)."""
    return msp_id_for(hospital)


def audit_outbox(settings: LedgerSettings, org: str, slot: int = 0) -> Outbox:
    """The audit outbox of one organisation written by the worker holding writer slot `slot`."""
    return open_outbox(f"api-{org}" if slot == 0 else f"api-{org}-w{slot}", settings, org=org)


def audit_slots(state_dir: Path, org: str) -> list[int]:
    """The writer slots that have an audit outbox file of `org` (slot 0 always counts: its file is made on use)."""
    pattern = re.compile(rf"api-{re.escape(org)}-w([1-9][0-9]*)\.sqlite")
    found = (pattern.fullmatch(path.name) for path in (state_dir / "outbox").glob(f"api-{org}-w*.sqlite"))
    return [0, *sorted(int(match.group(1)) for match in found if match)]


def claim_writer_slot(state_dir: Path) -> tuple[int, IO[str]]:
    """The lowest writer slot no live process holds, and the open lock file that holds it (closing it, or the
    process ending, frees the slot)."""
    outbox_dir = state_dir / "outbox"
    outbox_dir.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        handle = (outbox_dir / f"api-writer-{slot}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            slot += 1
            continue
        return slot, handle


def deliver_audit_forever(state_dir: Path) -> None:
    """The delivery process: once it holds the delivery lock, deliver every organisation's audit outbox until
    the service terminates it, or until its worker is gone (a SIGKILLed worker cannot terminate it, and an
    orphan holding the lock would stop every other worker's deliverer for good)."""
    worker = os.getppid()
    lock_path = state_dir / "outbox" / "api-delivery.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_path.open("a")  # held (open) for the life of the process; the kernel releases it at exit
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if os.getppid() != worker:
                return
            time.sleep(DELIVERY_POLL_S * 4)
    settings = LedgerSettings(state_dir=state_dir)
    consortium = load_consortium(state_dir)
    orgs = [CONSORTIUM_ORG, *(hospital.name for hospital in consortium.hospitals)]
    delivering: dict[tuple[str, int], Outbox] = {}
    while os.getppid() == worker:
        for org in orgs:  # a worker that starts later adds its slot's files
            for slot in audit_slots(state_dir, org):
                if (org, slot) not in delivering:
                    delivering[org, slot] = audit_outbox(settings, org, slot)
                    delivering[org, slot].start(poll_s=DELIVERY_POLL_S)
        time.sleep(DELIVERY_POLL_S * 4)
    # Orphaned: what is queued stays on disk for the next holder of the lock; daemon threads end with us.


class LedgerHub:
    """Ledger handles and audit outboxes by organisation, shared by the request threads (both are thread-safe)."""

    def __init__(self, state_dir: Path, audit_delivery: AuditDelivery = "process") -> None:
        self._settings = LedgerSettings(state_dir=state_dir)
        self._audit_delivery = audit_delivery
        self._ledgers: dict[str, Ledger] = {}
        self._outboxes: dict[str, Outbox] = {}
        self._deliverer: BaseProcess | None = None
        self._slot: tuple[int, IO[str]] | None = None  # claimed on the first enqueue
        self._lock = threading.Lock()

    def of(self, org: str) -> Ledger:
        """The ledger as seen by `org`'s client identity (`hospital-a`, or `consortium`)."""
        with self._lock:
            ledger = self._ledgers.get(org)
            if ledger is None:
                try:
                    ledger = self._ledgers[org] = open_ledger(self._settings, org=org)
                except LedgerConfigError as error:
                    raise ProblemError(503, f"the ledger is not set up for {org}: {error}") from None
            return ledger

    def outbox(self, org: str) -> Outbox:
        """`org`'s audit outbox; in thread mode it also delivers in the background from first use on."""
        with self._lock:
            outbox = self._outboxes.get(org)
            if outbox is None:
                if self._slot is None:
                    self._slot = claim_writer_slot(self._settings.state_dir)
                outbox = self._outboxes[org] = audit_outbox(self._settings, org, self._slot[0])
                if self._audit_delivery == "thread":
                    outbox.start()
            if self._deliverer is not None and not self._deliverer.is_alive():
                logger.error("the audit delivery process died (exit code %s); restarting it", self._deliverer.exitcode)
                self._start_deliverer()
            return outbox

    def start(self) -> None:
        """Start delivering audit events (in process mode: the delivery process)."""
        if self._audit_delivery == "process":
            with self._lock:
                self._start_deliverer()

    def _start_deliverer(self) -> None:
        self._deliverer = multiprocessing.get_context("spawn").Process(
            target=deliver_audit_forever, args=(self._settings.state_dir,), name="carefed-api-audit", daemon=True
        )
        self._deliverer.start()

    def flush_outboxes(self, timeout_s: float = 30.0) -> bool:
        """Deliver everything queued now, from this process; True when every outbox is drained."""
        with self._lock:
            outboxes = list(self._outboxes.values())
        return all(outbox.flush(timeout_s) for outbox in outboxes)

    def outbox_backlogs(self) -> dict[str, tuple[int, float]]:
        """Per organisation whose audit outbox this worker has opened: pending events and the oldest one's age,
        over every worker's slot (a scrape reaches one worker; the backlog is the service's)."""
        with self._lock:
            orgs = list(self._outboxes)
        backlogs = {}
        for org in orgs:
            pending, oldest_s = 0, 0.0
            for slot in audit_slots(self._settings.state_dir, org):
                outbox = audit_outbox(self._settings, org, slot)
                try:
                    count, age = outbox.backlog()
                finally:
                    outbox.close()
                pending, oldest_s = pending + count, max(oldest_s, age)
            backlogs[org] = (pending, oldest_s)
        return backlogs

    def close(self) -> None:
        """Stop delivering (what is still queued stays on disk for the next start) and close the ledgers."""
        with self._lock:
            if self._deliverer is not None:
                self._deliverer.terminate()
                self._deliverer.join(timeout=10)
                self._deliverer = None
            for outbox in self._outboxes.values():
                outbox.close()
            for ledger in self._ledgers.values():
                ledger.close()
            self._outboxes.clear()
            self._ledgers.clear()
            if self._slot is not None:
                self._slot[1].close()
                self._slot = None
