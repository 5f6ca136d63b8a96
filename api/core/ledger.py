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


def org_of(hospital: str | None) -> str:
    """The ledger organisation acting for a user: their hospital, or the consortium for consortium-wide roles."""
    return hospital or CONSORTIUM_ORG


def hospital_msp(hospital: str) -> str:
    """A hospital's MSP id as the ledger records it (`hospital-a` → `HospitalAMSP`)."""
    return msp_id_for(hospital)


class LedgerHub:
    """Ledger handles by organisation, shared by the request threads (the ledgers are thread-safe)."""

    def __init__(self, state_dir: Path) -> None:
        self._settings = LedgerSettings(state_dir=state_dir)
        self._ledgers: dict[str, Ledger] = {}
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

    def close(self) -> None:
        with self._lock:
            for ledger in self._ledgers.values():
                ledger.close()
            self._ledgers.clear()
