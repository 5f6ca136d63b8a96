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

Several worker processes (`carefed api --workers N`) share the outboxes: SQLite serialises their enqueues, and
each worker starts a delivery process, of which only the holder of an exclusive lock on
`<state_dir>/outbox/api-delivery.lock` delivers (two deliverers could group the same pending events into two
different ledger transactions). When it dies with its worker, the lock passes to another one.
"""

import fcntl
import logging
import multiprocessing
import os
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Literal

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


def audit_outbox(settings: LedgerSettings, org: str) -> Outbox:
    """The service's audit outbox of one organisation."""
    return open_outbox(f"api-{org}", settings, org=org)


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
    for org in orgs:
        audit_outbox(settings, org).start(poll_s=DELIVERY_POLL_S)
    while os.getppid() == worker:
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
                outbox = self._outboxes[org] = audit_outbox(self._settings, org)
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
        """Per organisation whose audit outbox this service has opened: pending events and the oldest one's age."""
        with self._lock:
            outboxes = dict(self._outboxes)
        return {org: outbox.backlog() for org, outbox in outboxes.items()}

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
