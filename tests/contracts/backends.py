"""The ledger backends the contract suite runs on, and how to add one.

The suite under tests/contracts/ talks to the ledger only through the `Ledger` interface, so it runs unchanged
on any backend that can hand out ledgers signed by the consortium's identities. A backend is a context manager
factory: given an empty directory (for a ``SHARED`` backend, the running network's), it sets up a consortium
of (at least) the hospitals ``HOSPITALS`` plus the consortium org, yields a :class:`LedgerNetwork`, and tears
everything down on exit.

To run the suite on another backend (e.g. a real Fabric network): write such a factory (start the network on
free ports, return ledgers opened with ``open_ledger(backend="fabric", …)``), add it to ``BACKENDS`` below, and
select it with ``CAREFED_CONTRACT_BACKENDS=fabric`` (comma-separated for several). The default is ``embedded``,
plus ``fabric`` wherever the Fabric binaries are installed (or ``CAREFED_REQUIRE_FABRIC=1`` demands them).
The network is session-scoped: tests never assume an empty ledger and use fresh random ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric_network.identities import init_identities, msp_id_for
from fabric_network.ledger import (
    Call,
    Ledger,
    LedgerError,
    LedgerEvent,
    TxResult,
    VerifyProgress,
    VerifyReport,
    open_ledger,
)

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")  # three: majority rules need an odd one out


@dataclass
class LedgerNetwork:
    """A running consortium: ``ledger(org, role)`` gives a ledger signed by that org's identity in that role."""

    name: str
    state_dir: Path
    opener: Callable[[str, str], Ledger]
    _open: dict[tuple[str, str], Ledger] = field(default_factory=dict)

    def ledger(self, org: str, role: str = "client") -> Ledger:
        """A ledger for ``org`` (``hospital-a``, ``consortium``) as its ``client``, ``admin`` or ``node``."""
        if (org, role) not in self._open:
            self._open[(org, role)] = self.opener(org, role)
        return self._open[(org, role)]

    def msp_id(self, org: str) -> str:
        return msp_id_for(org)

    def close(self) -> None:
        for ledger in self._open.values():
            ledger.close()


@contextmanager
def embedded_network(directory: Path) -> Iterator[LedgerNetwork]:
    """The default backend: identities from `carefed ledger init`, the embedded ledger in ``directory``."""
    init_identities(directory, HOSPITALS)
    network = LedgerNetwork(
        "embedded", directory, lambda org, role: open_ledger(state_dir=directory, org=org, role=role)
    )
    try:
        yield network
    finally:
        network.close()


class SettledLedger(Ledger):
    """A Fabric ledger whose submits return once *every* hospital's peer holds the block, not only the
    submitting client's gateway peer (all the interface promises: Fabric commits per peer).

    The suite alternates organisations — hospital-b votes through its peer, then the consortium starts the run
    through hospital-a's — and under load the second peer can lag the first by a block, so the contract would
    rightly refuse on the state it sees. Waiting here makes each test read its own writes through any peer,
    which is what the tests assume; the contracts and the client stay as they are.
    """

    def __init__(self, inner: Ledger, peers: Callable[[], list[Ledger]], timeout_s: float = 10.0) -> None:
        self.inner, self.peers, self.timeout_s = inner, peers, timeout_s

    def _settle(self, block_number: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        while any(peer.height() <= block_number for peer in self.peers()) and time.monotonic() < deadline:
            time.sleep(0.05)

    @property
    def msp_id(self) -> str:
        return self.inner.msp_id

    def submit(self, function: str, *args: Any, idempotency_key: str | None = None) -> TxResult:
        result = self.inner.submit(function, *args, idempotency_key=idempotency_key)
        self._settle(result.block_number)
        return result

    def submit_batch(self, calls: Sequence[Call]) -> list[TxResult | LedgerError]:
        results = self.inner.submit_batch(calls)
        blocks = [r.block_number for r in results if isinstance(r, TxResult)]
        if blocks:
            self._settle(max(blocks))
        return results

    def evaluate(self, function: str, *args: Any) -> Any:
        return self.inner.evaluate(function, *args)

    def events(self, from_block: int = 0, *, follow: bool = False, poll_s: float = 0.2) -> Iterator[LedgerEvent]:
        return self.inner.events(from_block, follow=follow, poll_s=poll_s)

    def height(self) -> int:
        return self.inner.height()

    def block_of(self, tx_id: str) -> int:
        return self.inner.block_of(tx_id)

    def verify(self, progress: VerifyProgress | None = None) -> VerifyReport:
        return self.inner.verify(progress)

    def close(self) -> None:
        self.inner.close()


@contextmanager
def fabric_network(directory: Path) -> Iterator[LedgerNetwork]:
    """The session's real Fabric network in ``directory`` (``SHARED``), ledgers through each org's gateway peer."""

    def opener(org: str, role: str) -> Ledger:
        ledger = open_ledger(backend="fabric", state_dir=directory, org=org, role=role)
        return SettledLedger(ledger, lambda: [network.ledger(h) for h in HOSPITALS])

    network = LedgerNetwork("fabric", directory, opener)
    try:
        yield network
    finally:
        network.close()


BACKENDS: dict[str, Callable[[Path], AbstractContextManager[LedgerNetwork]]] = {
    "embedded": embedded_network,
    "fabric": fabric_network,
}
# Backends whose network the whole test session shares, by the fixture that runs it (its state directory is
# what the factory gets); the others get an empty directory of their own.
SHARED = {"fabric": "live_fabric"}
