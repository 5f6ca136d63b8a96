"""The audit delivery process of a worker that is killed -9 exits too, so it cannot hold the delivery lock forever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fabric_network.identities import init_identities

pytestmark = pytest.mark.timeout(300)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_workers_deliverer_exits_and_releases_the_lock(tmp_path: Path) -> None:
    init_identities(tmp_path, ["hospital-a"])
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from pathlib import Path
                from api.core.ledger import LedgerHub
                hub = LedgerHub(Path({str(tmp_path)!r}), "process")
                hub.start()
                print(hub._deliverer.pid, flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    deliverer = int(worker.stdout.readline())
    lock = tmp_path / "outbox" / "api-delivery.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(deliverer) and lock.exists()
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    deadline = time.monotonic() + 60
    while _alive(deliverer) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(deliverer), "the orphaned deliverer still runs (and holds the delivery lock)"
