"""How the service's audit events reach the ledger: group-committed into the outbox, delivered by a separate
process (the service's default), nothing lost when requests come in together."""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi.testclient import TestClient

from api.core.audit import AuditEvent, LedgerAuditTrail
from api.core.config import Settings
from api.core.ledger import LedgerHub, audit_outbox
from api.main import create_app
from fabric_network.identities import init_identities
from fabric_network.ledger import LedgerSettings, open_ledger


def _event(index: int) -> AuditEvent:
    return AuditEvent("hospital-a", f"user-{index}", "clinician", "api.predict", "route:predict", "success", "TREAT")


def test_concurrent_events_are_group_committed_and_all_delivered(tmp_path: Path) -> None:
    init_identities(tmp_path, ["hospital-a"])
    hub = LedgerHub(tmp_path, audit_delivery="thread")
    trail = LedgerAuditTrail(hub)
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            futures = list(pool.map(lambda i: trail.record(_event(i)), range(200)))
        for future in futures:
            future.result(timeout=60)  # durable in the outbox when the future completes
        queued = audit_outbox(LedgerSettings(state_dir=tmp_path), "hospital-a")
        assert queued.count("pending") + queued.count("delivered") == 200
        queued.close()
        assert hub.flush_outboxes()
        with open_ledger(state_dir=tmp_path, org="consortium") as ledger:
            events = ledger.evaluate("AuditContract:query_audit", {"action": "api.predict"})
        assert sorted(e["actor"] for e in events) == sorted(f"user-{i}" for i in range(200))
        assert {e["organisation"] for e in events} == {"HospitalAMSP"}
    finally:
        trail.close()
        hub.close()


def test_the_service_delivers_from_a_separate_process(tmp_path: Path) -> None:
    init_identities(tmp_path, ["hospital-a"])
    app = create_app(Settings(state_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'api.sqlite'}"))
    assert app.state.settings.audit_delivery == "process"
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        deadline = time.monotonic() + 60
        with open_ledger(state_dir=tmp_path, org="consortium") as ledger:
            while not (events := ledger.evaluate("AuditContract:query_audit", {"action": "api.health"})):
                assert time.monotonic() < deadline, "the delivery process delivered nothing within 60 s"
                time.sleep(0.2)
    assert events[0]["actor"] == "anonymous" and events[0]["organisation"] == "ConsortiumMSP"
