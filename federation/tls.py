"""TLS material for the SuperLink: a consortium CA and a server certificate for the SuperLink's address.

SuperNodes open outbound connections to the SuperLink; with TLS they verify it against the consortium CA
(`--root-certificates`), so a hospital never talks to an impostor aggregator. The CA key stays in the
consortium's state directory; hospitals receive only the CA certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class SuperLinkTls:
    """Paths of the CA certificate (for clients) and the SuperLink's certificate and key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


LOCAL_HOSTS = ("127.0.0.1", "localhost")


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _covered(cert_path: Path, hosts: tuple[str, ...]) -> bool:
    """Whether the certificate's SANs name every host (a deployment that adds an address needs a new one)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    return all(_general_name(host) in names for host in hosts)


def _ca(directory: Path, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The consortium's SuperLink CA: loaded if it exists (hospitals already trust it), else created."""
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CareFed consortium"),
            x509.NameAttribute(NameOID.COMMON_NAME, "CareFed SuperLink CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def ensure_superlink_tls(directory: Path, hosts: tuple[str, ...] = LOCAL_HOSTS) -> SuperLinkTls:
    """A P-256 CA (created once) and a SuperLink server certificate whose SANs cover `hosts` and this machine's
    loopback; the server certificate is issued again, by the same CA, when a host is added."""
    tls = SuperLinkTls(directory / "ca.crt", directory / "superlink.crt", directory / "superlink.key")
    wanted = tuple(dict.fromkeys((*hosts, *LOCAL_HOSTS)))
    if (
        tls.ca_cert.exists()
        and tls.server_cert.exists()
        and tls.server_key.exists()
        and _covered(tls.server_cert, wanted)
    ):
        return tls
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_cert, ca_key = _ca(directory, now)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "carefed-superlink")]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_general_name(host) for host in wanted]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(tls.server_key, server_key)
    tls.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    return tls
