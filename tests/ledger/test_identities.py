"""`carefed ledger init`: CAs and MSP identities in cryptogen's layout, usable by real Fabric peers."""

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from carefed.cli import app
from fabric_network.identities import (
    IdentityError,
    hospital_names,
    identity_for,
    init_identities,
    is_low_s,
    load_consortium,
    msp_id_for,
)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def consortium_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state_dir = tmp_path_factory.mktemp("state")
    result = CliRunner().invoke(app, ["ledger", "init", "--state-dir", str(state_dir), "--hospitals", "2"])
    assert result.exit_code == 0, result.output
    return state_dir


def test_names_and_msp_ids() -> None:
    assert hospital_names("3") == ["hospital-a", "hospital-b", "hospital-c"]
    assert hospital_names("north-general,st-mary") == ["north-general", "st-mary"]
    assert msp_id_for("hospital-a") == "HospitalAMSP"
    for bad in ("0", "Hospital_A", "a,a", "consortium", ""):
        with pytest.raises(IdentityError, match="--hospitals"):
            hospital_names(bad)


def test_cryptogen_layout_and_node_ous(consortium_dir: Path) -> None:
    crypto = consortium_dir / "crypto"
    org = crypto / "peerOrganizations" / "hospital-a.carefed.local"
    peer = org / "peers" / "peer0.hospital-a.carefed.local"
    for rel in (
        "msp/cacerts/ca.hospital-a.carefed.local-cert.pem",
        "msp/tlscacerts/tlsca.hospital-a.carefed.local-cert.pem",
        "msp/signcerts/peer0.hospital-a.carefed.local-cert.pem",
        "msp/keystore/priv_sk",
        "msp/config.yaml",
        "tls/ca.crt",
        "tls/server.crt",
        "tls/server.key",
    ):
        assert (peer / rel).is_file(), rel
    assert (org / "users" / "Admin@hospital-a.carefed.local" / "tls" / "client.crt").is_file()
    assert (org / "users" / "User1@hospital-a.carefed.local" / "msp" / "signcerts").is_dir()
    orderer = (
        crypto / "ordererOrganizations" / "consortium.carefed.local" / "orderers" / "orderer.consortium.carefed.local"
    )
    assert (orderer / "tls" / "server.crt").is_file()
    config = (org / "msp" / "config.yaml").read_text()
    assert "Enable: true" in config
    for ou in ("client", "peer", "admin", "orderer"):
        assert f"OrganizationalUnitIdentifier: {ou}" in config
    assert oct((peer / "msp" / "keystore" / "priv_sk").stat().st_mode & 0o777) == "0o600"


def test_certificates_chain_carry_roles_sans_and_low_s(consortium_dir: Path) -> None:
    org = consortium_dir / "crypto" / "peerOrganizations" / "hospital-b.carefed.local"
    ca = _cert(org / "ca" / "ca.hospital-b.carefed.local-cert.pem")
    tlsca = _cert(org / "tlsca" / "tlsca.hospital-b.carefed.local-cert.pem")
    peer = org / "peers" / "peer0.hospital-b.carefed.local"
    signcert = _cert(peer / "msp" / "signcerts" / "peer0.hospital-b.carefed.local-cert.pem")
    tls = _cert(peer / "tls" / "server.crt")
    signcert.verify_directly_issued_by(ca)
    tls.verify_directly_issued_by(tlsca)
    with pytest.raises(ValueError):
        tls.verify_directly_issued_by(ca)
    ou = signcert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [a.value for a in ou] == ["peer"]
    sans = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "peer0.hospital-b.carefed.local"} <= set(sans.get_values_for_type(x509.DNSName))
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    for cert in (ca, tlsca, signcert, tls):
        assert is_low_s(cert.signature)


def test_signing_identity_signs_low_s_verifiably(consortium_dir: Path) -> None:
    identity = identity_for(load_consortium(consortium_dir), "HospitalAMSP")
    assert identity.msp_id == "HospitalAMSP" and identity.role == "client"
    cert = x509.load_pem_x509_certificate(identity.cert_pem)
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    for i in range(20):
        signature = identity.sign(b"payload %d" % i)
        assert is_low_s(signature)
        public_key.verify(signature, b"payload %d" % i, ec.ECDSA(hashes.SHA256()))


def test_init_never_regenerates(consortium_dir: Path) -> None:
    before = (consortium_dir / "crypto" / "consortium.json").read_text()
    again = init_identities(consortium_dir, ["hospital-a"])
    assert (consortium_dir / "crypto" / "consortium.json").read_text() == before
    assert [h.name for h in again.hospitals] == ["hospital-a", "hospital-b"]
    with pytest.raises(IdentityError, match="without \\['hospital-z'\\]"):
        init_identities(consortium_dir, ["hospital-z"])
