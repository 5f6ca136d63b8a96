"""Fixtures shared by several test packages."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fabric.live import LIVE_HOSPITALS, running_network
from tests.mutation import hide_mutant_variants

hide_mutant_variants()


@pytest.fixture(scope="session")
def live_fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One real Fabric network (3 hospitals + the consortium org) for the whole session: the contract suite on
    the `fabric` backend and tests/fabric/test_network.py share it, so CI pays for one `fabric up`.
    Skips (or fails, with CAREFED_REQUIRE_FABRIC=1) where the Fabric binaries are not installed."""
    with running_network(tmp_path_factory.mktemp("fabric"), LIVE_HOSPITALS) as state_dir:
        yield state_dir


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `carefed demo` for the whole session, run as a newcomer runs it: in a fresh directory, with the
    defaults (three hospitals, `.carefed/`, `runs/`) except two rounds instead of three, to keep CI short.

    The compliance checks read it in place; the README-flow test works on a copy. The demo (real SuperLink,
    SuperNodes and node workers; an HE run and a timing run) takes 3-10 minutes on two shared cores.
    """
    workspace = tmp_path_factory.mktemp("demo-workspace")
    completed = subprocess.run(
        [sys.executable, "-m", "carefed", "demo", "--rounds", "2"],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return workspace
