"""Fixtures of the contract suite: one consortium network per selected backend (see backends.py)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fabric_network.contracts.common import opaque_id
from fabric_network.ledger import ContractRejected, Ledger
from tests.contracts.backends import BACKENDS, HOSPITALS, SHARED, LedgerNetwork
from tests.fabric.live import fabric_installed


def _default_backends() -> str:
    """``embedded``, plus ``fabric`` wherever Fabric is installed or CAREFED_REQUIRE_FABRIC=1 demands it."""
    if fabric_installed() or os.environ.get("CAREFED_REQUIRE_FABRIC") == "1":
        return "embedded,fabric"
    return "embedded"


def _selected_backends() -> list[str]:
    selected = os.environ.get("CAREFED_CONTRACT_BACKENDS") or _default_backends()
    names = [n.strip() for n in selected.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise pytest.UsageError(f"CAREFED_CONTRACT_BACKENDS: unknown backend(s) {unknown}; known: {sorted(BACKENDS)}")
    return names


@pytest.fixture(scope="session", params=_selected_backends())
def network(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerNetwork]:
    name = request.param
    shared = SHARED.get(name)
    directory = request.getfixturevalue(shared) if shared else tmp_path_factory.mktemp(f"ledger-{name}")
    with BACKENDS[name](directory) as running:
        yield running


@pytest.fixture(scope="session")
def hospital_a(network: LedgerNetwork) -> Ledger:
    return network.ledger("hospital-a")


@pytest.fixture(scope="session")
def hospital_b(network: LedgerNetwork) -> Ledger:
    return network.ledger("hospital-b")


@pytest.fixture(scope="session")
def hospital_c(network: LedgerNetwork) -> Ledger:
    return network.ledger("hospital-c")


@pytest.fixture(scope="session")
def consortium(network: LedgerNetwork) -> Ledger:
    return network.ledger("consortium")


@pytest.fixture(scope="session")
def governed(network: LedgerNetwork, consortium: Ledger) -> list[str]:
    """The three hospitals are the consortium's members, each with a research (HRESCH) ε limit; their MSP ids."""
    members = [network.msp_id(h) for h in HOSPITALS]
    if not consortium.evaluate("GovernanceContract:read_members")["hospitals"]:
        consortium.submit("GovernanceContract:init_members", members)
    for msp in members:
        consortium.submit("PrivacyBudgetContract:set_budget_limit", msp, "HRESCH", 100)
    return members


def start_run(consortium: Ledger, run_id: str, spec: dict[str, Any], voters: dict[Ledger, str]) -> dict[str, Any]:
    """Propose a run, let each hospital ledger in `voters` cast its vote, start it; returns the started run."""
    consortium.submit("LineageContract:register_run", run_id, spec)
    for ledger, vote in voters.items():
        ledger.submit("LineageContract:vote_run", run_id, vote)
    return consortium.submit("LineageContract:start_run", run_id).result


def vouch(
    ledger: Ledger,
    run_id: str,
    number: int,
    snapshot: dict[str, Any],
    update_sha256: str,
    purpose: str = "HRESCH",
    epsilon: float = 0.5,
) -> dict[str, Any]:
    """A hospital charges its ε and records its update for a round, as a node does before sending; returns the
    round record's participant entry that references exactly that."""
    charge = ledger.submit("PrivacyBudgetContract:charge_budget", purpose, epsilon, run_id, number, QUIET_MECHANISM)
    update = {
        "round": number,
        "update_sha256": update_sha256,
        "consent_snapshot_id": snapshot["snapshot_id"],
        "consent_snapshot_root": snapshot["root"],
        "charge_tx_id": charge.tx_id,
    }
    ledger.submit("LineageContract:record_update", run_id, update)
    return {
        "hospital": ledger.msp_id,
        "consent_snapshot_id": snapshot["snapshot_id"],
        "consent_snapshot_root": snapshot["root"],
        "epsilon_spent": epsilon,
        "num_examples": snapshot["count"],
        "update_sha256": update_sha256,
    }


#: A budget charge's mechanism whose ε is tiny (< 0.004), so a test's claimed ε overstates it and passes the
#: contract's recomputation; tests of the recomputation build their own.
QUIET_MECHANISM = {
    "accountant": "carefed-rdp",
    "accountant_version": "1",
    "noise_multiplier": 50.0,
    "sample_rate": 0.01,
    "steps": 10,
    "max_grad_norm": 1.0,
    "delta": 1e-5,
}


def new_pseudonym() -> str:
    """A fresh patient pseudonym, as a hospital draws it."""
    return secrets.token_hex(32)


def new_id(prefix: str) -> str:
    """A fresh record id (run, model, snapshot) that never collides with another test's on a shared ledger."""
    return opaque_id(prefix)


@pytest.fixture
def refused(hospital_a: Ledger, hospital_b: Ledger, hospital_c: Ledger) -> Callable[..., str]:
    """Submit a call that must be refused without changing the ledger; returns the contract's message."""
    peers = (hospital_a, hospital_b, hospital_c)  # on Fabric one peer each; embedded, one chain

    def settled_height() -> int:
        """The chain's height once every peer holds every block: on Fabric a peer commits a block another
        peer's client committed a moment later, so one peer's height alone could grow without any new
        transaction (that made this check fail once in CI)."""
        deadline = time.monotonic() + 10
        while True:
            heights = {peer.height() for peer in peers}
            if len(heights) == 1 or time.monotonic() > deadline:
                return max(heights)
            time.sleep(0.05)

    def check(ledger: Ledger, function: str, *args: Any) -> str:
        height = settled_height()
        with pytest.raises(ContractRejected) as caught:
            ledger.submit(function, *args)
        assert settled_height() == height, "a refused transaction must not be committed"
        return str(caught.value)

    return check
