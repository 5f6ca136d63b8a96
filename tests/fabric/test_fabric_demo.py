"""The whole federated demo on a real Fabric network, then the compliance officer's export of it.

`carefed demo --backend fabric` starts its own network (3 hospitals, majority endorsement) in a fresh
directory, trains with DP and HE through Flower, verifies the Fabric chain and stops the network; the
audit trail is then exported from the restarted network and verified from the bundle alone. Runs wherever the
Fabric binaries are installed (tests/fabric/live.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from fabric_network.fabric import network
from tests.fabric.live import require_fabric

# A demo with real Flower processes and a Fabric network on two shared cores.
pytestmark = pytest.mark.timeout(1500)


def _carefed(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carefed", *args],
        cwd=workspace,
        capture_output=True,  # also proves the services it leaves running do not hold its output open
        text=True,
        timeout=1200,
        check=False,
    )


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_demo_on_fabric_ends_verified_and_its_audit_export_verifies(tmp_path: Path) -> None:
    require_fabric()
    demo = _carefed(tmp_path, "demo", "--backend", "fabric", "--rounds", "2")
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    said = " ".join(demo.stdout.split())  # rich wraps at the terminal width
    assert "ledger verified:" in said and "orderer signatures" in said, said[-2000:]
    assert "start its network with `carefed fabric up --state-dir .carefed`" in said, said[-1000:]
    state = tmp_path / ".carefed"
    assert network.status(state) == [], "the demo stops its network"

    try:
        assert _carefed(tmp_path, "fabric", "up", "--state-dir", ".carefed").returncode == 0
        started = [p.pid for p in network.status(state) if p.running]
        assert len(started) == 7, "orderer, three peers, three chaincode servers"
        export = _carefed(tmp_path, "audit", "export", "--out", "exported", "--backend", "fabric")
        assert export.returncode == 0, export.stdout + export.stderr
        verified = _carefed(tmp_path, "audit", "verify", "exported")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "✓" in verified.stdout and "signed by Admin@consortium" in verified.stdout
    finally:
        down = _carefed(tmp_path, "fabric", "down", "--state-dir", ".carefed")
    assert down.returncode == 0, down.stdout + down.stderr
    left = [pid for pid in started if _alive(pid)]
    assert left == [], "`fabric down` left a process behind"
