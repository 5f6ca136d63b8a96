"""The service's way to the consortium ledger: one `Ledger` per organisation it acts for.

A hospital's consents must be written with that hospital's identity (the ConsentContract checks the caller's
MSP id), and an audit event is vouched for by the organisation of the user it concerns, so the service holds
one ledger handle per organisation, opened on first use through the ledger package's factory and closed
with the app. The backend (embedded by default, Fabric by configuration) is the ledger package's business:
`CAREFED_LEDGER_*` settings reach `open_ledger` unchanged.
"""

import threading
from pathlib import Path

from api.core.problems import ProblemError
from fabric_network.identities import CONSORTIUM_ORG, msp_id_for
from fabric_network.ledger import Ledger, LedgerConfigError, LedgerSettings, open_ledger
from fabric_network.outbox import Outbox, open_outbox


def org_of(hospital: str | None) -> str:
    """The ledger organisation acting for a user: their hospital, or the consortium for consortium-wide roles."""
    return hospital or CONSORTIUM_ORG


def hospital_msp(hospital: str) -> str:
    """A hospital's MSP id as the ledger records it (`hospital-a` → `HospitalAMSP`)."""
    return msp_id_for(hospital)


class LedgerHub:
    """Ledger handles and durable outboxes by organisation, shared by the request threads (both are thread-safe).

    Reads and the writes a user waits for (a consent) go to the ledger directly; the audit trail goes through
    each organisation's outbox (`<state_dir>/outbox/api-<org>.sqlite`), delivered by its background thread.
    """

    def __init__(self, state_dir: Path) -> None:
        self._settings = LedgerSettings(state_dir=state_dir)
        self._ledgers: dict[str, Ledger] = {}
        self._outboxes: dict[str, Outbox] = {}
        self._lock = threading.Lock()

    def outbox(self, org: str) -> Outbox:
        """`org`'s durable outbox, delivering in the background from first use on."""
        with self._lock:
            outbox = self._outboxes.get(org)
            if outbox is None:
                outbox = self._outboxes[org] = open_outbox(f"api-{org}", self._settings, org=org)
                outbox.start()
            return outbox

    def flush_outboxes(self, timeout_s: float = 30.0) -> bool:
        """Deliver everything queued now; True when every outbox is drained (tests and shutdown use it)."""
        with self._lock:
            outboxes = list(self._outboxes.values())
        return all(outbox.flush(timeout_s) for outbox in outboxes)

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

    def close(self) -> None:
        """Stop the outboxes (what is queued stays on disk for the next start) and close the ledgers."""
        with self._lock:
            for outbox in self._outboxes.values():
                outbox.close()
            for ledger in self._ledgers.values():
                ledger.close()
            self._outboxes.clear()
            self._ledgers.clear()
