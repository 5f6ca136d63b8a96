"""The embedded ledger as its callers use it: inside async frameworks, shared by several writers, followed."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from fabric_network.ledger import LedgerEvent, open_ledger

EVENT = {"role": "service", "action": "round.train", "object": "run:r1", "outcome": "success", "purpose": ""}


def test_usable_from_inside_a_running_event_loop(state_dir: Path) -> None:
    """FastAPI routes and Flower apps call the ledger from inside their event loop."""
    with open_ledger(state_dir=state_dir, org="hospital-a") as ledger:

        async def route() -> list[dict[str, str]]:
            ledger.submit("AuditContract:append_audit_event", {**EVENT, "actor": "svc-async"})
            result: list[dict[str, str]] = ledger.evaluate("AuditContract:query_audit", {"actor": "svc-async"})
            return result

        assert [e["actor"] for e in asyncio.run(route())] == ["svc-async"]


def test_concurrent_writers_share_one_chain(state_dir: Path) -> None:
    """Each writer has its own connection (as separate processes do); SQLite's write lock orders the blocks."""
    errors: list[BaseException] = []

    def write(org: str) -> None:
        try:
            with open_ledger(state_dir=state_dir, org=org) as ledger:
                for _ in range(15):
                    ledger.submit("AuditContract:append_audit_event", {**EVENT, "actor": f"svc-{org}"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(org,)) for org in ("hospital-a", "hospital-b", "consortium")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with open_ledger(state_dir=state_dir, org="hospital-a") as ledger:
        report = ledger.verify()
        assert report.ok and report.height == 1 + 45, report.describe()


def test_following_events_sees_later_commits(state_dir: Path) -> None:
    with open_ledger(state_dir=state_dir, org="hospital-a") as writer:
        start = writer.height()
        seen: list[LedgerEvent] = []
        reader = open_ledger(state_dir=state_dir, org="hospital-b")

        def follow() -> None:
            for event in reader.events(start, follow=True, poll_s=0.01):
                seen.append(event)
                if len(seen) == 2:
                    return

        thread = threading.Thread(target=follow)
        thread.start()
        committed = [writer.submit("AuditContract:append_audit_event", {**EVENT, "actor": "svc-f"}) for _ in range(2)]
        thread.join(timeout=30)
        reader.close()
    assert [e.tx_id for e in seen] == [c.tx_id for c in committed]


def test_verify_while_another_process_keeps_committing(state_dir: Path) -> None:
    """`carefed ledger verify` during a live run must not mistake a block committed mid-walk for forged state."""
    stop = threading.Event()

    def keep_writing() -> None:
        with open_ledger(state_dir=state_dir, org="hospital-b") as writer:
            while not stop.is_set():
                writer.submit("AuditContract:append_audit_event", {**EVENT, "actor": "svc-live"})

    with open_ledger(state_dir=state_dir, org="hospital-a") as ledger:
        for _ in range(20):
            ledger.submit("AuditContract:append_audit_event", {**EVENT, "actor": "svc-before"})
        thread = threading.Thread(target=keep_writing)
        thread.start()
        try:
            reports = [ledger.verify() for _ in range(5)]
        finally:
            stop.set()
            thread.join()
    assert all(r.ok for r in reports), [r.describe() for r in reports if not r.ok]
