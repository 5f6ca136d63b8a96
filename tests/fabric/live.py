"""Starting a real Fabric network from tests: one per session, on free ports, stopped at the end.

Fabric's binaries come from `carefed fabric install` (a Go source build, or --from a release archive). Where
they are absent the live tests skip with the reason — unless ``CAREFED_REQUIRE_FABRIC=1``, which turns the
absence into a failure (set it wherever the binaries can be installed, so the tests can never silently skip).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from fabric_network.fabric import network
from fabric_network.fabric.install import default_fabric_home
from fabric_network.identities import init_identities

# The session's shared network (tests/conftest.py ``live_fabric``): three hospitals, so a majority is 2 of 3.
LIVE_HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")


def fabric_installed() -> bool:
    """Whether the Fabric binaries are installed (then the live tests and the contract suite's `fabric` run)."""
    return not default_fabric_home().missing()


def require_fabric() -> None:
    """Skip (or, with CAREFED_REQUIRE_FABRIC=1, fail) unless the Fabric binaries are installed."""
    missing = default_fabric_home().missing()
    if not missing:
        return
    reason = (
        f"Fabric v3.1.5 is not installed ({missing[0]} missing): run `carefed fabric install` "
        "(needs Go >= 1.26.4 and a Go proxy serving github.com/hyperledger/fabric) or `--from <release dir>`"
    )
    if os.environ.get("CAREFED_REQUIRE_FABRIC") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def running_network(directory: Path, hospitals: Sequence[str]) -> Iterator[Path]:
    """Identities + `fabric up` in ``directory``; `fabric down` on exit, whatever happened."""
    require_fabric()
    init_identities(directory, list(hospitals))
    try:
        network.up(directory, default_fabric_home(), len(hospitals), network.find_free_base_port(len(hospitals)))
        yield directory
    finally:
        network.down(directory)
