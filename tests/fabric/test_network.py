"""A real Fabric network started by the test session: policy, caller checks, crash recovery, verification.

Runs only where the Fabric binaries are installed (see tests/fabric/live.py); the contract suite runs on the
same kind of network with ``CAREFED_CONTRACT_BACKENDS=embedded,fabric``.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric_network import gateway as gw
from fabric_network import network
from fabric_network.fabric_install import default_fabric_home
from fabric_network.ledger import ContractRejected, open_ledger
from tests.fabric.live import running_network

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
SINCE = "2026-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with running_network(tmp_path_factory.mktemp("fabric"), HOSPITALS) as state_dir:
        yield state_dir


def _audit_event() -> str:
    return (
        '{"action":"model.predict","actor":"dr-smith","object":"model:m1","outcome":"success",'
        '"purpose":"TREAT","role":"clinician"}'
    )


def test_one_hospitals_endorsement_does_not_satisfy_the_majority_policy(live: Path) -> None:
    gateway = network.connect(live, "hospital-a")
    try:
        with pytest.raises(gw.EndorsementPolicyFailure):
            gateway.submit("AuditContract:append_audit_event", [_audit_event()], endorsing_orgs=["HospitalAMSP"])
        two = gateway.submit(
            "AuditContract:append_audit_event", [_audit_event()], endorsing_orgs=["HospitalAMSP", "HospitalBMSP"]
        )
        assert two.block_number > 0
    finally:
        gateway.close()


def test_a_hospital_cannot_record_another_hospitals_consent(live: Path) -> None:
    pseudonym = secrets.token_hex(32)
    with open_ledger(backend="fabric", state_dir=live, org="hospital-a") as hospital_a:
        hospital_a.submit("ConsentContract:record_consent", pseudonym, "HRESCH", "research", SINCE, "")
    with open_ledger(backend="fabric", state_dir=live, org="hospital-b") as hospital_b:
        with pytest.raises(ContractRejected, match="another hospital"):
            hospital_b.submit("ConsentContract:withdraw_consent", pseudonym, "HRESCH")
        assert hospital_b.evaluate("ConsentContract:read_consent", pseudonym, "HRESCH")["status"] == "active"


def test_a_peer_killed_with_sigkill_catches_up_after_up_and_the_chain_verifies(live: Path) -> None:
    supervisor = network.Layout.of(live).supervisor()
    victim = supervisor.record("peer-hospital-c")
    assert victim is not None
    os.kill(victim.pid, signal.SIGKILL)
    with open_ledger(backend="fabric", state_dir=live, org="hospital-a") as hospital_a:
        committed = [hospital_a.submit("AuditContract:append_audit_event", _audit_event()) for _ in range(3)]
        height = hospital_a.height()
    network.up(live, default_fabric_home())  # restarts exactly the dead peer; the rest keep running
    with open_ledger(backend="fabric", state_dir=live, org="hospital-c") as hospital_c:
        for result in committed:
            assert hospital_c.block_of(result.tx_id) == result.block_number
        assert hospital_c.height() >= height
        report = hospital_c.verify()
    assert report.ok, report.describe()
    assert report.height >= height
