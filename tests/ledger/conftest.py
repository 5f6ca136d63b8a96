"""Fixtures for the embedded ledger's own tests: a consortium in a temporary state directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric_network.identities import init_identities


@pytest.fixture(scope="session")
def consortium_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory with identities for hospital-a and hospital-b (no ledger yet)."""
    state_dir = tmp_path_factory.mktemp("consortium")
    init_identities(state_dir, ["hospital-a", "hospital-b"])
    return state_dir


@pytest.fixture
def state_dir(consortium_state: Path, tmp_path: Path) -> Path:
    """A fresh state directory sharing the session's identities (a new, empty ledger per test)."""
    fresh = tmp_path / "state"
    fresh.mkdir()
    (fresh / "crypto").symlink_to(consortium_state / "crypto")
    return fresh
