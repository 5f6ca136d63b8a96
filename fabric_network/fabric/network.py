"""A native Hyperledger Fabric v3.1.5 network for the consortium: configuration, packaging, lifecycle.

``carefed fabric up`` follows the recipe of docs/fabric-facts.md §7 with the identities of ``carefed ledger init``:
one orderer (single-node Raft, channel participation API, short BatchTimeout), one peer per hospital (LevelDB,
TLS, gateway, gossip external endpoint and anchor peer so other orgs and discovery see it), the channel
joined through osnadmin and ``peer channel join``, CareFed's contracts packaged as chaincode-as-a-service,
installed on every peer, approved by every hospital and committed with a majority endorsement policy, one
Python chaincode server per hospital, and a Gateway read to prove it all works.

Every port is ``--base-port`` plus a fixed offset (:class:`PortPlan`), so two networks with base ports at
least :meth:`PortPlan.span` apart never collide. All state (ledgers, logs, pid files, generated config) lives
under ``<state-dir>/fabric``; ``up`` on an existing state directory restarts the processes on their ledgers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from fabric_network.fabric.gateway import FabricError, FabricGateway, GatewayConnection
from fabric_network.fabric.install import FabricHome
from fabric_network.fabric.processes import Supervisor
from fabric_network.identities import ConsortiumMaterial, OrgMaterial, load_consortium

CHANNEL = "carefed"
CHAINCODE = "carefed"
CHAINCODE_VERSION = "1.0"
CHAINCODE_LABEL = "carefed_1.0"
BATCH_TIMEOUT = "250ms"  # docs/fabric-facts.md §5: the default 2 s is ~2 s per isolated submit
DEFAULT_BASE_PORT = 17050
# Gossip timing for a consortium of a few peers (the defaults are sized for large networks).
# Why it matters (read in Fabric v3.1.5, core/peer/peer.go createChannel and core/peer/peer.go callbacks): when
# a peer joins the channel, its gossip dials every other org's anchor peer *before* the peer has registered the
# channel (``p.channels[cid]`` is set after ``GossipService.InitializeChannel``) and, for the first anchor,
# before the channel's TLS roots are added (the gossip config callback runs before ``updateTrustedRoots``).
# So the first handshake with each anchor peer fails ("Could not acquire policy manager for channel", "x509:
# certificate signed by unknown authority"), and the other side, not yet joined, refuses ours ("failed
# classifying identity"). Gossip then waits ``reconnectInterval`` — by default ``aliveExpirationTimeout``, 25 s —
# before dialling again, so for up to ~50 s no org can see another and every cross-org endorsement fails with
# "failed to find any endorsing peers for org(s)". Fabric's retry is the designed recovery; a 1 s interval makes
# it take one second instead of 25-50, and `up` returns only once discovery shows it done (``wait_endorsable``).
# A peer that dies leaves the gateway's view after ``aliveExpirationTimeout``; until then the gateway falls back
# to another layout of the policy when the dead peer refuses the connection. That timeout is kept at 15 s, not
# lower: a live peer starved of CPU on a loaded host must not be declared dead (with 2 hospitals, majority = both,
# a false death stops every submit), and a dead one costs only a refused connection meanwhile.
GOSSIP_TIMING = {
    "CORE_PEER_GOSSIP_RECONNECTINTERVAL": "1s",
    "CORE_PEER_GOSSIP_MAXCONNECTIONATTEMPTS": "600",
    "CORE_PEER_GOSSIP_ALIVETIMEINTERVAL": "1s",
    "CORE_PEER_GOSSIP_ALIVEEXPIRATIONTIMEOUT": "15s",
    "CORE_PEER_GOSSIP_PUBLISHSTATEINFOINTERVAL": "1s",
    "CORE_PEER_GOSSIP_REQUESTSTATEINFOINTERVAL": "1s",
}
# The gateway's wait for one endorsement (default 30 s) and for a connection (default 2 min). Across hosts a
# hospital whose link is cut leaves its established connections silently dead (no reset), and until gossip drops
# it from discovery (aliveExpirationTimeout above) the gateway may still pick it: each submit meanwhile waits
# this long before trying the layout without it. A contract call endorses in well under a second, so 10 s leaves
# a loaded host ample margin while a cut-off hospital costs a submit 10 s, not 30.
GATEWAY_TIMING = {
    "CORE_PEER_GATEWAY_ENDORSEMENTTIMEOUT": "10s",
    "CORE_PEER_GATEWAY_DIALTIMEOUT": "10s",
}
LOCALHOST = "127.0.0.1"
ANY_ADDRESS = "0.0.0.0"  # Fabric nodes serve other hosts; docs/deployment.md lists the ports to open


class NetworkError(RuntimeError):
    """``fabric up/status/down`` cannot proceed; the message says why and what to do."""


@dataclass(frozen=True)
class OrdererPorts:
    """An orderer's ports: its gRPC endpoint, then the channel participation (admin) and operations ports."""

    orderer: int

    @property
    def admin(self) -> int:
        return self.orderer + 1

    @property
    def operations(self) -> int:
        return self.orderer + 2


@dataclass(frozen=True)
class PeerPorts:
    """A peer's ports: its gRPC endpoint, then its chaincode listener, operations port and chaincode server."""

    peer: int

    @property
    def chaincode(self) -> int:
        """The peer's own chaincode listener (unused with CCaaS, but a peer binds it anyway)."""
        return self.peer + 1

    @property
    def operations(self) -> int:
        return self.peer + 2

    @property
    def chaincode_server(self) -> int:
        return self.peer + 3


@dataclass(frozen=True)
class PortPlan:
    """Every port of a network as ``base`` + offset: orderer first, then a block of 10 per hospital."""

    base: int
    hospitals: int

    ORDERER_BLOCK = 10
    PEER_BLOCK = 10

    @property
    def orderer(self) -> int:
        return self.base

    def orderer_ports(self) -> OrdererPorts:
        return OrdererPorts(self.base)

    def peer_ports(self, index: int) -> PeerPorts:
        return PeerPorts(self.base + self.ORDERER_BLOCK + self.PEER_BLOCK * index)

    def peer(self, index: int) -> int:
        return self.peer_ports(index).peer

    def chaincode_server(self, index: int) -> int:
        return self.peer_ports(index).chaincode_server

    def span(self) -> int:
        """How many consecutive ports from ``base`` this network may use."""
        return self.ORDERER_BLOCK + self.PEER_BLOCK * self.hospitals

    def all_ports(self) -> list[int]:
        orderer = self.orderer_ports()
        ports = [orderer.orderer, orderer.admin, orderer.operations]
        for i in range(self.hospitals):
            peer = self.peer_ports(i)
            ports += [peer.peer, peer.chaincode, peer.operations, peer.chaincode_server]
        return ports

    def validate(self) -> None:
        if not self.base >= 1024 or self.base + self.span() > 65535:
            raise NetworkError(
                f"--base-port {self.base}: must leave {self.span()} ports between 1024 and 65535 "
                f"(use e.g. {DEFAULT_BASE_PORT})"
            )


@dataclass(frozen=True)
class Layout:
    """Where one network's files live under ``<state-dir>/fabric``."""

    root: Path

    @classmethod
    def of(cls, state_dir: Path) -> Layout:
        return cls(state_dir.resolve() / "fabric")

    @property
    def manifest(self) -> Path:
        return self.root / "network.json"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def channel_block(self) -> Path:
        return self.root / "config" / f"{CHANNEL}.block"

    @property
    def channel_definition(self) -> Path:
        """Across hosts: the channel as the consortium created it (fabric/sites.py), at every site that has it."""
        return self.root / "channel.json"

    @property
    def package(self) -> Path:
        return self.root / "config" / f"{CHAINCODE_LABEL}.tar.gz"

    def data(self, node: str) -> Path:
        return self.root / "data" / node

    def supervisor(self) -> Supervisor:
        return Supervisor(self.root / "pids", self.root / "logs")


# --- configuration ---------------------------------------------------------------------------------------------


def majority(count: int) -> int:
    return count // 2 + 1


def endorsement_policy(hospital_msp_ids: Sequence[str]) -> str:
    """A signature policy needing peers of a majority of the hospitals."""
    members = ", ".join(f"'{msp_id}.peer'" for msp_id in hospital_msp_ids)
    return f"OutOf({majority(len(hospital_msp_ids))}, {members})"


@dataclass(frozen=True)
class ChannelOrg:
    """An organisation as the channel configuration names it: its MSP (public part only), the endpoint of its
    node (the orderer, or the hospital's anchor peer) and that node's TLS certificate (the Raft consenter's
    identity). On one machine it comes from the consortium's identities; across hosts from the orgs' bundles."""

    msp_id: str
    msp_dir: str
    host: str
    port: int
    tls_cert: str


def channel_orgs(consortium: ConsortiumMaterial, ports: PortPlan) -> tuple[ChannelOrg, list[ChannelOrg]]:
    """The orderer org and the hospitals of a one-machine consortium, on localhost at the plan's ports."""

    def channel_org(org: OrgMaterial, port: int) -> ChannelOrg:
        tls_cert = str(Path(org.node.tls_dir) / "server.crt")
        return ChannelOrg(org.msp_id, org.msp_dir, LOCALHOST, port, tls_cert)

    hospitals = [channel_org(h, ports.peer(i)) for i, h in enumerate(consortium.hospitals)]
    return channel_org(consortium.orderer, ports.orderer), hospitals


def _org_policies(msp_id: str, writer_role: str) -> dict[str, Any]:
    def signature(rule: str) -> dict[str, str]:
        return {"Type": "Signature", "Rule": rule}

    return {
        "Readers": signature(f"OR('{msp_id}.member')"),
        "Writers": signature(f"OR('{msp_id}.{writer_role}')"),
        "Admins": signature(f"OR('{msp_id}.admin')"),
    }


def configtx(orderer: ChannelOrg, hospitals: Sequence[ChannelOrg]) -> dict[str, Any]:
    """configtx.yaml for one channel with the V3_0 capability (no system channel, no global orderer addresses)."""
    orderer_org = {
        "Name": orderer.msp_id,
        "ID": orderer.msp_id,
        "MSPDir": orderer.msp_dir,
        "Policies": _org_policies(orderer.msp_id, "member"),
        "OrdererEndpoints": [f"{orderer.host}:{orderer.port}"],
    }
    # The consortium org submits too (runs, budgets, audit): it is an application org without a peer.
    consortium_policies = _org_policies(orderer.msp_id, "member")
    consortium_policies["Endorsement"] = {"Type": "Signature", "Rule": f"OR('{orderer.msp_id}.peer')"}
    consortium_app_org = {
        "Name": orderer.msp_id,
        "ID": orderer.msp_id,
        "MSPDir": orderer.msp_dir,
        "Policies": consortium_policies,
    }
    hospital_orgs = []
    for hospital in hospitals:
        policies = _org_policies(hospital.msp_id, "member")
        policies["Endorsement"] = {"Type": "Signature", "Rule": f"OR('{hospital.msp_id}.peer')"}
        hospital_orgs.append(
            {
                "Name": hospital.msp_id,
                "ID": hospital.msp_id,
                "MSPDir": hospital.msp_dir,
                "Policies": policies,
                "AnchorPeers": [{"Host": hospital.host, "Port": hospital.port}],
            }
        )

    def implicit(rule: str) -> dict[str, str]:
        return {"Type": "ImplicitMeta", "Rule": rule}

    profile = {
        "Policies": {
            "Readers": implicit("ANY Readers"),
            "Writers": implicit("ANY Writers"),
            "Admins": implicit("MAJORITY Admins"),
        },
        "Capabilities": {"V3_0": True},
        "Orderer": {
            "OrdererType": "etcdraft",
            "EtcdRaft": {
                "Consenters": [
                    {
                        "Host": orderer.host,
                        "Port": orderer.port,
                        "ClientTLSCert": orderer.tls_cert,
                        "ServerTLSCert": orderer.tls_cert,
                    }
                ],
                "Options": {"TickInterval": "500ms", "ElectionTick": 10, "HeartbeatTick": 1},
            },
            "BatchTimeout": BATCH_TIMEOUT,
            "BatchSize": {"MaxMessageCount": 500, "AbsoluteMaxBytes": "10 MB", "PreferredMaxBytes": "2 MB"},
            "Organizations": [orderer_org],
            "Policies": {
                "Readers": implicit("ANY Readers"),
                "Writers": implicit("ANY Writers"),
                "Admins": implicit("MAJORITY Admins"),
                "BlockValidation": implicit("ANY Writers"),
            },
            "Capabilities": {"V2_0": True},
        },
        "Application": {
            "Organizations": [*hospital_orgs, consortium_app_org],
            "Policies": {
                "Readers": implicit("ANY Readers"),
                "Writers": implicit("ANY Writers"),
                "Admins": implicit("MAJORITY Admins"),
                "LifecycleEndorsement": implicit("MAJORITY Endorsement"),
                "Endorsement": implicit("MAJORITY Endorsement"),
            },
            "Capabilities": {"V2_5": True},
        },
    }
    return {"Profiles": {"CareFedChannel": profile}}


def ccaas_package(label: str, connection: Mapping[str, Any]) -> bytes:
    """A chaincode-as-a-service package, byte-for-byte reproducible (fixed mtimes, owners and gzip header).

    Fabric accepts only two regular files named exactly ``metadata.json`` and ``code.tar.gz``
    (``core/chaincode/persistence/chaincode_package.go``); the package id is ``label:sha256(package)``, so a
    timestamp inside would change the id on every ``up``.
    """
    code = _tar_gz({"connection.json": json.dumps(connection, sort_keys=True).encode()})
    metadata = json.dumps({"type": "ccaas", "label": label}, sort_keys=True).encode()
    return _tar_gz({"metadata.json": metadata, "code.tar.gz": code})


def _tar_gz(files: Mapping[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def package_id(label: str, package: bytes) -> str:
    return f"{label}:{hashlib.sha256(package).hexdigest()}"


def connection_template() -> dict[str, Any]:
    """connection.json with ccaas_builder template fields, filled per peer from CHAINCODE_AS_A_SERVICE_BUILDER_CONFIG.

    One package (one package id) then serves every hospital's own chaincode server.
    """
    return {"address": "{{.address}}", "dial_timeout": "10s", "tls_required": True, "root_cert": "{{.root_cert}}"}


# --- process environments ----------------------------------------------------------------------------------------


def _base_env(home: FabricHome) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORE_", "ORDERER_", "FABRIC_"))}
    env["FABRIC_CFG_PATH"] = str(home.config)
    return env


def orderer_env(home: FabricHome, data: Path, orderer: OrgMaterial, ports: OrdererPorts) -> dict[str, str]:
    """The orderer serves its channel on every interface (across hosts the peers dial its host's address);
    the channel participation and operations endpoints stay on loopback, for the consortium's own tools."""
    tls = Path(orderer.node.tls_dir)
    return _base_env(home) | {
        "ORDERER_GENERAL_LISTENADDRESS": ANY_ADDRESS,
        "ORDERER_GENERAL_LISTENPORT": str(ports.orderer),
        "ORDERER_GENERAL_LOCALMSPID": orderer.msp_id,
        "ORDERER_GENERAL_LOCALMSPDIR": orderer.node.msp_dir,
        "ORDERER_GENERAL_TLS_ENABLED": "true",
        "ORDERER_GENERAL_TLS_PRIVATEKEY": str(tls / "server.key"),
        "ORDERER_GENERAL_TLS_CERTIFICATE": str(tls / "server.crt"),
        "ORDERER_GENERAL_TLS_ROOTCAS": f"[{tls / 'ca.crt'}]",
        "ORDERER_GENERAL_CLUSTER_CLIENTCERTIFICATE": str(tls / "server.crt"),
        "ORDERER_GENERAL_CLUSTER_CLIENTPRIVATEKEY": str(tls / "server.key"),
        "ORDERER_GENERAL_CLUSTER_ROOTCAS": f"[{tls / 'ca.crt'}]",
        "ORDERER_GENERAL_BOOTSTRAPMETHOD": "none",
        "ORDERER_CHANNELPARTICIPATION_ENABLED": "true",
        "ORDERER_FILELEDGER_LOCATION": str(data / "ledger"),
        "ORDERER_CONSENSUS_WALDIR": str(data / "etcdraft" / "wal"),
        "ORDERER_CONSENSUS_SNAPDIR": str(data / "etcdraft" / "snapshot"),
        "ORDERER_OPERATIONS_LISTENADDRESS": f"{LOCALHOST}:{ports.operations}",
        "ORDERER_ADMIN_LISTENADDRESS": f"{LOCALHOST}:{ports.admin}",
        "ORDERER_ADMIN_TLS_ENABLED": "false",
        "ORDERER_METRICS_PROVIDER": "prometheus",  # /metrics tells `up` when Raft has its leader
    }


def peer_env(home: FabricHome, data: Path, hospital: OrgMaterial, host: str, ports: PeerPorts) -> dict[str, str]:
    """A hospital's peer: it listens on every interface and tells the others (gossip, discovery) ``host``;
    its chaincode server and operations endpoint stay on loopback."""
    tls = Path(hospital.node.tls_dir)
    address = f"{host}:{ports.peer}"
    builder_config = {
        "address": f"{LOCALHOST}:{ports.chaincode_server}",
        "root_cert": (tls / "ca.crt").read_text(),
    }
    builder = [
        {
            "name": "ccaas",
            "path": str(home.ccaas_builder),
            "propagateEnvironment": ["CHAINCODE_AS_A_SERVICE_BUILDER_CONFIG"],
        }
    ]
    return _base_env(home) | {
        "CORE_PEER_ID": hospital.node.name,
        "CORE_PEER_ADDRESS": address,
        "CORE_PEER_LISTENADDRESS": f"{ANY_ADDRESS}:{ports.peer}",
        "CORE_PEER_CHAINCODEADDRESS": f"{LOCALHOST}:{ports.chaincode}",
        "CORE_PEER_CHAINCODELISTENADDRESS": f"{LOCALHOST}:{ports.chaincode}",
        "CORE_PEER_GOSSIP_BOOTSTRAP": address,
        "CORE_PEER_GOSSIP_EXTERNALENDPOINT": address,
        **GOSSIP_TIMING,
        **GATEWAY_TIMING,
        "CORE_PEER_LOCALMSPID": hospital.msp_id,
        "CORE_PEER_MSPCONFIGPATH": hospital.node.msp_dir,
        "CORE_PEER_TLS_ENABLED": "true",
        "CORE_PEER_TLS_CERT_FILE": str(tls / "server.crt"),
        "CORE_PEER_TLS_KEY_FILE": str(tls / "server.key"),
        "CORE_PEER_TLS_ROOTCERT_FILE": str(tls / "ca.crt"),
        "CORE_PEER_FILESYSTEMPATH": str(data / "production"),
        "CORE_LEDGER_SNAPSHOTS_ROOTDIR": str(data / "snapshots"),
        "CORE_LEDGER_STATE_STATEDATABASE": "goleveldb",
        "CORE_OPERATIONS_LISTENADDRESS": f"{LOCALHOST}:{ports.operations}",
        "CORE_METRICS_PROVIDER": "disabled",
        "CORE_PEER_GATEWAY_ENABLED": "true",
        "CORE_VM_ENDPOINT": "",
        "CORE_CHAINCODE_EXTERNALBUILDERS": json.dumps(builder),  # JSON is YAML, and viper parses it strictly
        "CHAINCODE_AS_A_SERVICE_BUILDER_CONFIG": json.dumps(builder_config),
    }


def admin_env(home: FabricHome, hospital: OrgMaterial, peer_address: str) -> dict[str, str]:
    """The environment of the `peer` CLI acting as a hospital's admin against its own peer."""
    return _base_env(home) | {
        "CORE_PEER_LOCALMSPID": hospital.msp_id,
        "CORE_PEER_MSPCONFIGPATH": hospital.admin.msp_dir,
        "CORE_PEER_ADDRESS": peer_address,
        "CORE_PEER_TLS_ENABLED": "true",
        "CORE_PEER_TLS_ROOTCERT_FILE": str(Path(hospital.node.tls_dir) / "ca.crt"),
    }


def chaincode_env(hospital: OrgMaterial, ports: PeerPorts, package: str) -> dict[str, str]:
    tls = Path(hospital.node.tls_dir)
    return {k: v for k, v in os.environ.items() if not k.startswith("CORE_")} | {
        "CHAINCODE_ID": package,
        "CHAINCODE_SERVER_ADDRESS": f"{LOCALHOST}:{ports.chaincode_server}",
        "CORE_TLS_CLIENT_KEY_PATH": str(tls / "server.key"),
        "CORE_TLS_CLIENT_CERT_PATH": str(tls / "server.crt"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }


# --- lifecycle ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What `up` created, so that `up` again restarts the same network and `down` knows it."""

    hospitals: list[str]
    base_port: int
    package_id: str


def _run(argv: Sequence[str], env: Mapping[str, str], what: str) -> str:
    """Run a Fabric CLI; its stdout (the CLIs log to stderr, which goes into the error on failure)."""
    result = subprocess.run(list(argv), env=dict(env), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetworkError(f"{what} failed:\n{(result.stderr or result.stdout).strip()}")
    return result.stdout


def _retry(argv: Sequence[str], env: Mapping[str, str], what: str, attempts: int = 20, delay_s: float = 1.0) -> str:
    """Peers learn about each other, the channel and new installs through gossip: retry until they have."""
    for attempt in range(attempts):
        try:
            return _run(argv, env, what)
        except NetworkError:
            if attempt == attempts - 1:
                raise
            time.sleep(delay_s)
    raise AssertionError("unreachable")


def find_free_base_port(hospitals: int, low: int = 20000, high: int = 60000) -> int:
    """A base port whose whole block is free now (random, so parallel test sessions rarely even try the same)."""
    import random

    from fabric_network.fabric.processes import port_open

    for _ in range(200):
        plan = PortPlan(random.randrange(low, high, 100), hospitals)
        if not any(port_open(p) for p in plan.all_ports()):
            return plan.base
    raise NetworkError(f"no free block of {PortPlan(low, hospitals).span()} ports between {low} and {high}")


def orderer_tls_args(orderer_address: str, orderer_tls_ca: Path) -> list[str]:
    """The `peer` CLI's arguments to reach the orderer over TLS."""
    return ["-o", orderer_address, "--tls", "--cafile", str(orderer_tls_ca)]


def start_orderer(home: FabricHome, layout: Layout, orderer: OrgMaterial, ports: OrdererPorts) -> None:
    """Start the orderer, join it to the channel of ``layout.channel_block`` (once) and wait for its Raft leader."""
    supervisor = layout.supervisor()
    record = supervisor.start(
        "orderer",
        [str(home.binary("orderer"))],
        orderer_env(home, layout.data("orderer"), orderer, ports),
        ports.orderer,
        ports.operations,
    )
    supervisor.wait_serving(record, ports.admin)
    admin = f"{LOCALHOST}:{ports.admin}"
    osnadmin = str(home.binary("osnadmin"))
    channels = _run([osnadmin, "channel", "list", "-o", admin], _base_env(home), "osnadmin channel list")
    if f'"{CHANNEL}"' not in channels:
        _run(
            [
                osnadmin,
                "channel",
                "join",
                "--channelID",
                CHANNEL,
                "--config-block",
                str(layout.channel_block),
                "-o",
                admin,
            ],
            _base_env(home),
            "osnadmin channel join",
        )
    wait_raft_leader(ports.operations, Path(record.log))


def start_peer(
    home: FabricHome, layout: Layout, hospital: OrgMaterial, host: str, ports: PeerPorts, package: str
) -> dict[str, str]:
    """Start a hospital's peer, join it to the channel, install the chaincode package and start the hospital's
    chaincode server (each step once: a restart finds them done); the `peer` CLI environment of its admin."""
    supervisor = layout.supervisor()
    peer = str(home.binary("peer"))
    record = supervisor.start(
        f"peer-{hospital.name}",
        [peer, "node", "start"],
        peer_env(home, layout.data(hospital.node.name), hospital, host, ports),
        ports.peer,
        ports.operations,
    )
    supervisor.wait_serving(record)
    admin = admin_env(home, hospital, f"{host}:{ports.peer}")
    if CHANNEL not in _run([peer, "channel", "list"], admin, f"peer channel list ({hospital.name})").split():
        _retry([peer, "channel", "join", "-b", str(layout.channel_block)], admin, f"join {hospital.name}")
    if package not in _run([peer, "lifecycle", "chaincode", "queryinstalled"], admin, "queryinstalled"):
        _run([peer, "lifecycle", "chaincode", "install", str(layout.package)], admin, f"install {hospital.name}")
    record = supervisor.start(
        f"chaincode-{hospital.name}",
        [sys.executable, "-m", "fabric_network.fabric.chaincode_service"],
        chaincode_env(hospital, ports, package),
        ports.chaincode_server,
    )
    supervisor.wait_serving(record)
    return admin


def definition_args(hospital_msp_ids: Sequence[str]) -> list[str]:
    """CareFed's chaincode definition as the lifecycle commands take it (majority endorsement of hospitals)."""
    return [
        "--channelID", CHANNEL, "--name", CHAINCODE, "--version", CHAINCODE_VERSION, "--sequence", "1",
        "--signature-policy", endorsement_policy(hospital_msp_ids),
    ]  # fmt: skip


def approve(
    home: FabricHome, admin: Mapping[str, str], orderer: list[str], definition: list[str], package: str
) -> None:
    """Approve the chaincode definition for the admin's org (gossip may not have spread the channel yet: retry)."""
    peer = str(home.binary("peer"))
    argv = [peer, "lifecycle", "chaincode", "approveformyorg", *orderer, *definition, "--package-id", package]
    _retry(argv, admin, f"approve for {admin['CORE_PEER_LOCALMSPID']}")


def commit(
    home: FabricHome, admin: Mapping[str, str], orderer: list[str], definition: list[str], peers: Mapping[str, Path]
) -> None:
    """Commit the approved definition, endorsed by ``peers`` (address → TLS CA file), at least a majority."""
    targets: list[str] = []
    for address, tls_ca in peers.items():
        targets += ["--peerAddresses", address, "--tlsRootCertFiles", str(tls_ca)]
    argv = [str(home.binary("peer")), "lifecycle", "chaincode", "commit", *orderer, *definition, *targets]
    _retry(argv, admin, "commit the chaincode definition")


def up(state_dir: Path, home: FabricHome, hospitals: int | None = None, base_port: int | None = None) -> Manifest:
    """Create (first time) or restart (afterwards) the network in ``state_dir``; returns its manifest."""
    home.require_installed()
    layout = Layout.of(state_dir)
    consortium = load_consortium(state_dir)
    previous = Manifest(**json.loads(layout.manifest.read_text())) if layout.manifest.exists() else None
    names = [h.name for h in consortium.hospitals]
    if hospitals is not None and hospitals != len(names):
        raise NetworkError(
            f"--hospitals {hospitals}: the identities in {state_dir} are for {len(names)} hospitals "
            f"({', '.join(names)}); run `carefed ledger init --hospitals {hospitals}` in a new --state-dir"
        )
    if previous and base_port is not None and base_port != previous.base_port:
        raise NetworkError(
            f"--base-port {base_port}: this network was created on base port {previous.base_port}; "
            "its channel configuration names those ports (omit --base-port, or use a new --state-dir)"
        )
    if len(names) < 2:
        raise NetworkError(
            f"--hospitals: a Fabric consortium needs at least 2 hospitals (the identities in {state_dir} have "
            f"{len(names)}); the majority endorsement policy and chaincode approval assume it"
        )
    ports = PortPlan(previous.base_port if previous else base_port or DEFAULT_BASE_PORT, len(names))
    ports.validate()
    layout.config.mkdir(parents=True, exist_ok=True)

    package = ccaas_package(CHAINCODE_LABEL, connection_template())
    layout.package.write_bytes(package)
    manifest = Manifest(names, ports.base, package_id(CHAINCODE_LABEL, package))
    first_time = not layout.channel_block.exists()
    if first_time:
        generate_channel_block(home, layout, *channel_orgs(consortium, ports))
    start_orderer(home, layout, consortium.orderer, ports.orderer_ports())
    admins = [
        start_peer(home, layout, hospital, LOCALHOST, ports.peer_ports(index), manifest.package_id)
        for index, hospital in enumerate(consortium.hospitals)
    ]
    if first_time or previous is None:
        orderer = orderer_tls_args(f"{LOCALHOST}:{ports.orderer}", Path(consortium.orderer.node.tls_dir) / "ca.crt")
        definition = definition_args([h.msp_id for h in consortium.hospitals])
        for admin in admins:
            approve(home, admin, orderer, definition, manifest.package_id)
        peers = {
            f"{LOCALHOST}:{ports.peer(i)}": Path(h.node.tls_dir) / "ca.crt" for i, h in enumerate(consortium.hospitals)
        }
        commit(home, admins[0], orderer, definition, peers)
    layout.manifest.write_text(json.dumps(asdict(manifest), indent=2))
    wait_endorsable(state_dir)
    return manifest


def generate_channel_block(
    home: FabricHome, layout: Layout, orderer: ChannelOrg, hospitals: Sequence[ChannelOrg]
) -> None:
    """configtx.yaml and the channel's genesis block (configtxgen) in ``layout.config``."""
    layout.config.mkdir(parents=True, exist_ok=True)
    (layout.config / "configtx.yaml").write_text(yaml.safe_dump(configtx(orderer, hospitals), sort_keys=False))
    _run(
        [
            str(home.binary("configtxgen")), "-configPath", str(layout.config), "-profile", "CareFedChannel",
            "-channelID", CHANNEL, "-outputBlock", str(layout.channel_block),
        ],
        _base_env(home),
        "configtxgen",
    )  # fmt: skip


def connect(
    state_dir: Path,
    hospital: str | None = None,
    role: Literal["client", "admin", "node"] = "client",
    identity_org: str | None = None,
) -> FabricGateway:
    """A Gateway client on a hospital's peer (the first hospital by default), signing as that hospital's
    identity in ``role`` — or as ``identity_org``'s (e.g. the consortium org, which has no peer of its own)."""
    from fabric_network.identities import identity_for

    layout = Layout.of(state_dir)
    if not layout.manifest.exists():
        raise NetworkError(f"--state-dir {state_dir}: no Fabric network here; run `carefed fabric up` first")
    manifest = Manifest(**json.loads(layout.manifest.read_text()))
    consortium = load_consortium(state_dir)
    org = consortium.org(hospital or manifest.hospitals[0])
    index = manifest.hospitals.index(org.name)
    ports = PortPlan(manifest.base_port, len(manifest.hospitals))
    connection = GatewayConnection(
        endpoint=f"{LOCALHOST}:{ports.peer(index)}",
        tls_root_cert_pem=Path(org.tlsca_cert).read_bytes(),
        channel=CHANNEL,
        chaincode=CHAINCODE,
    )
    return FabricGateway(connection, identity_for(consortium, identity_org or org.name, role))


RAFT_LEADER = re.compile(rf'^consensus_etcdraft_is_leader{{channel="{CHANNEL}"}} 1$', re.MULTILINE)


def wait_raft_leader(operations_port: int, log: Path, timeout_s: float = 60.0) -> None:
    """Until the orderer's Raft on the channel has a leader (itself: it is the one consenter).

    A restarted orderer replays its write-ahead log and elects a leader only after its election ticks; a submit
    before that fails with "no orderers could successfully process transaction". The orderer's Prometheus gauge
    `consensus_etcdraft_is_leader` says when it is ready, so `up` waits for it rather than callers retrying.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://{LOCALHOST}:{operations_port}/metrics", timeout=2) as response:
                metrics = response.read().decode()
        except OSError:
            metrics = ""
        if RAFT_LEADER.search(metrics):
            return
        if time.monotonic() > deadline:
            raise NetworkError(f"the orderer has no Raft leader on {CHANNEL} after {timeout_s:.0f} s; see {log}")
        time.sleep(0.2)


def wait_endorsable(state_dir: Path, timeout_s: float = 120.0) -> None:
    """Until every hospital's gateway can endorse with every hospital: its chaincode answers a read through
    that hospital's peer, and that peer's discovery service lists an endorsing peer of every hospital.

    This is the condition a submit needs (the gateway plans endorsements from exactly this discovery view), so
    `up` ends when it holds — or fails naming which hospital does not see which, instead of returning a network
    whose first cross-org submit fails.
    """
    consortium = load_consortium(state_dir)
    wanted = {h.msp_id for h in consortium.hospitals}
    deadline = time.monotonic() + timeout_s
    gateways = {h.name: connect(state_dir, h.name) for h in consortium.hospitals}
    pending = dict(gateways)
    problems: dict[str, str] = {}
    try:
        while pending:
            for name, gateway in list(pending.items()):
                try:
                    gateway.evaluate("org.hyperledger.fabric:get_metadata")
                    seen = set(gateway.endorsers())
                except FabricError as exc:
                    problems[name] = str(exc)
                    continue
                if seen >= wanted:
                    del pending[name]
                    problems.pop(name, None)
                else:
                    problems[name] = f"sees endorsers of {sorted(seen)}, not of {sorted(wanted - seen)}"
            if pending and time.monotonic() > deadline:
                detail = "; ".join(f"{name}: {problems.get(name, 'not ready')}" for name in pending)
                raise NetworkError(
                    f"the network started but cross-org endorsement did not form within {timeout_s:.0f}s ({detail}); "
                    f"see the peer logs in {Layout.of(state_dir).root / 'logs'}"
                )
            if pending:
                time.sleep(0.25)
    finally:
        for gateway in gateways.values():
            gateway.close()


def down(state_dir: Path, purge: bool = False) -> list[str]:
    """Stop exactly the processes `up` started (chaincode servers, peers, orderer); ``purge`` deletes the state."""
    layout = Layout.of(state_dir)
    supervisor = layout.supervisor()
    order = sorted(supervisor.records(), key=lambda r: (not r.name.startswith("chaincode"), r.name == "orderer"))
    stopped = [record.name for record in order if supervisor.stop(record.name)]
    if purge and layout.root.exists():
        shutil.rmtree(layout.root)
    return stopped


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int
    port: int
    running: bool
    serving: bool
    health: str  # /healthz of peers and the orderer; "serving"/"down" for the chaincode servers

    @property
    def healthy(self) -> bool:
        return self.serving and self.health in ("OK", "serving")


def status(state_dir: Path) -> list[ProcessStatus]:
    from fabric_network.fabric.processes import healthz, port_open

    supervisor = Layout.of(state_dir).supervisor()
    result = []
    for record in supervisor.records():
        running = supervisor.is_running(record)
        serving = running and port_open(record.port)
        if not serving:
            health = "down"
        elif record.health_port is not None:
            health = healthz(record.health_port)
        else:
            health = "serving"
        result.append(ProcessStatus(record.name, record.pid, record.port, running, serving, health))
    return result
