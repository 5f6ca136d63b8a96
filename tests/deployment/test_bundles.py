"""The bundles organisations exchange across hosts, and what each side refuses (no Fabric processes needed).

A bad bundle gets one error naming the file or field and the fix, and changes nothing already stored: a
hospital's identities are never regenerated, a consortium never admits an org under another's name, a hospital
never joins a channel that names it with another CA or transport key.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carefed.cli import app
from consortium.site import add_hospital, members_dir
from fabric_network.fabric import sites
from fabric_network.identities import IdentityError, init_org, load_org
from federation.bundles import BundleError, HospitalBundle, JoinBundle, read_bundle
from hospital_node.config import NodeConfig
from hospital_node.site import init_hospital, join

runner = CliRunner()


def _words(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


def _carefed(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def orgs(tmp_path: Path) -> dict[str, Path]:
    """The consortium and two hospitals, each with only its own keys, as `carefed org init` leaves them."""
    dirs = {org: tmp_path / org for org in ("consortium", "hospital-a", "hospital-b")}
    _carefed("org", "init", "--org", "consortium", "--host", "10.0.0.1", "--state-dir", str(dirs["consortium"]))
    for index, hospital in enumerate(("hospital-a", "hospital-b"), start=2):
        _carefed("org", "init", "--org", hospital, "--host", f"10.0.0.{index}", "--state-dir", str(dirs[hospital]))
    return dirs


def test_org_init_writes_only_the_orgs_own_keys_and_a_public_bundle(orgs: dict[str, Path]) -> None:
    a = orgs["hospital-a"]
    bundle = read_bundle(a / "hospital-a.bundle.json", HospitalBundle)
    assert "PRIVATE" not in json.dumps(bundle.model_dump())
    org = sites.org_bundle_from(bundle.fabric, "test")
    assert (org.name, org.msp_id, org.endpoint) == ("hospital-a", "HospitalAMSP", "10.0.0.2:7051")
    from cryptography import x509

    sans = x509.load_pem_x509_certificate(org.tls_cert_pem.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "10.0.0.2" in {str(v) for v in sans.value.get_values_for_type(x509.IPAddress)}, "the peer's address"
    assert {p.name for p in (a / "crypto").glob("*/*")} == {"hospital-a.carefed.local"}, "no other org's keys"
    keys = a / "nodes" / "hospital-a" / "keys"
    assert keys.stat().st_mode & 0o777 == 0o700
    assert {p.name for p in keys.iterdir()} >= {"supernode-auth", "supernode-auth.pub", "he-transport.key"}


def test_org_init_never_regenerates_nor_takes_another_orgs_name(orgs: dict[str, Path]) -> None:
    a = orgs["hospital-a"]
    ca = load_org(a).ca_cert
    before = Path(ca).read_bytes()
    init_hospital(a, "hospital-a", "10.0.0.2")
    assert Path(ca).read_bytes() == before, "identities are created once"
    with pytest.raises(IdentityError, match="already holds the identities of 'hospital-a'"):
        init_org(a, "hospital-b", "peer", ["10.0.0.3"])
    refused = runner.invoke(app, ["org", "init", "--org", "Hospital A", "--host", "x", "--state-dir", str(a)])
    assert refused.exit_code == 2 and "--org" in _words(refused.output), refused.output


def test_the_consortium_admits_a_hospital_once_and_refuses_bad_bundles(orgs: dict[str, Path], tmp_path: Path) -> None:
    consortium = orgs["consortium"]
    bundle_file = orgs["hospital-a"] / "hospital-a.bundle.json"
    output = _carefed("consortium", "add-hospital", str(bundle_file), "--state-dir", str(consortium))
    assert "hospital-a admitted" in output
    assert "admitted already" in _carefed(
        "consortium", "add-hospital", str(bundle_file), "--state-dir", str(consortium)
    )
    assert (members_dir(consortium) / "hospital-a.supernode.pub").read_text().startswith("ecdsa-sha2-nistp256 ")

    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"org": "hospital-x"}')
    refused = runner.invoke(app, ["consortium", "add-hospital", str(garbage), "--state-dir", str(consortium)])
    assert refused.exit_code == 1 and "is not an org bundle of `carefed org init`" in _words(refused.output)
    assert "fabric: Field required" in _words(refused.output), refused.output

    # hospital-b's bundle relabelled as hospital-a: the ledger org inside names hospital-b
    forged = json.loads((orgs["hospital-b"] / "hospital-b.bundle.json").read_text()) | {"org": "hospital-a"}
    with pytest.raises(sites.SiteError, match="carries the ledger organisation of 'hospital-b'"):
        add_hospital(consortium, HospitalBundle.model_validate(forged))
    # hospital-a re-created its identities: the consortium does not silently swap its certificates
    other = tmp_path / "hospital-a-again"
    init_hospital(other, "hospital-a", "10.0.0.2")
    with pytest.raises(sites.SiteError, match="was added already with other certificates"):
        add_hospital(consortium, read_bundle(other / "hospital-a.bundle.json", HospitalBundle))
    kept = sites.members(consortium)
    assert [m.name for m in kept] == ["hospital-a"] and kept[0].ca_cert_pem == Path(
        load_org(orgs["hospital-a"]).ca_cert
    ).read_text()
    with pytest.raises(sites.SiteError, match="hospitals are added at the consortium"):
        sites.add_member(orgs["hospital-b"], kept[0])


def _join_bundle(orgs: dict[str, Path], consortium_dir: Path) -> JoinBundle:
    """A join bundle as `consortium up` writes it (the genesis block is opaque to `join`'s checks)."""
    members = [
        sites.org_bundle_from(read_bundle(orgs[h] / f"{h}.bundle.json", HospitalBundle).fabric, h)
        for h in ("hospital-a", "hospital-b")
    ]
    definition = sites.ChannelDefinition(
        orderer=sites.OrgBundle.of(load_org(consortium_dir), "10.0.0.1", 7050),
        members=tuple(members),
        package_id="carefed_1.0:" + "0" * 64,
        genesis_block=base64.b64encode(b"genesis").decode(),
    )
    transport = {
        h: read_bundle(orgs[h] / f"{h}.bundle.json", HospitalBundle).he_transport_public_key
        for h in ("hospital-a", "hospital-b")
    }
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    return JoinBundle(
        superlink="10.0.0.1:9092", superlink_ca_pem=ca, fabric=definition.model_dump(), he_transport_keys=transport
    )


def _node_config(state: Path, hospital: str, tmp_path: Path) -> NodeConfig:
    data = tmp_path / "train.csv"
    data.write_text("mrn,x,y\n")
    node = NodeConfig(
        hospital=hospital,
        node_dir=(state / "nodes" / hospital).resolve(),
        data=data,
        schema_path=data,
        ledger_state_dir=state.resolve(),
    )
    node.save()
    return node


def test_a_hospital_joins_only_a_channel_that_names_it_with_its_own_keys(orgs: dict[str, Path], tmp_path: Path) -> None:
    a = orgs["hospital-a"]
    _node_config(a, "hospital-a", tmp_path)
    bundle = _join_bundle(orgs, orgs["consortium"])
    impostor = tmp_path / "impostor"
    init_hospital(impostor, "hospital-a", "10.0.0.2")
    _node_config(impostor, "hospital-a", tmp_path)
    with pytest.raises(sites.SiteError, match="another HE transport key for hospital-a"):
        join(impostor, "hospital-a", bundle)
    with pytest.raises(sites.SiteError, match="another CA certificate"):
        join(impostor, "hospital-a", bundle.model_copy(update={"he_transport_keys": {
            "hospital-a": (impostor / "nodes/hospital-a/keys/he-transport.pub").read_text()}}))  # fmt: skip
    assert not sites.has_channel(impostor), "a refused bundle stores nothing"
    assert NodeConfig.load(impostor / "nodes" / "hospital-a").ledger_backend == "embedded"

    joined = join(a, "hospital-a", bundle)
    assert (joined.superlink, joined.ledger_backend, joined.insecure) == ("10.0.0.1:9092", "fabric", False)
    assert (a / "nodes/hospital-a/members/hospital-b.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert not (a / "nodes/hospital-a/members/hospital-a.pub").exists()
    assert sites.channel_definition(a).member("hospital-a").endpoint == "10.0.0.2:7051"

    not_a_join = tmp_path / "not-join.json"
    not_a_join.write_text("[]")
    with pytest.raises(BundleError, match="is not a join bundle of `consortium up`"):
        read_bundle(not_a_join, JoinBundle)
    missing = runner.invoke(
        app, ["node", "join", str(tmp_path / "nowhere.json"), "--hospital", "hospital-a", "--state-dir", str(a)]
    )
    assert missing.exit_code == 1 and "cannot read" in _words(missing.output), missing.output
