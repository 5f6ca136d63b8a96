"""Durability: a process killed with SIGKILL loses no submission that had returned, and the ledger verifies.

The writer runs as a real child process that prints each transaction id only after ``submit`` returned (or each
outbox key only after ``enqueue`` returned); the parent kills it mid-stream and checks every printed one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from fabric_network.ledger import open_ledger
from fabric_network.outbox import open_outbox

ROOT = Path(__file__).resolve().parents[2]
EVENT = (
    '{"actor": "svc-writer", "role": "service", "action": "round.train", "object": "run:r1", '
    '"outcome": "success", "purpose": ""}'
)


def _run_until_killed(script: str, state_dir: Path, lines_wanted: int) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    printed: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while len(printed) < lines_wanted and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                raise AssertionError(
                    f"writer exited early: {child.wait()} {child.stderr.read() if child.stderr else ''}"
                )
            printed.append(line.strip())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return printed


def test_sigkill_during_submissions_loses_nothing_that_returned(state_dir: Path) -> None:
    script = f"""
        import sys
        from fabric_network.ledger import open_ledger, Call
        ledger = open_ledger(state_dir=sys.argv[1], org="hospital-a")
        event = {EVENT!r}
        while True:
            tx = ledger.submit("AuditContract:append_audit_event", event)
            print(tx.tx_id, flush=True)
            for result in ledger.submit_batch([Call("AuditContract:append_audit_event", (event,))] * 5):
                print(result.tx_id, flush=True)
    """
    returned = _run_until_killed(script, state_dir, lines_wanted=60)
    with open_ledger(state_dir=state_dir, org="hospital-a") as ledger:
        for tx_id in returned:
            ledger.block_of(tx_id)  # raises if the committed transaction was lost
        report = ledger.verify()
        assert report.ok, report.describe()
        assert report.transactions >= len(returned) + 1


def test_sigkill_during_outbox_delivery_loses_nothing_and_delivers_once(state_dir: Path) -> None:
    script = f"""
        import sys, itertools
        from fabric_network.outbox import open_outbox
        outbox = open_outbox("writer", state_dir=sys.argv[1], org="hospital-a")
        outbox.start(poll_s=0.01)
        for i in itertools.count():
            key = outbox.enqueue("AuditContract:append_audit_event", {EVENT!r}, idempotency_key=f"event-{{i}}")
            print(key, flush=True)
    """
    enqueued = _run_until_killed(script, state_dir, lines_wanted=150)
    outbox = open_outbox("writer", state_dir=state_dir, org="hospital-a")
    try:
        assert outbox.flush(timeout_s=60)
        delivered = {e.idempotency_key: e for e in outbox.entries("delivered")}
        assert set(enqueued) <= set(delivered)
        with open_ledger(state_dir=state_dir, org="hospital-a") as ledger:
            for key in enqueued:
                ledger.block_of(str(delivered[key].tx_id))
            stored = ledger.evaluate("AuditContract:query_audit", {"actor": "svc-writer"})
            assert len(stored) == len(delivered), "each queued event is on the ledger exactly once"
            assert ledger.verify().ok
    finally:
        outbox.close()
