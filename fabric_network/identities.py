"""Consortium identities: CAs, MSP directories and TLS material, made with `cryptography` in cryptogen's layout.

Why not cryptogen itself: the embedded ledger (the default) needs identities without any Fabric binary, and
the real Fabric network (`carefed fabric up`) must start from the *same* material, so that a hospital's
signing identity is one and the same on both backends. The tree below is what `cryptogen generate` writes
(Fabric v2/v3, NodeOUs on), so peers and the orderer start from it unchanged.

Layout under ``<state-dir>/crypto/`` (``consortium.json`` there lists every path below, per org)::

    ordererOrganizations/consortium.carefed.local/           MSP id ConsortiumMSP
        ca/ca.consortium.carefed.local-cert.pem, ca/priv_sk            signing CA (cert + key)
        tlsca/tlsca.consortium.carefed.local-cert.pem, tlsca/priv_sk   TLS CA
        msp/{cacerts,tlscacerts,config.yaml}                           the org's (channel) MSP
        orderers/orderer.consortium.carefed.local/
            msp/{cacerts,tlscacerts,signcerts,keystore/priv_sk,config.yaml}   OU orderer
            tls/{ca.crt,server.crt,server.key}
        users/Admin@consortium.carefed.local/{msp,tls}                  OU admin
        users/User1@consortium.carefed.local/{msp,tls}                  OU client (the consortium's services)
    peerOrganizations/hospital-a.carefed.local/               MSP id HospitalAMSP
        ca/, tlsca/, msp/                                               as above
        peers/peer0.hospital-a.carefed.local/{msp,tls}                  OU peer
        users/Admin@hospital-a.carefed.local/{msp,tls}                  OU admin
        users/User1@hospital-a.carefed.local/{msp,tls}                  OU client (the hospital node's identity)

Names: a hospital ``hospital-a`` gets the domain ``hospital-a.carefed.local`` and the MSP id ``HospitalAMSP``
(each dash-separated word capitalised, plus ``MSP``); the consortium (orderer) org is ``ConsortiumMSP``.
``--hospitals 3`` means ``hospital-a``, ``hospital-b``, ``hospital-c``.

Certificates: ECDSA P-256 keys (PKCS#8 PEM, file mode 0600), SHA-256 signatures normalised to low S (Fabric's
MSP re-encodes a high-S certificate signature, after which a Raft consenter's certificate no longer equals the
node's own TLS certificate), subject key identifiers, authority key identifiers. Every TLS certificate carries
the SANs of its host name, its short name, ``localhost`` and ``127.0.0.1`` (cryptogen only adds the first two;
the Fabric gateway dials whatever endpoint the channel reports), plus the host names and addresses given to
``carefed org init --host``. ``msp/config.yaml`` enables NodeOUs with the
OU identifiers client, peer, admin and orderer against the org's CA certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CONSORTIUM_ORG = "consortium"
DOMAIN_SUFFIX = "carefed.local"
CERT_VALIDITY = dt.timedelta(days=3650)
MANIFEST_NAME = "consortium.json"
ORG_MANIFEST_NAME = "org.json"  # one organisation's own identities (`carefed org init`, across hosts)
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HOSPITAL_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

NodeOU = Literal["client", "peer", "admin", "orderer"]


class IdentityError(ValueError):
    """Bad identity input or material: the message names the field or file and the fix."""


def hospital_names(spec: str | int | Sequence[str]) -> list[str]:
    """Hospital names from ``--hospitals``: a count (``3`` → hospital-a..c) or comma-separated names."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        count = int(spec)
        if not 1 <= count <= 26:
            raise IdentityError(f"--hospitals: a count must be between 1 and 26, got {count}")
        return [f"hospital-{chr(ord('a') + i)}" for i in range(count)]
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else [n.strip() for n in spec]
    names = [n for n in names if n]
    if not names:
        raise IdentityError("--hospitals: give a count or comma-separated names, e.g. 'hospital-a,hospital-b'")
    for name in names:
        if not _HOSPITAL_NAME.fullmatch(name) or len(name) > 40 or name == CONSORTIUM_ORG:
            raise IdentityError(
                f"--hospitals: {name!r} is not a valid org name; use lowercase letters, digits and single dashes "
                f"(at most 40 characters, not {CONSORTIUM_ORG!r}), e.g. 'hospital-a'"
            )
    if len(set(names)) != len(names):
        raise IdentityError(f"--hospitals: names must be distinct, got {names}")
    return names


def msp_id_for(org_name: str) -> str:
    """``hospital-a`` → ``HospitalAMSP``: Fabric MSP ids are conventionally CamelCase plus ``MSP``."""
    return "".join(part.capitalize() for part in org_name.split("-")) + "MSP"


@dataclass(frozen=True)
class IdentityPaths:
    """Where one identity's material lives (absolute paths as strings, so the manifest is plain JSON)."""

    name: str  # e.g. "User1@hospital-a.carefed.local" or "peer0.hospital-a.carefed.local"
    role: NodeOU
    msp_dir: str
    tls_dir: str


@dataclass(frozen=True)
class OrgMaterial:
    """One organisation of the consortium and its identities."""

    name: str
    msp_id: str
    domain: str
    kind: Literal["orderer", "peer"]
    org_dir: str
    msp_dir: str
    ca_cert: str
    tlsca_cert: str
    node: IdentityPaths  # the orderer or the org's peer0
    admin: IdentityPaths
    users: tuple[IdentityPaths, ...]  # client identities (User1@…)


@dataclass(frozen=True)
class ConsortiumMaterial:
    """The whole consortium as written by :func:`init_identities` (also its ``consortium.json`` manifest)."""

    crypto_dir: str
    orderer: OrgMaterial
    hospitals: tuple[OrgMaterial, ...]

    def org(self, name_or_msp_id: str) -> OrgMaterial:
        """The org by name (``hospital-a``) or MSP id (``HospitalAMSP``)."""
        for org in (self.orderer, *self.hospitals):
            if name_or_msp_id in (org.name, org.msp_id):
                return org
        known = ", ".join(o.name for o in (self.orderer, *self.hospitals))
        raise IdentityError(f"org {name_or_msp_id!r} is not in this consortium (known: {known})")


# --- keys and signatures -------------------------------------------------------------------------------------


def to_low_s(signature: bytes) -> bytes:
    """Normalise a DER ECDSA P-256 signature to s ≤ n/2, as Fabric requires ("Invalid S")."""
    r, s = decode_dss_signature(signature)
    if s > _P256_ORDER // 2:
        s = _P256_ORDER - s
    return encode_dss_signature(r, s)


def is_low_s(signature: bytes) -> bool:
    """Whether a DER ECDSA signature already has s ≤ n/2."""
    return decode_dss_signature(signature)[1] <= _P256_ORDER // 2


def sign(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256 over SHA-256, low S, DER: the signature Fabric accepts on proposals, envelopes and blocks."""
    return to_low_s(private_key.sign(data, ec.ECDSA(hashes.SHA256())))


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class _Authority:
    """A CA's certificate and key while the tree is being written."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(domain: str, common_name: str, org_unit: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, domain)]
    if org_unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, org_unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _sign_low_s(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """Sign until the certificate's own signature is low-S (half of all ECDSA signatures are; see module doc)."""
    while True:
        cert = builder.sign(key, hashes.SHA256())
        if is_low_s(cert.signature):
            return cert


def _validity(builder: x509.CertificateBuilder, now: dt.datetime) -> x509.CertificateBuilder:
    return builder.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + CERT_VALIDITY)


def _make_ca(domain: str, common_name: str, now: dt.datetime) -> _Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(domain, common_name)
    builder = (
        _validity(x509.CertificateBuilder(), now)
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return _Authority(_sign_low_s(builder, key), key)


def _issue(
    ca: _Authority,
    domain: str,
    common_name: str,
    now: dt.datetime,
    *,
    org_unit: str | None,
    tls_hosts: Sequence[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An end-entity certificate: an MSP signing cert (org_unit set) or a TLS cert (tls_hosts set)."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _validity(x509.CertificateBuilder(), now)
        .subject_name(_name(domain, common_name, org_unit))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=bool(tls_hosts),
                data_encipherment=False,
                key_agreement=bool(tls_hosts),
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    if tls_hosts:
        sans: list[x509.GeneralName] = []
        for host in dict.fromkeys((*tls_hosts, "localhost", "127.0.0.1")):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return _sign_low_s(builder, ca.key), key


def node_ou_config(ca_cert_file: str) -> str:
    """``msp/config.yaml`` as cryptogen writes it with ``EnableNodeOUs: true``."""
    lines = ["NodeOUs:", "  Enable: true"]
    for field, ou in (("Client", "client"), ("Peer", "peer"), ("Admin", "admin"), ("Orderer", "orderer")):
        lines += [
            f"  {field}OUIdentifier:",
            f"    Certificate: cacerts/{ca_cert_file}",
            f"    OrganizationalUnitIdentifier: {ou}",
        ]
    return "\n".join(lines) + "\n"


def _write_msp_base(msp_dir: Path, domain: str, ca: _Authority, tlsca: _Authority) -> None:
    """cacerts, tlscacerts and config.yaml: shared by the org MSP and every local MSP."""
    ca_file = f"ca.{domain}-cert.pem"
    _write_cert(msp_dir / "cacerts" / ca_file, ca.cert)
    _write_cert(msp_dir / "tlscacerts" / f"tlsca.{domain}-cert.pem", tlsca.cert)
    (msp_dir / "config.yaml").write_text(node_ou_config(ca_file))


def _write_identity(
    base: Path,
    name: str,
    role: NodeOU,
    domain: str,
    ca: _Authority,
    tlsca: _Authority,
    now: dt.datetime,
    tls_hosts: Sequence[str],
) -> IdentityPaths:
    """One identity's local MSP (signcerts, keystore/priv_sk, …) and its TLS directory."""
    msp_dir, tls_dir = base / "msp", base / "tls"
    _write_msp_base(msp_dir, domain, ca, tlsca)
    cert, key = _issue(ca, domain, name, now, org_unit=role)
    _write_cert(msp_dir / "signcerts" / f"{name}-cert.pem", cert)
    _write_private_key(msp_dir / "keystore" / "priv_sk", key)
    tls_cert, tls_key = _issue(tlsca, domain, name, now, org_unit=None, tls_hosts=tls_hosts)
    is_server = role in ("peer", "orderer")
    _write_cert(tls_dir / "ca.crt", tlsca.cert)
    _write_cert(tls_dir / ("server.crt" if is_server else "client.crt"), tls_cert)
    _write_private_key(tls_dir / ("server.key" if is_server else "client.key"), tls_key)
    return IdentityPaths(name=name, role=role, msp_dir=str(msp_dir), tls_dir=str(tls_dir))


def _write_org(
    crypto_dir: Path, name: str, kind: Literal["orderer", "peer"], now: dt.datetime, hosts: Sequence[str] = ()
) -> OrgMaterial:
    """One organisation's CAs and identities; ``hosts`` are the further names and addresses its node's TLS
    certificate must carry (the host others dial across the network)."""
    domain = f"{name}.{DOMAIN_SUFFIX}"
    org_dir = crypto_dir / ("ordererOrganizations" if kind == "orderer" else "peerOrganizations") / domain
    ca = _make_ca(domain, f"ca.{domain}", now)
    tlsca = _make_ca(domain, f"tlsca.{domain}", now)
    _write_cert(org_dir / "ca" / f"ca.{domain}-cert.pem", ca.cert)
    _write_private_key(org_dir / "ca" / "priv_sk", ca.key)
    _write_cert(org_dir / "tlsca" / f"tlsca.{domain}-cert.pem", tlsca.cert)
    _write_private_key(org_dir / "tlsca" / "priv_sk", tlsca.key)
    _write_msp_base(org_dir / "msp", domain, ca, tlsca)

    node_name = f"orderer.{domain}" if kind == "orderer" else f"peer0.{domain}"
    node_dir = org_dir / ("orderers" if kind == "orderer" else "peers") / node_name
    short_name = node_name.split(".", 1)[0]
    node = _write_identity(node_dir, node_name, kind, domain, ca, tlsca, now, (node_name, short_name, *hosts))
    admin_name = f"Admin@{domain}"
    admin = _write_identity(org_dir / "users" / admin_name, admin_name, "admin", domain, ca, tlsca, now, (admin_name,))
    user_name = f"User1@{domain}"
    users = (_write_identity(org_dir / "users" / user_name, user_name, "client", domain, ca, tlsca, now, (user_name,)),)
    return OrgMaterial(
        name=name,
        msp_id=msp_id_for(name),
        domain=domain,
        kind=kind,
        org_dir=str(org_dir),
        msp_dir=str(org_dir / "msp"),
        ca_cert=str(org_dir / "ca" / f"ca.{domain}-cert.pem"),
        tlsca_cert=str(org_dir / "tlsca" / f"tlsca.{domain}-cert.pem"),
        node=node,
        admin=admin,
        users=users,
    )


def crypto_dir_of(state_dir: Path) -> Path:
    """Where the consortium's material lives inside a CareFed state directory."""
    return Path(state_dir).resolve() / "crypto"


Material = TypeVar("Material", ConsortiumMaterial, OrgMaterial)


def _create_once(
    crypto_dir: Path,
    manifest_name: str,
    existing: Callable[[], Material],
    create: Callable[[dt.datetime], Material],
    occupied: str,
) -> Material:
    """Identities are created once: with a manifest, ``existing()`` returns (and checks) what is there; a crypto
    directory with other content is refused (``occupied`` says why); the manifest is written last, so it marks
    a complete init. Refusing to regenerate keeps every signature already on the ledger verifiable."""
    manifest = crypto_dir / manifest_name
    if manifest.exists():
        return existing()
    if crypto_dir.exists() and any(crypto_dir.iterdir()):
        raise IdentityError(occupied)
    material = create(dt.datetime.now(dt.UTC))
    manifest.write_text(json.dumps(asdict(material), indent=2) + "\n")
    return material


def init_identities(state_dir: Path, hospitals: Sequence[str]) -> ConsortiumMaterial:
    """Create the consortium's CAs and identities once on one machine; an existing consortium is returned.

    Asking for hospitals that the existing consortium does not have is an error naming them (adding an org is a
    channel update, not a re-init).
    """
    crypto_dir = crypto_dir_of(state_dir)

    def existing() -> ConsortiumMaterial:
        material = load_consortium(state_dir)
        missing = sorted(set(hospitals) - {h.name for h in material.hospitals})
        if missing:
            raise IdentityError(
                f"--hospitals: {crypto_dir} already holds a consortium without {missing}; "
                "use a new --state-dir (identities are never regenerated in place)"
            )
        return material

    def create(now: dt.datetime) -> ConsortiumMaterial:
        orderer = _write_org(crypto_dir, CONSORTIUM_ORG, "orderer", now)
        orgs = tuple(_write_org(crypto_dir, name, "peer", now) for name in hospitals)
        return ConsortiumMaterial(crypto_dir=str(crypto_dir), orderer=orderer, hospitals=orgs)

    occupied = f"--state-dir: {crypto_dir} exists without {MANIFEST_NAME} (an interrupted init?); remove it"
    return _create_once(crypto_dir, MANIFEST_NAME, existing, create, occupied)


def init_org(state_dir: Path, name: str, kind: Literal["orderer", "peer"], hosts: Sequence[str]) -> OrgMaterial:
    """One organisation's own CAs and identities on its own machine (``carefed org init``): across hosts no
    command ever writes another organisation's key. An existing org is returned; another org's name is an error."""
    crypto_dir = crypto_dir_of(state_dir)

    def existing() -> OrgMaterial:
        material = load_org(state_dir)
        if material.name != name:
            raise IdentityError(
                f"--org: {crypto_dir} already holds the identities of {material.name!r}; one state directory "
                "is one organisation (use another --state-dir)"
            )
        return material

    occupied = (
        f"--state-dir: {crypto_dir} holds other identities (a one-machine `carefed ledger init`, or an "
        f"interrupted init); use an empty --state-dir for {name}"
    )
    return _create_once(
        crypto_dir, ORG_MANIFEST_NAME, existing, lambda now: _write_org(crypto_dir, name, kind, now, hosts), occupied
    )


def load_org(state_dir: Path) -> OrgMaterial:
    """The organisation ``carefed org init`` created in this state directory."""
    manifest = crypto_dir_of(state_dir) / ORG_MANIFEST_NAME
    if not manifest.exists():
        raise IdentityError(f"--state-dir: no organisation in {manifest.parent}; run `carefed org init` first")
    return _org_from_json(json.loads(manifest.read_text()))


def is_org_site(state_dir: Path) -> bool:
    """Whether this state directory holds one organisation (across hosts) rather than a one-machine consortium."""
    return (crypto_dir_of(state_dir) / ORG_MANIFEST_NAME).exists()


def _identity_from_json(data: dict[str, str]) -> IdentityPaths:
    return IdentityPaths(name=data["name"], role=data["role"], msp_dir=data["msp_dir"], tls_dir=data["tls_dir"])  # type: ignore[arg-type]


def _org_from_json(data: dict[str, object]) -> OrgMaterial:
    return OrgMaterial(
        name=str(data["name"]),
        msp_id=str(data["msp_id"]),
        domain=str(data["domain"]),
        kind="orderer" if data["kind"] == "orderer" else "peer",
        org_dir=str(data["org_dir"]),
        msp_dir=str(data["msp_dir"]),
        ca_cert=str(data["ca_cert"]),
        tlsca_cert=str(data["tlsca_cert"]),
        node=_identity_from_json(data["node"]),  # type: ignore[arg-type]
        admin=_identity_from_json(data["admin"]),  # type: ignore[arg-type]
        users=tuple(_identity_from_json(u) for u in data["users"]),  # type: ignore[attr-defined]
    )


def load_consortium(state_dir: Path) -> ConsortiumMaterial:
    """The consortium written by ``carefed ledger init`` in this state directory."""
    manifest = crypto_dir_of(state_dir) / MANIFEST_NAME
    if not manifest.exists():
        raise IdentityError(
            f"--state-dir: no identities in {manifest.parent}; run `carefed ledger init --state-dir {state_dir}`"
        )
    data = json.loads(manifest.read_text())
    return ConsortiumMaterial(
        crypto_dir=data["crypto_dir"],
        orderer=_org_from_json(data["orderer"]),
        hospitals=tuple(_org_from_json(h) for h in data["hospitals"]),
    )


@dataclass(frozen=True)
class SigningIdentity:
    """An MSP identity that can sign: what a transaction's creator and a block's orderer signature come from."""

    msp_id: str
    name: str
    role: NodeOU
    cert_pem: bytes
    private_key: ec.EllipticCurvePrivateKey

    def sign(self, data: bytes) -> bytes:
        """Low-S ECDSA P-256/SHA-256 signature, DER-encoded."""
        return sign(self.private_key, data)


def load_signing_identity(msp_id: str, paths: IdentityPaths) -> SigningIdentity:
    """Read ``signcerts/*`` and ``keystore/priv_sk`` of one local MSP directory."""
    msp_dir = Path(paths.msp_dir)
    certs = sorted((msp_dir / "signcerts").glob("*.pem"))
    key_file = msp_dir / "keystore" / "priv_sk"
    if not certs or not key_file.exists():
        raise IdentityError(f"identity {paths.name}: {msp_dir} lacks signcerts/*.pem or keystore/priv_sk")
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"identity {paths.name}: {key_file} is not an ECDSA key")
    return SigningIdentity(
        msp_id=msp_id, name=paths.name, role=paths.role, cert_pem=certs[0].read_bytes(), private_key=key
    )


def identity_for(
    consortium: ConsortiumMaterial, org: str, role: Literal["client", "admin", "node"] = "client"
) -> SigningIdentity:
    """The signing identity of ``org`` (name or MSP id) in a role: its User1 client, its Admin or its node."""
    return identity_of(consortium.org(org), role)


def identity_of(material: OrgMaterial, role: Literal["client", "admin", "node"] = "client") -> SigningIdentity:
    """One organisation's signing identity in a role: its User1 client, its Admin or its node."""
    if role == "admin":
        paths = material.admin
    elif role == "node":
        paths = material.node
    else:
        paths = material.users[0]
    return load_signing_identity(material.msp_id, paths)
