"""Signing an export manifest with a consortium identity, and checking it offline against the CA certificates.

The exporting identity is an ordinary consortium identity (``fabric_network.identities.SigningIdentity``, as
written by ``carefed ledger init``), so an outsider needs only the consortium's CA certificates — no ledger,
no network — to decide whether a bundle was signed by a member of the consortium.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fabric_network.identities import load_consortium


class SigningError(ValueError):
    """Missing or unusable certificate material; the message names the file and the fix."""


def consortium_ca_certificates(state_dir: Path) -> list[x509.Certificate]:
    """The signing CA certificate of every org of the consortium in this state directory."""
    consortium = load_consortium(state_dir)
    return [
        x509.load_pem_x509_certificate(Path(org.ca_cert).read_bytes())
        for org in (consortium.orderer, *consortium.hospitals)
    ]


def org_ca_pem(state_dir: Path, org: str) -> bytes:
    """The signing CA certificate (PEM) of one org of the consortium: what issued that org's identities."""
    return Path(load_consortium(state_dir).org(org).ca_cert).read_bytes()


def ca_fingerprint(certificate: x509.Certificate) -> str:
    """The SHA-256 fingerprint of a CA certificate (of its DER encoding), as 64 lower-case hex digits.

    What a regulator pins: `carefed audit export` prints it, `carefed audit verify --ca-fingerprint` checks the
    CA certificate a bundle carries against it, so a bundle verifies on a machine that has nothing else.
    """
    return certificate.fingerprint(hashes.SHA256()).hex()


def normalise_fingerprint(text: str) -> str:
    """Accept ``ab12…``, ``AB:12:…`` or ``sha256:ab12…``; refuse anything that is not 32 bytes of hex."""
    digits = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise SigningError(
            f"--ca-fingerprint {text!r}: give the 64 hex digits of the SHA-256 fingerprint `carefed audit export` "
            "printed (colons allowed)"
        )
    return digits


def pinned_ca(ca_pem: str, fingerprint: str) -> x509.Certificate:
    """The CA certificate a bundle carries, if and only if it is the pinned one; otherwise say why not."""
    try:
        certificate = x509.load_pem_x509_certificate(ca_pem.encode())
    except ValueError:
        raise SigningError("the bundle carries no readable CA certificate (signer.ca_certificate)") from None
    found = ca_fingerprint(certificate)
    if found != normalise_fingerprint(fingerprint):
        raise SigningError(
            f"the bundle was signed under CA {subject_name(certificate)!r} with fingerprint {found}, not under the "
            f"pinned consortium CA {normalise_fingerprint(fingerprint)}"
        )
    return certificate


def certificate_subject(certificate_pem: bytes) -> str:
    return subject_name(x509.load_pem_x509_certificate(certificate_pem))


def _ec_public_key(certificate: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SigningError(f"certificate {subject_name(certificate)!r} does not hold an EC public key")
    return key


def subject_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else certificate.subject.rfc4514_string()


def load_ca_certificates(paths: list[Path]) -> list[x509.Certificate]:
    """CA certificates from PEM files or directories of them (``*.pem``, ``*.crt``, searched recursively)."""
    found: list[x509.Certificate] = []
    for path in paths:
        files = [path] if path.is_file() else sorted([*path.rglob("*.pem"), *path.rglob("*.crt")])
        if not files:
            raise SigningError(f"--ca {path}: no certificate files there; give the consortium's CA certificate(s)")
        for file in files:
            found.extend(x509.load_pem_x509_certificates(file.read_bytes()))
    return found


def signature_problems(
    certificate_pem: str, data: bytes, signature: bytes, cas: list[x509.Certificate], at: dt.datetime
) -> list[str]:
    """Why the signature or its certificate cannot be trusted ([] when both are good).

    The certificate must be issued directly by one of the consortium CAs (Fabric's MSPs issue identities from
    the org CA) and valid at the signing time; the signature must verify under its key.
    """
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError as exc:
        return [f"the signer's certificate does not parse: {exc}"]
    problems = []
    issuers = [ca for ca in cas if ca.subject == certificate.issuer]
    chained = False
    for ca in issuers:
        try:
            certificate.verify_directly_issued_by(ca)
            chained = True
            break
        except (ValueError, TypeError, InvalidSignature):
            continue
    if not chained:
        problems.append(
            f"the signer's certificate ({subject_name(certificate)}, issued by {certificate.issuer.rfc4514_string()}) "
            "was not issued by any of the given consortium CA certificates"
        )
    if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
        problems.append(f"the signer's certificate was not valid at the export time {at.isoformat()}")
    try:
        _ec_public_key(certificate).verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        problems.append("the manifest signature does not verify under the signer's certificate")
    except ValueError as exc:  # SigningError, or a certificate whose key no longer parses
        problems.append(f"the signer's certificate holds no usable public key ({exc})")
    return problems
