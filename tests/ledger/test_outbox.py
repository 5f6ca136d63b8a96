"""The durable outbox: queued while the ledger is down, delivered in order once, refusals set aside."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fabric_network.ledger import Call, Ledger, LedgerError, LedgerUnavailable, TxResult, open_ledger
from fabric_network.outbox import Outbox

EVENT = {"role": "service", "action": "round.train", "object": "run:r1", "outcome": "success", "purpose": ""}


class _Switch:
    """A ledger factory that fails while ``down`` (the ledger process being unreachable), else opens it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir, self.down, self.opened = state_dir, True, 0

    def __call__(self) -> Ledger:
        if self.down:
            raise LedgerUnavailable("ledger unreachable")
        self.opened += 1
        return open_ledger(state_dir=self.state_dir, org="hospital-a")


@pytest.fixture
def switch(state_dir: Path) -> _Switch:
    return _Switch(state_dir)


@pytest.fixture
def outbox(state_dir: Path, switch: _Switch) -> Outbox:
    box = Outbox(state_dir / "outbox" / "test.sqlite", switch, batch_size=3)
    yield box
    box.close()


def _actors(state_dir: Path, actor: str) -> Callable[[], list[dict]]:
    def query() -> list[dict]:
        with open_ledger(state_dir=state_dir, org="hospital-b") as ledger:
            return ledger.evaluate("AuditContract:query_audit", {"actor": actor})

    return query


def test_queued_while_down_then_delivered_in_order(state_dir: Path, switch: _Switch, outbox: Outbox) -> None:
    keys = [outbox.enqueue("AuditContract:append_audit_event", {**EVENT, "actor": f"svc-{n}"}) for n in "abcdefg"]
    report = outbox.deliver_pending()
    assert (report.delivered, report.still_pending) == (0, 7)
    assert all(e.attempts == 1 for e in outbox.entries("pending")[:3])
    switch.down = False
    report = outbox.deliver_pending()
    assert (report.delivered, report.rejected, report.still_pending) == (7, 0, 0)
    delivered = outbox.entries("delivered")
    assert [e.idempotency_key for e in delivered] == keys
    assert [e.block_number for e in delivered] == sorted(e.block_number for e in delivered)
    for n in "abcdefg":
        assert [e["actor"] for e in _actors(state_dir, f"svc-{n}")()] == [f"svc-{n}"], "every queued event arrives"


def test_a_refused_call_is_set_aside_and_does_not_block(state_dir: Path, switch: _Switch, outbox: Outbox) -> None:
    switch.down = False
    outbox.enqueue("AuditContract:append_audit_event", {**EVENT, "actor": "jane@example.org"})
    outbox.enqueue("AuditContract:append_audit_event", {**EVENT, "actor": "svc-after"})
    report = outbox.deliver_pending()
    assert (report.delivered, report.rejected) == (1, 1)
    (rejected,) = outbox.entries("rejected")
    assert rejected.error is not None and "event.actor" in rejected.error
    assert outbox.deliver_pending().delivered == 0, "a rejected call is not retried"
    assert len(_actors(state_dir, "svc-after")()) == 1


def test_redelivery_after_a_crash_between_commit_and_mark_writes_once(
    state_dir: Path, switch: _Switch, outbox: Outbox
) -> None:
    switch.down = False
    key = outbox.enqueue("AuditContract:append_audit_event", {**EVENT, "actor": "svc-once"}, idempotency_key="k-1")
    # The ledger committed it, but the process died before marking it delivered:
    with open_ledger(state_dir=state_dir, org="hospital-a") as ledger:
        first = ledger.submit("AuditContract:append_audit_event", {**EVENT, "actor": "svc-once"}, idempotency_key=key)
    assert outbox.deliver_pending().delivered == 1
    (entry,) = outbox.entries("delivered")
    assert entry.tx_id == first.tx_id
    assert len(_actors(state_dir, "svc-once")()) == 1
    assert outbox.enqueue("AuditContract:append_audit_event", {}, idempotency_key="k-1") == "k-1"
    assert outbox.count("pending") == 0, "enqueuing a known key again is a no-op"


def test_background_delivery(state_dir: Path, switch: _Switch, outbox: Outbox) -> None:
    outbox.start(poll_s=0.01, max_backoff_s=0.05)
    outbox.enqueue("AuditContract:append_audit_event", {**EVENT, "actor": "svc-bg"})
    switch.down = False
    assert outbox.flush(timeout_s=20)
    outbox.stop()
    assert len(_actors(state_dir, "svc-bg")()) == 1


def test_runs_of_audit_events_travel_as_one_transaction(state_dir: Path, switch: _Switch) -> None:
    switch.down = False
    box = Outbox(state_dir / "outbox" / "grouped.sqlite", switch, batch_size=200)
    try:
        for n in range(30):
            box.enqueue("AuditContract:append_audit_event", {**EVENT, "actor": "svc-group", "object": f"run:r{n}"})
        box.enqueue("PrivacyBudgetContract:read_budget", "HospitalAMSP", "HRESCH")  # breaks the run
        for n in range(3):
            box.enqueue("AuditContract:append_audit_event", {**EVENT, "actor": "svc-group", "object": f"run:s{n}"})
        report = box.deliver_pending()
        assert (report.delivered, report.rejected) == (33, 1)
        delivered = box.entries("delivered")
        assert len({e.tx_id for e in delivered[:30]}) == 1 and len({e.tx_id for e in delivered[30:]}) == 1
        stored = _actors(state_dir, "svc-group")()
        assert [e["object"] for e in stored] == [f"run:r{n}" for n in range(30)] + [f"run:s{n}" for n in range(3)]
    finally:
        box.close()


def test_a_refused_group_is_retried_event_by_event(state_dir: Path, switch: _Switch, outbox: Outbox) -> None:
    switch.down = False
    outbox.enqueue("AuditContract:append_audit_event", {**EVENT, "actor": "svc-ok-1"})
    outbox.enqueue("AuditContract:append_audit_event", {**EVENT, "actor": "svc-bad", "object": "patient:MRN-1234567"})
    outbox.enqueue("AuditContract:append_audit_event", {**EVENT, "actor": "svc-ok-2"})
    report = outbox.deliver_pending()
    assert (report.delivered, report.rejected, report.still_pending) == (2, 1, 0)
    (rejected,) = outbox.entries("rejected")
    assert rejected.error is not None and "event.object" in rejected.error
    assert len(_actors(state_dir, "svc-ok-1")()) == len(_actors(state_dir, "svc-ok-2")()) == 1


class _LosesResponses:
    """A real ledger whose first batch commits but whose answer is lost (a crash between commit and mark)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger, self.lost = ledger, False

    def submit_batch(self, calls: list[Call]) -> list[TxResult | LedgerError]:
        outcomes = self.ledger.submit_batch(calls)
        if not self.lost:
            self.lost = True
            raise LedgerUnavailable("connection lost after commit")
        return outcomes

    def close(self) -> None:
        """The outbox drops a ledger that failed; this one stays usable for the retry."""


def test_a_group_whose_commit_answer_was_lost_is_written_once(state_dir: Path) -> None:
    real = open_ledger(state_dir=state_dir, org="hospital-a")
    flaky = _LosesResponses(real)
    box = Outbox(state_dir / "outbox" / "lost.sqlite", lambda: flaky, batch_size=4)  # type: ignore[arg-type,return-value]
    try:
        for n in range(6):
            box.enqueue("AuditContract:append_audit_event", {**EVENT, "actor": "svc-lost", "object": f"run:r{n}"})
        assert box.deliver_pending().delivered == 0 and flaky.lost
        assert box.deliver_pending().delivered == 6
        assert len(_actors(state_dir, "svc-lost")()) == 6, "the re-sent group was recognised, not written again"
    finally:
        box.close()
        real.close()


def test_malformed_audit_calls_do_not_break_a_group(state_dir: Path, switch: _Switch, outbox: Outbox) -> None:
    switch.down = False
    outbox.enqueue("AuditContract:append_audit_event")  # no argument at all
    outbox.enqueue("AuditContract:append_audit_event", "not json")
    outbox.enqueue("AuditContract:append_audit_event", {**EVENT, "actor": "svc-fine"})
    report = outbox.deliver_pending()
    assert (report.delivered, report.rejected, report.still_pending) == (1, 2, 0)
    assert len(_actors(state_dir, "svc-fine")()) == 1
