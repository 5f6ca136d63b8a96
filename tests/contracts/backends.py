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

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fabric_network.identities import init_identities, msp_id_for
from fabric_network.ledger import Ledger, open_ledger

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


@contextmanager
def fabric_network(directory: Path) -> Iterator[LedgerNetwork]:
    """The session's real Fabric network in ``directory`` (``SHARED``), ledgers through each org's gateway peer."""
    network = LedgerNetwork(
        "fabric", directory, lambda org, role: open_ledger(backend="fabric", state_dir=directory, org=org, role=role)
    )
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
