"""The consortium's own site across hosts: its identities, the hospitals it admits, the join bundle.

`carefed org init --org consortium --host …` creates the consortium's orderer org (its own keys only).
`carefed consortium add-hospital BUNDLE` admits a hospital from its public org bundle: its ledger org becomes a
channel member, its SuperNode key is registered with the SuperLink, its HE transport key is passed on to the
others. `carefed consortium up` creates the channel (once), runs the orderer and the SuperLink, and writes the
**join bundle** every hospital needs. Nothing here ever holds a hospital's private key.
"""

from __future__ import annotations

from pathlib import Path

from fabric_network.fabric import sites
from fabric_network.identities import CONSORTIUM_ORG, init_org
from federation.bundles import JOIN_BUNDLE_NAME, HospitalBundle, JoinBundle, write_bundle
from federation.runtime import FlowerRuntime, RuntimeFailure
from federation.tls import SuperLinkTls

DEFAULT_ORDERER_PORT = 7050


def members_dir(state_dir: Path) -> Path:
    """The admitted hospitals' SuperNode and HE transport public keys."""
    return state_dir / "consortium" / "members"


def join_bundle_path(state_dir: Path) -> Path:
    return state_dir / JOIN_BUNDLE_NAME


def init_consortium(state_dir: Path, host: str) -> None:
    """The consortium's orderer org, its TLS certificate naming ``host`` (created once)."""
    init_org(state_dir, CONSORTIUM_ORG, "orderer", [host])


def add_hospital(state_dir: Path, bundle: HospitalBundle) -> bool:
    """Admit a hospital from its org bundle; False if this very bundle was admitted already."""
    org_bundle = sites.org_bundle_from(bundle.fabric, "BUNDLE: fabric")
    if org_bundle.name != bundle.org:
        raise sites.SiteError(f"BUNDLE: org {bundle.org!r} carries the ledger organisation of {org_bundle.name!r}")
    added = sites.add_member(state_dir, org_bundle)
    keys = members_dir(state_dir)
    keys.mkdir(parents=True, exist_ok=True)
    (keys / f"{bundle.org}.supernode.pub").write_text(bundle.supernode_public_key + "\n")
    (keys / f"{bundle.org}.he-transport.pub").write_text(bundle.he_transport_public_key)
    return added


def register_supernodes(state_dir: Path, runtime: FlowerRuntime) -> list[str]:
    """Register every admitted hospital's SuperNode key with the running SuperLink (idempotent: its database
    keeps them across restarts, and a key it knows already is fine); the hospitals registered now."""
    registered = []
    for key in sorted(members_dir(state_dir).glob("*.supernode.pub")):
        try:
            runtime.register_supernode(key)
        except RuntimeFailure as exc:
            if "already" not in str(exc).lower():
                raise
            continue
        registered.append(key.name.removesuffix(".supernode.pub"))
    return registered


def write_join_bundle(state_dir: Path, superlink: str, tls: SuperLinkTls) -> Path:
    """The join bundle: the channel definition, the SuperLink's address and CA, the hospitals' transport keys."""
    definition = sites.channel_definition(state_dir)
    transport = {
        path.name.removesuffix(".he-transport.pub"): path.read_text()
        for path in sorted(members_dir(state_dir).glob("*.he-transport.pub"))
    }
    bundle = JoinBundle(
        superlink=superlink,
        superlink_ca_pem=tls.ca_cert.read_text(),
        fabric=definition.model_dump(),
        he_transport_keys=transport,
    )
    return write_bundle(join_bundle_path(state_dir), bundle)
