"""Worker processes write their audit events into outbox files of their own (writer slots), and the one
deliverer brings every slot's events to the ledger: nothing lost, nothing recorded twice."""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from api.core.audit import AuditEvent, LedgerAuditTrail
from api.core.ledger import LedgerHub, claim_writer_slot
from fabric_network.identities import init_identities
from fabric_network.ledger import open_ledger

pytestmark = pytest.mark.timeout(300)
EVENTS = 300


def test_a_writer_slot_is_held_until_released_and_then_taken_over(tmp_path: Path) -> None:
    first, first_lock = claim_writer_slot(tmp_path)
    second, second_lock = claim_writer_slot(tmp_path)
    assert (first, second) == (0, 1), "a held slot is not handed out twice"
    first_lock.close()  # the worker holding slot 0 is gone
    again, again_lock = claim_writer_slot(tmp_path)
    assert again == 0, "a restarted worker takes over the free slot instead of adding files"
    second_lock.close()
    again_lock.close()


def test_two_workers_write_their_own_outboxes_and_the_deliverer_brings_every_event_once(tmp_path: Path) -> None:
    init_identities(tmp_path, ["hospital-a"])
    hubs = [LedgerHub(tmp_path, audit_delivery="process") for _ in range(2)]  # two workers, each with a deliverer
    trails = [LedgerAuditTrail(hub) for hub in hubs]
    try:
        for hub in hubs:
            hub.start()

        def record(index: int) -> None:
            event = AuditEvent(
                "hospital-a", f"user-{index}", "clinician", "api.predict", "route:predict", "success", "TREAT"
            )
            trails[index % 2].record(event).result(timeout=60)  # durable in the worker's outbox when it returns

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(record, range(EVENTS)))
        outboxes = sorted(path.name for path in (tmp_path / "outbox").glob("api-hospital-a*.sqlite"))
        assert outboxes == ["api-hospital-a-w1.sqlite", "api-hospital-a.sqlite"]
        deadline = time.monotonic() + 120
        with open_ledger(state_dir=tmp_path, org="consortium") as ledger:
            while len(events := ledger.evaluate("AuditContract:query_audit", {"action": "api.predict"})) < EVENTS:
                assert time.monotonic() < deadline, f"{len(events)} of {EVENTS} events on the ledger after 120 s"
                time.sleep(0.5)
            time.sleep(2)  # a duplicate would arrive by now
            events = ledger.evaluate("AuditContract:query_audit", {"action": "api.predict"})
        assert sorted(event["actor"] for event in events) == sorted(f"user-{index}" for index in range(EVENTS))
        assert sum(hub.outbox_backlogs()["hospital-a"][0] for hub in hubs) == 0
    finally:
        for trail in trails:
            trail.close()
        for hub in hubs:
            hub.close()
