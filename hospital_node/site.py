"""A hospital's own site in a consortium across hosts: its keys, its org bundle, joining, its Fabric peer.

`carefed org init --org hospital-a --host …` creates, on the hospital's machine only, its ledger identities
(fabric_network.identities.init_org), its SuperNode authentication key and its HE transport key, and writes
the **org bundle** — their public halves and the peer's address — for the consortium. `carefed node join`
takes the consortium's **join bundle**: the channel, the SuperLink's address and CA, the other hospitals'
transport keys; `carefed node start` then runs the hospital's Fabric peer and chaincode server beside its
SuperNode and worker (fabric_network.fabric.sites).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from fabric_network.fabric import sites
from fabric_network.identities import init_org
from federation.bundles import BUNDLE_SUFFIX, BundleError, HospitalBundle, JoinBundle, write_bundle
from federation.layout import keys_dir_for, node_dir_for
from hospital_node.config import NodeConfig
from hospital_node.he_keys import TRANSPORT_PUBLIC_NAME, ensure_transport_key

DEFAULT_PEER_PORT = 7051
SUPERNODE_AUTH_KEY_NAME = "supernode-auth"


def ensure_supernode_auth_key(keys_dir: Path) -> Path:
    """An EC P-256 key pair in OpenSSH format (created once): what `flwr supernode register` and
    `--auth-supernode-private-key` use. The private half never leaves ``keys_dir``."""
    private = keys_dir / SUPERNODE_AUTH_KEY_NAME
    if private.exists():
        return private
    keys_dir.mkdir(parents=True, exist_ok=True)
    keys_dir.chmod(0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    private.touch(mode=0o600)
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    private.with_suffix(".pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return private


def bundle_path(state_dir: Path, hospital: str) -> Path:
    return state_dir / f"{hospital}{BUNDLE_SUFFIX}"


def init_hospital(state_dir: Path, hospital: str, host: str, peer_port: int = DEFAULT_PEER_PORT) -> Path:
    """Create the hospital's identities and keys (each once) and write its org bundle; returns the bundle."""
    org = init_org(state_dir, hospital, "peer", [host])
    keys_dir = keys_dir_for(state_dir, hospital)
    auth_key = ensure_supernode_auth_key(keys_dir)
    transport_key = ensure_transport_key(keys_dir)
    bundle = HospitalBundle(
        org=hospital,
        fabric=sites.OrgBundle.of(org, host, peer_port).model_dump(),
        supernode_public_key=auth_key.with_suffix(".pub").read_text().strip(),
        he_transport_public_key=transport_key.read_text(),
    )
    return write_bundle(bundle_path(state_dir, hospital), bundle)


def members_dir(node_dir: Path) -> Path:
    """The other hospitals' HE transport public keys, ``<hospital>.pub`` each (`node he-key create`'s input)."""
    return node_dir / "members"


def join(state_dir: Path, hospital: str, bundle: JoinBundle) -> NodeConfig:
    """Join the consortium the bundle describes: keep its channel, point the node at its SuperLink over TLS with
    its CA and at the Fabric ledger, and keep the other hospitals' transport keys."""
    try:
        definition = sites.ChannelDefinition.model_validate(bundle.fabric)
    except ValidationError as exc:
        raise BundleError(f"BUNDLE: its fabric part is not a channel definition ({exc.errors()[0]['msg']})") from None
    node_dir = node_dir_for(state_dir, hospital).resolve()
    node = NodeConfig.load(node_dir)
    own = keys_dir_for(state_dir, hospital) / TRANSPORT_PUBLIC_NAME
    if bundle.he_transport_keys.get(hospital, "").strip() != own.read_text().strip():
        raise sites.SiteError(
            f"BUNDLE: the join bundle carries another HE transport key for {hospital} than {own}: it was made from "
            "another org bundle of this hospital"
        )
    sites.join(state_dir, definition)  # checked first, so a wrong bundle changes nothing
    ca = node_dir / "superlink-ca.pem"
    ca.write_text(bundle.superlink_ca_pem)
    others = members_dir(node_dir)
    others.mkdir(exist_ok=True)
    for name, pem in bundle.he_transport_keys.items():
        if name != hospital:
            (others / f"{name}.pub").write_text(pem)
    joined = node.model_copy(
        update={
            "superlink": bundle.superlink,
            "root_certificates": ca,
            "insecure": False,
            "ledger_backend": "fabric",
            "ledger_state_dir": state_dir.resolve(),
        }
    )
    joined.save()
    return joined
