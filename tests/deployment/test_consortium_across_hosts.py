"""A consortium across hosts: each organisation on its own "machine" (a Linux network namespace with its own
address, processes and state directory), deployed with exactly the commands of docs/deployment.md, real Flower
and real Fabric over TCP with TLS between the machines (harness.deployment, harness.namespaces).

One deployment serves the module, in order: what each machine holds and sees; a full 3-round DP+HE run; a
SuperNode with an unregistered key refused; a hospital whose link is cut mid-run recorded as dropped while the
run completes; and a clean shutdown leaving no process behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fabric_network.contracts.common import opaque_id
from federation.layout import SECRET_CONTEXT_NAME
from harness import namespaces
from harness.deployment import CAREFED, NamespaceConsortium
from tests.fabric.live import require_fabric

pytestmark = pytest.mark.timeout(1800)

CONSORTIUM = "consortium"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamespaceConsortium]:
    require_fabric()
    if reason := namespaces.available():
        pytest.skip(reason)
    consortium = NamespaceConsortium(tmp_path_factory.mktemp("across-hosts"))
    try:
        consortium.deploy()
        yield consortium
    finally:
        consortium.stop()
        consortium.destroy()


def _ledger(deployment: NamespaceConsortium, org: str, function: str, *args: str) -> object:
    """Evaluate a contract function on ``org``'s machine through its own Fabric gateway connection."""
    script = (
        "import json, sys; from fabric_network.ledger import open_ledger\n"
        f"with open_ledger(backend='fabric', state_dir=sys.argv[1], org={org!r}) as ledger:\n"
        f"    print(json.dumps(ledger.evaluate({function!r}, *sys.argv[2:])))"
    )
    output = deployment.net.run(org, [sys.executable, "-c", script, str(deployment.state(org)), *args])
    return json.loads(output.strip().splitlines()[-1])


def _programs(deployment: NamespaceConsortium, org: str) -> set[str]:
    """The program names of every process living on ``org``'s machine (its network namespace)."""
    names = set()
    for pid in deployment.net.pids(org):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        names.add(Path(argv[0].decode()).name)
        if len(argv) > 1 and argv[0].decode().startswith(sys.executable.rsplit("/", 1)[0]):
            names.add(Path(argv[1].decode()).name)  # a console script run by the venv's Python
    return names


def test_each_organisation_runs_its_own_processes_and_sees_only_its_own_files(
    deployment: NamespaceConsortium,
) -> None:
    assert {"orderer", "flower-superlink"} <= _programs(deployment, CONSORTIUM)
    assert not {"peer", "flower-supernode"} & _programs(deployment, CONSORTIUM)
    for hospital in deployment.hospitals:
        assert {"peer", "flower-supernode"} <= _programs(deployment, hospital), hospital
        assert "orderer" not in _programs(deployment, hospital)
    for org, site in deployment.net.sites.items():
        assert site.state_dir.stat().st_mode & 0o777 == 0o700, org
    # From hospital-a's machine the other organisations' state directories are empty and read-only.
    for other in (CONSORTIUM, "hospital-b"):
        probe = f"ls -A {deployment.state(other)}; touch {deployment.state(other)}/x 2>/dev/null || echo refused"
        assert deployment.net.run("hospital-a", ["sh", "-c", probe]).split() == ["refused"]
    assert "crypto" in deployment.net.run("hospital-a", ["ls", str(deployment.state("hospital-a"))])
    status = json.loads(deployment.carefed("hospital-a", "node", "status", "--hospital", "hospital-a", "--json"))
    assert status["fabric"] == {"chaincode-hospital-a": "serving", "peer-hospital-a": "OK"}, status
    assert status["ledger_backend"] == "fabric" and status["worker_running"], status


def _listeners(deployment: NamespaceConsortium, org: str) -> set[str]:
    """host:port of every TCP listener on ``org``'s machine that is not on loopback (what other machines reach)."""
    output = deployment.net.run(org, ["ss", "-Hltn"])
    addresses = {line.split()[3] for line in output.splitlines() if line.strip()}
    return {a.replace("0.0.0.0:", "*:") for a in addresses if not a.startswith(("127.", "[::ffff:127.", "[::1]"))}


def test_only_tls_endpoints_face_the_network(deployment: NamespaceConsortium) -> None:
    """Each machine exposes exactly the ports of docs/deployment.md's firewall table, and each completes a TLS
    handshake (HTTP/2 ALPN, as gRPC dials) for another machine that trusts only the bundles' CA certificates."""
    assert _listeners(deployment, CONSORTIUM) == {"*:7050", "*:9092"}
    for hospital in deployment.hospitals:
        assert _listeners(deployment, hospital) == {"*:7051"}, hospital
    join = json.loads((deployment.state("hospital-b") / "inbox" / "join.bundle.json").read_text())
    endpoints = [(join["superlink"], join["superlink_ca_pem"]), (join["fabric"]["orderer"]["host"] + ":7050",
                 join["fabric"]["orderer"]["tlsca_cert_pem"])]  # fmt: skip
    endpoints += [(m["host"] + f":{m['port']}", m["tlsca_cert_pem"]) for m in join["fabric"]["members"]]
    script = (
        "import json, socket, ssl, sys\n"
        "for endpoint, ca in json.loads(sys.argv[1]):\n"
        "    host, port = endpoint.rsplit(':', 1)\n"
        "    context = ssl.create_default_context(cadata=ca); context.set_alpn_protocols(['h2'])\n"
        "    with socket.create_connection((host, int(port)), timeout=10) as raw:\n"
        "        with context.wrap_socket(raw, server_hostname=host) as tls:\n"
        "            print(endpoint, tls.version())\n"
    )
    output = deployment.net.run("hospital-b", [sys.executable, "-c", script, json.dumps(endpoints)])
    assert len([line for line in output.splitlines() if "TLSv1." in line]) == len(endpoints) == 5, output


def _private_keys(directory: Path) -> dict[bytes, Path]:
    """Every private key file under ``directory`` (PKCS#8 PEM or OpenSSH), by its public key (DER)."""
    from cryptography.hazmat.primitives import serialization

    found = {}
    key: Any
    for path in directory.rglob("*"):
        head = path.read_bytes()[:64] if path.is_file() else b""
        if b"OPENSSH PRIVATE KEY" in head:
            key = serialization.load_ssh_private_key(path.read_bytes(), None)
        elif b"PRIVATE KEY-----" in head:
            key = serialization.load_pem_private_key(path.read_bytes(), None)
        else:
            continue
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        found[public] = path
    return found


def test_the_consortium_holds_no_hospital_secret(deployment: NamespaceConsortium) -> None:
    """No secret HE context and no hospital's private key in the consortium's state directory (only its own)."""
    from privacy.he import SecretContext, load_context

    hospitals: dict[bytes, Path] = {}
    for hospital in deployment.hospitals:
        hospitals |= _private_keys(deployment.state(hospital))
    # per hospital: 2 CAs, peer, admin, user (MSP + TLS each), SuperNode key, HE transport key
    assert len(hospitals) == 3 * 10, sorted(str(p) for p in hospitals.values())
    own = _private_keys(deployment.state(CONSORTIUM))
    assert len(own) >= 10, "the consortium's own keys (CAs, orderer, admin, user, SuperLink TLS) were found"
    leaked = {str(own[k]): str(hospitals[k]) for k in own.keys() & hospitals.keys()}
    assert not leaked, leaked
    contexts = list(deployment.state(CONSORTIUM).rglob("*.ctx"))
    assert contexts, "the consortium holds the HE public context"
    for path in contexts:
        assert path.name != SECRET_CONTEXT_NAME and not isinstance(load_context(path.read_bytes()), SecretContext)


def test_a_three_round_dp_he_run_across_hosts(deployment: NamespaceConsortium) -> None:
    run_id = opaque_id("run")
    deployment.propose(run_id, rounds=3)
    output = deployment.run(run_id)
    assert f"run {run_id}: completed after 3 rounds" in output, output
    assert "model " in output and "replicated to hospital-a, hospital-b, hospital-c" in output, output
    results = deployment.results(run_id)
    assert (
        results["he"] is True
        and [sorted(r["participants"]) for r in results["rounds"]] == [list(deployment.hospitals)] * 3
    )
    for round_log in results["rounds"]:
        assert all(0 < eps <= 3.0 + 1e-6 for eps in round_log["epsilon_run"].values()), round_log["epsilon_run"]
    listed = deployment.carefed(CONSORTIUM, "consortium", "runs", "--backend", "fabric")
    assert run_id in listed and "completed (completed)" in listed, listed
    copies = json.loads(deployment.carefed("hospital-a", "node", "models", "--hospital", "hospital-a", "--json"))
    assert [(c["model_ids"], c["status"]) for c in copies["models"]] == [([f"{run_id}/model"], "ok")], copies
    rounds = _ledger(deployment, "hospital-b", "LineageContract:list_rounds", run_id)
    assert isinstance(rounds, list) and len(rounds) == 3, rounds
    assert _ledger(deployment, "hospital-c", "LineageContract:read_run", run_id)["status"] == "completed"  # type: ignore[index]


def test_a_supernode_with_an_unregistered_key_is_refused(deployment: NamespaceConsortium) -> None:
    """An impostor on hospital-a's machine, with the consortium's CA but a key nobody registered, gets no node id."""
    node = deployment.state("hospital-a") / "nodes" / "hospital-a"
    script = (
        "import sys, time; from pathlib import Path\n"
        "from federation.runtime import FlowerRuntime; from hospital_node.site import ensure_supernode_auth_key\n"
        "home = Path(sys.argv[1]); key = ensure_supernode_auth_key(home / 'keys')\n"
        "with FlowerRuntime(home / 'flwr') as runtime:\n"
        "    runtime.start_supernode('stranger', {'hospital': 'stranger'}, superlink=sys.argv[2],\n"
        "                            root_certificates=Path(sys.argv[3]), auth_key=key)\n"
        "    deadline = time.monotonic() + 90\n"
        "    while runtime.supernodes['stranger'].poll() is None and time.monotonic() < deadline: time.sleep(0.5)\n"
        "    print('exited' if runtime.supernodes['stranger'].poll() is not None else 'still running')\n"
    )
    stranger = node / "stranger"
    superlink = f"{deployment.address(CONSORTIUM)}:9092"
    verdict = deployment.net.run(
        "hospital-a", [sys.executable, "-c", script, str(stranger), superlink, str(node / "superlink-ca.pem")]
    )
    log = (stranger / "flwr" / "logs" / "supernode-stranger.log").read_bytes()
    assert b"SuperNode ID:" not in log, "an unregistered key got a node id"
    assert b"Failed to activate SuperNode" in log and "exited" in verdict, log[-600:]


def test_a_hospital_whose_link_is_cut_mid_run_is_dropped_and_the_run_completes(
    deployment: NamespaceConsortium,
) -> None:
    run_id = opaque_id("run")
    deployment.propose(run_id, rounds=2, round_timeout_s=60.0)
    argv = [CAREFED, "consortium", "run", run_id, "--state-dir", str(deployment.state(CONSORTIUM))]
    log = deployment.root / "logs" / f"{run_id}.log"
    run = deployment.net.spawn(CONSORTIUM, argv, log)
    deadline = time.monotonic() + 600
    while len(deployment.results(run_id)["rounds"]) < 1:
        assert run.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "round 1 did not finish"
        time.sleep(0.5)
    deployment.net.cut("hospital-c")
    try:
        assert run.wait(timeout=600) == 0, log.read_text()
    finally:
        deployment.net.restore("hospital-c")
        deployment.net.processes[CONSORTIUM].remove(run)
    rounds = deployment.results(run_id)["rounds"]
    assert sorted(rounds[0]["participants"]) == list(deployment.hospitals)
    assert sorted(rounds[1]["participants"]) == ["hospital-a", "hospital-b"], rounds[1]
    assert rounds[1]["dropped"] == ["hospital-c"], rounds[1]
    on_ledger = _ledger(deployment, "hospital-a", "LineageContract:read_round", run_id, "2")
    assert on_ledger["dropped"] == ["HospitalCMSP"], on_ledger  # type: ignore[index]
    assert f"run {run_id}: completed after 2 rounds" in log.read_text()


def test_sigterm_stops_every_process_of_every_organisation(deployment: NamespaceConsortium) -> None:
    """What systemd does at a stop: SIGTERM to `consortium up` and each `node start`; nothing is left running."""
    left = deployment.stop()
    assert left == {org: [] for org in left}, {
        org: [subprocess.run(["ps", "-o", "args=", "-p", str(p)], capture_output=True, text=True).stdout for p in pids]
        for org, pids in left.items()
    }
