"""A real Fabric network started by the test session: policy, caller checks, crash recovery, verification.

Runs only where the Fabric binaries are installed (see tests/fabric/live.py); the contract suite runs on the
same kind of network with ``CAREFED_CONTRACT_BACKENDS=embedded,fabric``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carefed.cli import app
from fabric_network.fabric import gateway as gw
from fabric_network.fabric import network
from fabric_network.fabric.install import default_fabric_home
from fabric_network.ledger import ContractRejected, open_ledger

# A live Fabric network (orderer, peers, chaincode) started once for the module.
pytestmark = pytest.mark.timeout(1800)

SINCE = "2026-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def live(live_fabric: Path) -> Path:
    """The session's network (tests/conftest.py): hospitals a, b and c, majority endorsement."""
    return live_fabric


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


def test_audit_export_and_reports_read_the_fabric_ledger_with_backend_fabric(live: Path, tmp_path: Path) -> None:
    """The compliance officer's commands on real Fabric blocks, chosen by `--backend fabric` alone (no env)."""
    runner = CliRunner()
    actor = f"dr-{secrets.token_hex(16)}"  # only this test's event matches --actor
    event = f'{{"action":"model.predict","actor":"{actor}","object":"model:m1","outcome":"success",'
    event += '"purpose":"TREAT","role":"clinician"}'
    with open_ledger(backend="fabric", state_dir=live, org="hospital-a") as hospital_a:
        height = hospital_a.submit("AuditContract:append_audit_event", event).block_number + 1
    fabric = ["--backend", "fabric", "--state-dir", str(live)]
    env = {"CAREFED_LEDGER_BACKEND": "embedded"}
    out = tmp_path / "export"
    exported = runner.invoke(app, ["audit", "export", "--out", str(out), "--actor", actor, *fabric], env=env)
    assert exported.exit_code == 0 and "exported 1 events" in exported.output, exported.output
    verified = runner.invoke(app, ["audit", "verify", str(out), "--state-dir", str(live)])
    assert verified.exit_code == 0 and "1 events" in verified.output, verified.output
    disclosed = runner.invoke(app, ["report", "disclosures", "--format", "json", *fabric], env=env)
    assert disclosed.exit_code == 0, disclosed.output
    assert actor in {row["recipient"] for row in json.loads(disclosed.output)["disclosures"]}
    budgets = runner.invoke(app, ["report", "privacy-budget", "--format", "json", *fabric], env=env)
    assert budgets.exit_code == 0, budgets.output
    assert json.loads(budgets.output)["ledger_height"] >= height  # the Fabric chain, not an empty embedded one


def test_fabric_status_and_ledger_verify_as_commands_on_the_live_network(live: Path) -> None:
    """What hospital IT types: `fabric status --json` lists every process serving, `ledger verify --backend
    fabric` checks the real chain (orderer signatures, hash chain) and says so."""
    runner = CliRunner()
    status = runner.invoke(app, ["fabric", "status", "--json", "--state-dir", str(live)])
    assert status.exit_code == 0, status.output
    processes = {p["name"]: p for p in json.loads(status.output)["processes"]}
    expected = {"orderer"} | {f"{kind}-hospital-{h}" for kind in ("peer", "chaincode") for h in "abc"}
    assert expected <= set(processes), sorted(processes)
    assert all(p["serving"] for p in processes.values()), processes
    verified = runner.invoke(app, ["ledger", "verify", "--json", "--backend", "fabric", "--state-dir", str(live)])
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.output)
    assert report["ok"] is True and report["height"] > 1, report
