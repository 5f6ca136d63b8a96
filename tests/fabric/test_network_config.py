"""What `carefed fabric up` generates and how it manages processes — the parts that need no Fabric binary."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from fabric_network.fabric import network
from fabric_network.fabric.install import FabricHome, FabricInstallError
from fabric_network.fabric.network import Layout, PortPlan
from fabric_network.fabric.processes import Supervisor, port_open
from fabric_network.identities import ConsortiumMaterial, init_identities
from tests.fabric.pki import TestCA
from tests.fabric.test_shim import _free_port


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> ConsortiumMaterial:
    return init_identities(tmp_path_factory.mktemp("state"), ["hospital-a", "hospital-b", "hospital-c"])


def test_ports_are_distinct_and_two_networks_apart_by_the_span_never_collide() -> None:
    first = PortPlan(20000, 3)
    second = PortPlan(20000 + first.span(), 3)
    assert len(set(first.all_ports())) == len(first.all_ports())
    assert not set(first.all_ports()) & set(second.all_ports())
    assert max(first.all_ports()) < first.base + first.span()


def test_a_base_port_without_room_is_refused_naming_the_option() -> None:
    with pytest.raises(network.NetworkError, match="--base-port 65520"):
        PortPlan(65520, 2).validate()


def test_ccaas_package_is_reproducible_and_has_exactly_the_two_files_fabric_accepts() -> None:
    package = network.ccaas_package("carefed_1.0", network.connection_template())
    assert package == network.ccaas_package("carefed_1.0", network.connection_template())
    with tarfile.open(fileobj=io.BytesIO(package)) as outer:
        members = outer.getmembers()
        assert [m.name for m in members] == ["metadata.json", "code.tar.gz"]
        assert all(m.isreg() for m in members)
        assert json.loads(outer.extractfile("metadata.json").read()) == {"type": "ccaas", "label": "carefed_1.0"}  # type: ignore[union-attr]
        code = gzip.decompress(outer.extractfile("code.tar.gz").read())  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(code)) as inner:
        connection = json.loads(inner.extractfile("connection.json").read())  # type: ignore[union-attr]
    assert connection["address"] == "{{.address}}" and connection["tls_required"] is True
    package_id = network.package_id("carefed_1.0", package)
    assert package_id.startswith("carefed_1.0:") and len(package_id.split(":")[1]) == 64


def test_endorsement_policy_needs_a_majority_of_hospitals(consortium: ConsortiumMaterial) -> None:
    assert network.endorsement_policy([h.msp_id for h in consortium.hospitals]) == (
        "OutOf(2, 'HospitalAMSP.peer', 'HospitalBMSP.peer', 'HospitalCMSP.peer')"
    )
    assert network.majority(2) == 2 and network.majority(4) == 3


def test_configtx_sets_anchor_peers_consenter_tls_and_short_batch_timeout(consortium: ConsortiumMaterial) -> None:
    ports = PortPlan(21000, 3)
    configtx = network.configtx(*network.channel_orgs(consortium, ports))
    profile = yaml.safe_load(yaml.safe_dump(configtx))["Profiles"]["CareFedChannel"]
    orgs = profile["Application"]["Organizations"]
    assert [o["AnchorPeers"][0]["Port"] for o in orgs if "AnchorPeers" in o] == [ports.peer(i) for i in range(3)]
    assert [o["Name"] for o in orgs][-1] == "ConsortiumMSP"  # submits runs and budgets, has no peer
    consenter = profile["Orderer"]["EtcdRaft"]["Consenters"][0]
    assert consenter["Port"] == ports.orderer
    assert consenter["ServerTLSCert"] == str(Path(consortium.orderer.node.tls_dir) / "server.crt")
    assert profile["Orderer"]["BatchTimeout"] == network.BATCH_TIMEOUT
    assert profile["Capabilities"] == {"V3_0": True}
    assert "Addresses" not in profile["Orderer"]  # forbidden with the V3_0 capability


def test_peer_environments_use_their_own_ports_paths_and_the_ccaas_builder(
    consortium: ConsortiumMaterial, tmp_path: Path
) -> None:
    home, layout, ports = FabricHome(tmp_path / "fabric-home"), Layout(tmp_path / "fabric"), PortPlan(22000, 3)
    envs = [
        network.peer_env(home, layout.data(h.node.name), h, "127.0.0.1", ports.peer_ports(i))
        for i, h in enumerate(consortium.hospitals)
    ]
    own_keys = ("CORE_PEER_LISTENADDRESS", "CORE_PEER_CHAINCODELISTENADDRESS", "CORE_OPERATIONS_LISTENADDRESS")
    addresses = [env[key] for env in envs for key in own_keys]
    assert len(set(addresses)) == len(addresses)
    for env in envs:
        fabric_values = [v for k, v in env.items() if k.startswith("CORE_")]
        assert not any("/var/hyperledger" in v for v in fabric_values)
        assert env["CORE_PEER_GOSSIP_EXTERNALENDPOINT"] == env["CORE_PEER_ADDRESS"]
        assert env["CORE_VM_ENDPOINT"] == ""
        builders = yaml.safe_load(env["CORE_CHAINCODE_EXTERNALBUILDERS"])
        assert builders[0]["path"] == str(home.ccaas_builder)
    assert (
        json.loads(envs[1]["CHAINCODE_AS_A_SERVICE_BUILDER_CONFIG"])["address"]
        == f"127.0.0.1:{ports.chaincode_server(1)}"
    )


def test_up_without_the_binaries_says_to_install_them(tmp_path: Path) -> None:
    with pytest.raises(FabricInstallError, match="run `carefed fabric install` first"):
        network.up(tmp_path, FabricHome(tmp_path / "nothing-installed"))


def _chaincode_server(tmp_path: Path, supervisor: Supervisor, name: str) -> tuple[int, dict[str, str]]:
    key, cert = TestCA().write_leaf(tmp_path / name, "chaincode")
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "CHAINCODE_ID": "carefed_1.0:test",
        "CHAINCODE_SERVER_ADDRESS": f"127.0.0.1:{port}",
        "CORE_TLS_CLIENT_KEY_PATH": str(key),
        "CORE_TLS_CLIENT_CERT_PATH": str(cert),
    }
    argv = [
        sys.executable,
        "-m",
        "fabric_network.fabric.chaincode_service",
        "--contract",
        "tests.fabric.shim_contract:ShimProbeContract",
    ]
    supervisor.wait_serving(supervisor.start(name, argv, env, port), timeout_s=30)
    return port, env


def test_supervisor_stops_exactly_the_processes_it_started(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "pids", tmp_path / "logs")
    port, _ = _chaincode_server(tmp_path, supervisor, "chaincode-hospital-a")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = supervisor.record("chaincode-hospital-a")
        assert record is not None and supervisor.is_running(record) and port_open(port)
        # A pid file whose pid now belongs to someone else (pid reuse) must not be signalled.
        (tmp_path / "pids" / "stale.json").write_text(
            json.dumps({"name": "stale", "pid": bystander.pid, "start_time": 1, "argv": [], "port": 1, "log": ""})
        )
        assert supervisor.stop("stale") is False
        assert supervisor.stop("chaincode-hospital-a") is True
        assert not port_open(port) and supervisor.records() == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_taken_port_is_refused_before_starting(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "pids", tmp_path / "logs")
    port, env = _chaincode_server(tmp_path, supervisor, "first")
    try:
        with pytest.raises(RuntimeError, match=f"port {port} is already in use"):
            supervisor.start("second", [sys.executable, "-c", "pass"], env, port)
    finally:
        supervisor.stop("first")


def test_a_free_base_port_has_its_whole_block_free() -> None:
    base = network.find_free_base_port(2)
    assert not any(port_open(p) for p in PortPlan(base, 2).all_ports())


def test_a_single_hospital_network_is_refused(tmp_path: Path) -> None:
    init_identities(tmp_path, ["hospital-a"])
    home = FabricHome(tmp_path / "home")
    for path in home.missing():  # pretend the binaries are installed: the check comes before any process
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    with pytest.raises(network.NetworkError, match="at least 2 hospitals"):
        network.up(tmp_path, home)


def test_healthz_reports_ok_or_the_failing_checks() -> None:
    """Fabric's operations endpoint answers 200 {"status":"OK"} or 503 with failed_checks (core/operations)."""
    import http.server
    import threading

    from fabric_network.fabric.processes import healthz

    class Operations(http.server.BaseHTTPRequestHandler):
        healthy = True

        def do_GET(self) -> None:
            body = (
                {"status": "OK"}
                if Operations.healthy
                else {"status": "Service Unavailable", "failed_checks": [{"component": "docker", "reason": "down"}]}
            )
            self.send_response(200 if Operations.healthy else 503)
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Operations)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert healthz(server.server_port) == "OK"
        Operations.healthy = False
        assert healthz(server.server_port) == "failing: docker: down"
    finally:
        server.shutdown()
    assert healthz(server.server_port).startswith("no answer")


def test_status_lists_each_started_process_with_its_health(tmp_path: Path) -> None:
    layout = Layout.of(tmp_path)
    supervisor = layout.supervisor()
    port, _ = _chaincode_server(tmp_path, supervisor, "chaincode-hospital-a")
    try:
        [entry] = network.status(tmp_path)
        assert (entry.name, entry.port, entry.health, entry.healthy) == ("chaincode-hospital-a", port, "serving", True)
    finally:
        network.down(tmp_path)
    assert network.status(tmp_path) == []
