"""One organisation's part of the consortium's Fabric network when every organisation has its own machine.

On one machine `carefed ledger init` + `carefed fabric up` play every organisation from one state directory
(network.py). Across hosts each organisation runs only its own part, from its own state directory, holding only
its own private keys:

* every org: ``carefed org init`` (identities.init_org) creates its CAs and identities; :class:`OrgBundle` is
  what it sends to the consortium — CA certificates, its node's TLS certificate and endpoint, nothing secret;
* the consortium: :func:`add_member` keeps each hospital's bundle, :func:`create_channel` builds the channel's
  genesis block from them (anchor peers at the hospitals' own addresses, the orderer at the consortium's) and
  :func:`start_consortium_orderer` runs the orderer; the :class:`ChannelDefinition` goes to every hospital in
  its join bundle;
* a hospital: :func:`join` checks that the definition names it with its own CA and keeps it;
  :func:`start_hospital_peer` runs its peer and chaincode server, joins the channel, installs and approves the
  chaincode, and — once every hospital approved (the lifecycle's MAJORITY of the application orgs counts the
  peerless consortium org too, so it takes all hospitals) — commits it; :func:`wait_ready` waits for that;
* :func:`connect_site` is how a site's ledger client reaches the channel: a hospital through its own peer, the
  consortium (which has no peer) through the first hospital peer that answers.

State under ``<state-dir>/fabric`` as on one machine (network.Layout), plus ``channel.json`` (the definition)
and, at the consortium, ``members/<hospital>.json`` (the bundles) and their public MSP folders.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fabric_network.fabric import network
from fabric_network.fabric.gateway import FabricError, FabricGateway, GatewayConnection
from fabric_network.fabric.install import FabricHome
from fabric_network.fabric.verify import OrdererTrust
from fabric_network.identities import (
    IdentityError,
    OrgMaterial,
    identity_of,
    load_org,
    msp_id_for,
    node_ou_config,
)


class SiteError(ValueError):
    """A bundle or site state that cannot be used; the message names the field or file and the fix."""


class OrgBundle(BaseModel):
    """An organisation's public part: what leaves its machine for the consortium (no private key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    msp_id: str
    kind: Literal["orderer", "peer"]
    host: str = Field(min_length=1, description="the address other organisations dial (its TLS certificate names it)")
    port: int = Field(ge=1, le=65535)
    ca_cert_pem: str
    tlsca_cert_pem: str
    tls_cert_pem: str  # its node's TLS server certificate (for the orderer: its Raft consenter identity)

    @classmethod
    def of(cls, org: OrgMaterial, host: str, port: int) -> OrgBundle:
        return cls(
            name=org.name,
            msp_id=org.msp_id,
            kind=org.kind,
            host=host,
            port=port,
            ca_cert_pem=Path(org.ca_cert).read_text(),
            tlsca_cert_pem=Path(org.tlsca_cert).read_text(),
            tls_cert_pem=(Path(org.node.tls_dir) / "server.crt").read_text(),
        )

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def write_public_msp(self, directory: Path) -> Path:
        """The org's channel MSP from its public certificates (what configtxgen reads) and its TLS certificate."""
        msp = directory / "msp"
        for sub, pem in (("cacerts", self.ca_cert_pem), ("tlscacerts", self.tlsca_cert_pem)):
            (msp / sub).mkdir(parents=True, exist_ok=True)
            (msp / sub / f"{sub[:-1]}.pem").write_text(pem)
        (msp / "config.yaml").write_text(node_ou_config("cacert.pem"))
        (directory / "tls.crt").write_text(self.tls_cert_pem)
        return directory


class ChannelDefinition(BaseModel):
    """The channel as the consortium created it: what a hospital needs to join and to reach the others."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    orderer: OrgBundle
    members: tuple[OrgBundle, ...]
    package_id: str
    genesis_block: str  # base64 of the channel's config block

    def member(self, name: str) -> OrgBundle:
        for member in self.members:
            if member.name == name:
                return member
        known = ", ".join(m.name for m in self.members)
        raise SiteError(
            f"the join bundle's channel has no member {name!r} (members: {known}); the consortium adds this "
            "organisation's bundle (`carefed consortium add-hospital`) before `consortium up`"
        )

    @property
    def hospital_msp_ids(self) -> list[str]:
        return [m.msp_id for m in self.members]


def org_bundle_from(data: dict[str, Any], source: str) -> OrgBundle:
    """An org bundle's ledger part, with an error naming where it came from and the field."""
    try:
        return OrgBundle.model_validate(data)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SiteError(f"{source}: not an organisation of `carefed org init` ({reasons})") from None


def has_channel(state_dir: Path) -> bool:
    """Whether this site has the channel: the consortium created it (`up`) or the hospital joined it (`join`)."""
    return network.Layout.of(state_dir).channel_definition.exists()


def channel_definition(state_dir: Path) -> ChannelDefinition:
    path = network.Layout.of(state_dir).channel_definition
    if not path.exists():
        raise SiteError(
            f"--state-dir: {state_dir} has no channel yet: the consortium runs `carefed consortium up`, a hospital "
            "`carefed node join BUNDLE`"
        )
    return ChannelDefinition.model_validate_json(path.read_text())


def _save_definition(layout: network.Layout, definition: ChannelDefinition) -> None:
    layout.config.mkdir(parents=True, exist_ok=True)
    layout.channel_block.write_bytes(base64.b64decode(definition.genesis_block))
    layout.package.write_bytes(network.ccaas_package(network.CHAINCODE_LABEL, network.connection_template()))
    layout.channel_definition.write_text(definition.model_dump_json(indent=2))


# --- the consortium -------------------------------------------------------------------------------------------


def _members_dir(layout: network.Layout) -> Path:
    return layout.root / "members"


def members(state_dir: Path) -> list[OrgBundle]:
    """The hospitals added so far, in the order they were added."""
    directory = _members_dir(network.Layout.of(state_dir))
    paths = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime_ns) if directory.is_dir() else []
    return [OrgBundle.model_validate_json(p.read_text()) for p in paths]


def add_member(state_dir: Path, bundle: OrgBundle) -> bool:
    """Keep a hospital's bundle for the channel; False if this very bundle was added already.

    The channel's genesis block names its members, so hospitals are added before `consortium up` creates it
    (adding one later is a channel configuration update, which CareFed does not do yet).
    """
    layout = network.Layout.of(state_dir)
    own = load_org(state_dir)
    if own.kind != "orderer":
        raise SiteError(f"--state-dir: {state_dir} is {own.name}'s; hospitals are added at the consortium")
    if bundle.kind != "peer" or bundle.msp_id != msp_id_for(bundle.name):
        raise SiteError(f"BUNDLE: {bundle.name} is not a hospital's bundle (kind {bundle.kind}, MSP {bundle.msp_id})")
    if layout.channel_definition.exists():
        raise SiteError(
            f"BUNDLE: the channel exists already (created by `consortium up`); {bundle.name} cannot be added to it "
            "(adding a hospital to a running channel is a configuration update CareFed does not do yet)"
        )
    path = _members_dir(layout) / f"{bundle.name}.json"
    if path.exists():
        if OrgBundle.model_validate_json(path.read_text()) == bundle:
            return False
        raise SiteError(
            f"BUNDLE: {bundle.name} was added already with other certificates or address; remove {path} if the "
            "hospital re-created its identities, then add the new bundle"
        )
    clash = [m.name for m in members(state_dir) if m.endpoint == bundle.endpoint]
    if clash:
        raise SiteError(f"BUNDLE: {bundle.name}'s peer {bundle.endpoint} is {clash[0]}'s address already")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(bundle.model_dump_json(indent=2))
    return True


def create_channel(state_dir: Path, home: FabricHome, host: str, port: int) -> ChannelDefinition:
    """The channel's genesis block from the consortium's own org and the hospitals' bundles (once)."""
    layout = network.Layout.of(state_dir)
    if layout.channel_definition.exists():
        definition = channel_definition(state_dir)
        if definition.orderer.endpoint != f"{host}:{port}":
            raise SiteError(
                f"--host/--orderer-port: the channel names the orderer at {definition.orderer.endpoint}; start it "
                "there (the hospitals' peers dial that address)"
            )
        return definition
    own = load_org(state_dir)
    hospitals = members(state_dir)
    if len(hospitals) < 2:
        raise SiteError(
            f"a consortium needs at least 2 hospitals before `consortium up` creates the channel ({len(hospitals)} "
            "added): `carefed consortium add-hospital BUNDLE` for each"
        )
    orderer = OrgBundle.of(own, host, port)
    channel_orgs = []
    for hospital in hospitals:
        directory = hospital.write_public_msp(_members_dir(layout) / hospital.name)
        msp, tls = str(directory / "msp"), str(directory / "tls.crt")
        channel_orgs.append(network.ChannelOrg(hospital.msp_id, msp, hospital.host, hospital.port, tls))
    orderer_tls = str(Path(own.node.tls_dir) / "server.crt")
    network.generate_channel_block(
        home, layout, network.ChannelOrg(own.msp_id, own.msp_dir, host, port, orderer_tls), channel_orgs
    )
    package = network.ccaas_package(network.CHAINCODE_LABEL, network.connection_template())
    definition = ChannelDefinition(
        orderer=orderer,
        members=tuple(hospitals),
        package_id=network.package_id(network.CHAINCODE_LABEL, package),
        genesis_block=base64.b64encode(layout.channel_block.read_bytes()).decode(),
    )
    _save_definition(layout, definition)
    return definition


def start_consortium_orderer(state_dir: Path, home: FabricHome) -> None:
    """Start the orderer at the address the channel names and join it to the channel."""
    home.require_installed()
    definition = channel_definition(state_dir)
    network.start_orderer(
        home, network.Layout.of(state_dir), load_org(state_dir), network.OrdererPorts(definition.orderer.port)
    )


# --- a hospital ------------------------------------------------------------------------------------------------


def join(state_dir: Path, definition: ChannelDefinition) -> OrgBundle:
    """Keep the consortium's channel definition at a hospital, once it is checked to name this hospital."""
    own = load_org(state_dir)
    entry = definition.member(own.name)
    if entry.ca_cert_pem.strip() != Path(own.ca_cert).read_text().strip():
        raise SiteError(
            f"BUNDLE: the channel names {own.name} with another CA certificate than the one in {state_dir}: the "
            "bundle was made from another `org init` of this hospital; send the consortium this state dir's bundle"
        )
    layout = network.Layout.of(state_dir)
    existing = layout.channel_definition
    if existing.exists() and channel_definition(state_dir).genesis_block != definition.genesis_block:
        raise SiteError(f"BUNDLE: {state_dir} joined another channel already (its {existing} differs)")
    _save_definition(layout, definition)
    return entry


def _lifecycle_json(home: FabricHome, admin: dict[str, str], *argv: str) -> dict[str, object] | None:
    """A `peer lifecycle chaincode` query's JSON answer, or None when the peer says there is nothing to show."""
    command = [str(home.binary("peer")), "lifecycle", "chaincode", *argv, "--output", "json"]
    result = subprocess.run(command, env=admin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    answer: dict[str, object] = json.loads(result.stdout or "{}")
    return answer


def start_hospital_peer(state_dir: Path, home: FabricHome) -> str:
    """Start this hospital's peer and chaincode server, join, install, approve and (when all approved) commit.

    Returns what is left to wait for ("" once the chaincode is committed), for the operator to see.
    """
    home.require_installed()
    definition = channel_definition(state_dir)
    own = load_org(state_dir)
    entry = definition.member(own.name)
    layout = network.Layout.of(state_dir)
    admin = network.start_peer(home, layout, own, entry.host, network.PeerPorts(entry.port), definition.package_id)
    orderer_ca = layout.config / "orderer-tlsca.pem"
    orderer_ca.write_text(definition.orderer.tlsca_cert_pem)
    orderer = network.orderer_tls_args(definition.orderer.endpoint, orderer_ca)
    args = network.definition_args(definition.hospital_msp_ids)
    name = ["--channelID", network.CHANNEL, "--name", network.CHAINCODE]
    if _lifecycle_json(home, admin, "querycommitted", *name) is not None:
        return ""
    if _lifecycle_json(home, admin, "queryapproved", *name) is None:
        network.approve(home, admin, orderer, args, definition.package_id)
    readiness = _lifecycle_json(home, admin, "checkcommitreadiness", *args) or {}
    approvals = readiness.get("approvals", {})
    waiting = [m.name for m in definition.members if not (isinstance(approvals, dict) and approvals.get(m.msp_id))]
    if waiting:
        return f"the chaincode definition waits for the approval of {', '.join(waiting)}"
    peers: dict[str, Path] = {}
    for member in definition.members:
        ca = layout.config / f"{member.name}-tlsca.pem"
        ca.write_text(member.tlsca_cert_pem)
        peers[member.endpoint] = ca
    try:
        network.commit(home, admin, orderer, args, peers)
    except network.NetworkError:
        if _lifecycle_json(home, admin, "querycommitted", *name) is None:  # not another hospital's commit first
            raise
    return ""


def wait_ready(state_dir: Path, timeout_s: float) -> None:
    """Until this site's gateway answers a chaincode read and sees endorsing peers of a majority of hospitals:
    what a submit needs. Fails naming what it saw when ``timeout_s`` passes."""
    definition = channel_definition(state_dir)
    wanted = set(definition.hospital_msp_ids)
    deadline = time.monotonic() + timeout_s
    problem = "not tried"
    while time.monotonic() < deadline:
        try:
            gateway = connect_site(state_dir)
            try:
                gateway.evaluate("org.hyperledger.fabric:get_metadata")
                seen = set(gateway.endorsers()) & wanted
            finally:
                gateway.close()
            if len(seen) >= network.majority(len(wanted)):
                return
            problem = f"sees endorsers of {sorted(seen)} only"
        except (FabricError, SiteError) as exc:
            problem = str(exc).splitlines()[0]
        time.sleep(1.0)
    raise SiteError(f"the ledger is not ready after {timeout_s:.0f} s: {problem}")


def _reachable(endpoint: str, timeout_s: float = 2.0) -> bool:
    host, port = endpoint.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def connect_site(state_dir: Path, role: Literal["client", "admin", "node"] = "client") -> FabricGateway:
    """A Gateway client of this site's org: through its own peer (a hospital) or, for the consortium (no peer),
    through the first hospital peer that accepts a connection — so one hospital's outage does not cut it off."""
    own = load_org(state_dir)
    definition = channel_definition(state_dir)
    if own.kind == "peer":
        candidates = [definition.member(own.name)]
    else:
        candidates = [m for m in definition.members if _reachable(m.endpoint)] or list(definition.members)
    via = candidates[0]
    connection = GatewayConnection(
        endpoint=via.endpoint,
        tls_root_cert_pem=via.tlsca_cert_pem.encode(),
        channel=network.CHANNEL,
        chaincode=network.CHAINCODE,
    )
    try:
        identity = identity_of(own, role)
    except IdentityError as exc:
        raise SiteError(str(exc)) from None
    return FabricGateway(connection, identity)


def orderer_trust(state_dir: Path) -> OrdererTrust:
    """Who may sign the channel's blocks, as the channel definition says."""
    orderer = channel_definition(state_dir).orderer
    return OrdererTrust(orderer.msp_id, orderer.ca_cert_pem.encode())
