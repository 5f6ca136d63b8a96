"""Fixtures of the contract suite: one consortium network per selected backend (see backends.py)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fabric_network.contracts.common import opaque_id
from fabric_network.ledger import ContractRejected, Ledger
from tests.contracts.backends import BACKENDS, LedgerNetwork


def _selected_backends() -> list[str]:
    names = [n.strip() for n in os.environ.get("CAREFED_CONTRACT_BACKENDS", "embedded").split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise pytest.UsageError(f"CAREFED_CONTRACT_BACKENDS: unknown backend(s) {unknown}; known: {sorted(BACKENDS)}")
    return names


@pytest.fixture(scope="session", params=_selected_backends())
def network(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerNetwork]:
    with BACKENDS[request.param](tmp_path_factory.mktemp(f"ledger-{request.param}")) as running:
        yield running


@pytest.fixture(scope="session")
def hospital_a(network: LedgerNetwork) -> Ledger:
    return network.ledger("hospital-a")


@pytest.fixture(scope="session")
def hospital_b(network: LedgerNetwork) -> Ledger:
    return network.ledger("hospital-b")


@pytest.fixture(scope="session")
def consortium(network: LedgerNetwork) -> Ledger:
    return network.ledger("consortium")


def new_pseudonym() -> str:
    """A fresh patient pseudonym, as a hospital draws it."""
    return secrets.token_hex(32)


def new_id(prefix: str) -> str:
    """A fresh record id (run, model, snapshot) that never collides with another test's on a shared ledger."""
    return opaque_id(prefix)


@pytest.fixture
def refused() -> Callable[..., str]:
    """Submit a call that must be refused without changing the ledger; returns the contract's message."""

    def check(ledger: Ledger, function: str, *args: Any) -> str:
        height = ledger.height()
        with pytest.raises(ContractRejected) as caught:
            ledger.submit(function, *args)
        assert ledger.height() == height, "a refused transaction must not be committed"
        return str(caught.value)

    return check
