"""The hospitals' HE key on the embedded ledger: create, seal, accept, rotate; the one-machine ceremony; the
`carefed node he-key` commands. Each hospital acts with its own identity and its own key directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carefed.cli import app
from consortium.keys import install_public_context, public_context_path
from fabric_network.identities import init_identities
from fabric_network.ledger import ContractRejected, Ledger, open_ledger
from federation.key_transport import KeyTransportError, SealedKey, load_public_key
from federation.layout import keys_dir_for
from harness.key_ceremony import run_ceremony
from hospital_node.he_keys import accept_key, create_key, ensure_transport_key, installed_key
from privacy.he import PublicContext, SecretContext, load_context

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    init_identities(directory, HOSPITALS)
    return directory


def _ledger(state: Path, org: str) -> Ledger:
    return open_ledger(backend="embedded", state_dir=state, org=org)


def _create(
    state: Path, key_id: str, creator: str = "hospital-a", *, replace: bool = False, outbox: str = ""
) -> dict[str, Path]:
    """`creator` draws key `key_id` for the others (outbox `out/<outbox or key_id>`); their bundles by recipient."""
    recipients = {}
    for name in HOSPITALS:
        published = ensure_transport_key(keys_dir_for(state, name))
        if name != creator:
            recipients[name] = load_public_key(published.read_bytes(), str(published))
    with _ledger(state, creator) as ledger:
        keys = keys_dir_for(state, creator)
        created = create_key(
            ledger, keys, creator, key_id, recipients, state / "out" / (outbox or key_id), replace=replace
        )
    return created.sealed


def _accept(state: Path, hospital: str, bundle: Path, *, replace: bool = False) -> Path:
    with _ledger(state, hospital) as ledger:
        return accept_key(ledger, keys_dir_for(state, hospital), hospital, bundle.read_bytes(), replace=replace)


def test_create_accept_and_the_ledger_record(state: Path) -> None:
    sealed = _create(state, "he-first")
    with pytest.raises(KeyTransportError, match=r"^recipient: this bundle is sealed for hospital-b, not hospital-c"):
        _accept(state, "hospital-c", sealed["hospital-b"])
    for name in ("hospital-b", "hospital-c"):
        assert _accept(state, name, sealed[name]).stat().st_mode & 0o077 == 0
    secrets = {
        SecretContext.deserialize((keys_dir_for(state, h) / "he-secret.ctx").read_bytes()).key_id for h in HOSPITALS
    }
    assert len(secrets) == 1, "every hospital holds the same key"
    with _ledger(state, "consortium") as ledger:
        record = ledger.evaluate("GovernanceContract:read_he_key", "he-first")
        assert (record["creator"], record["recipients"]) == ("HospitalAMSP", ["HospitalBMSP", "HospitalCMSP"])
        assert sorted(record["accepted"]) == ["HospitalBMSP", "HospitalCMSP"]
        public = install_public_context(state, state / "out" / "he-first", ledger)
    assert type(load_context(public.read_bytes())) is PublicContext
    assert (
        record["public_context_sha256"]
        == json.loads((public.parent / "ceremony.json").read_text())["public_context_sha256"]
    )
    # Replayed: a bundle is installed once; a key id is recorded once.
    with pytest.raises(KeyTransportError, match=r"^key_id: hospital-b holds key he-first already"):
        _accept(state, "hospital-b", sealed["hospital-b"])
    with pytest.raises(KeyTransportError, match=r"^key_id: hospital-a holds key he-first already"):
        _create(state, "he-first", replace=True, outbox="he-first-again")


def test_rotation_is_a_new_key_id_and_refuses_to_overwrite_silently(state: Path) -> None:
    with pytest.raises(KeyTransportError, match=r"^he-secret.ctx: hospital-a holds he-\w+; .* pass --replace"):
        _create(state, "he-second")
    sealed = _create(state, "he-second", replace=True)
    with pytest.raises(KeyTransportError, match=r"^he-secret.ctx: hospital-b holds he-first; .* --replace"):
        _accept(state, "hospital-b", sealed["hospital-b"])
    _accept(state, "hospital-b", sealed["hospital-b"], replace=True)
    assert installed_key(keys_dir_for(state, "hospital-b")) == installed_key(keys_dir_for(state, "hospital-a")) | {
        "creator": "hospital-a"
    }


def test_a_bundle_whose_sender_did_not_record_the_key_is_refused(state: Path, tmp_path: Path) -> None:
    """Base-mode HPKE does not authenticate the sender; the ledger record, signed by the creator, does."""
    sealed = _create(state, "he-by-c", creator="hospital-c", replace=True)
    with pytest.raises(ContractRejected, match="key_id: a key with this id is recorded already"):
        _create(state, "he-by-c", replace=True, outbox="he-by-a")
    assert not (state / "out" / "he-by-a").exists(), "a key the ledger refused leaves no file"
    bundle = SealedKey.from_bytes(sealed["hospital-b"].read_bytes())
    forged = tmp_path / "forged.sealed"
    forged.write_bytes(SealedKey(**{**bundle.__dict__, "sender": "hospital-a"}).to_bytes())
    with pytest.raises(KeyTransportError, match=r"^sender: key he-by-c was recorded by HospitalCMSP, not hospital-a"):
        _accept(state, "hospital-b", forged, replace=True)
    unknown = tmp_path / "unknown.sealed"
    unknown.write_bytes(SealedKey(**{**bundle.__dict__, "key_id": "he-nowhere"}).to_bytes())
    with pytest.raises(KeyTransportError, match=r"^key_id: key he-nowhere is not readable on the ledger"):
        _accept(state, "hospital-b", unknown, replace=True)


def test_the_consortium_takes_no_secret_context(state: Path, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "public.ctx").write_bytes((keys_dir_for(state, "hospital-a") / "he-secret.ctx").read_bytes())
    (outbox / "ceremony.json").write_text(json.dumps({"key_id": "he-second", "creator": "hospital-a"}))
    with _ledger(state, "consortium") as ledger, pytest.raises(KeyTransportError, match="holds a secret key"):
        install_public_context(state, outbox, ledger)


def test_the_one_machine_ceremony_leaves_each_secret_with_its_owner(tmp_path: Path) -> None:
    init_identities(tmp_path, HOSPITALS)
    result = run_ceremony(tmp_path, HOSPITALS)
    assert result.public_context == public_context_path(tmp_path)
    for path in (tmp_path / "consortium").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"PRIVATE KEY" not in data and path.suffix not in (".key", ".sealed"), path
            if data.startswith(b"CFCX"):
                assert type(load_context(data)) is PublicContext, f"{path} holds a secret key"
    for hospital in HOSPITALS:
        keys = keys_dir_for(tmp_path, hospital)
        assert sorted(p.name for p in keys.iterdir() if p.name.startswith("he-")) == [
            "he-key.json",
            "he-secret.ctx",
            "he-transport.key",
            "he-transport.pub",
        ]
        assert keys.stat().st_mode & 0o077 == 0 and (keys / "he-transport.key").stat().st_mode & 0o077 == 0
    with _ledger(tmp_path, "hospital-b") as ledger:
        record = ledger.evaluate("GovernanceContract:read_he_key", result.key_id)
    assert record["creator"] == "HospitalAMSP" and sorted(record["accepted"]) == ["HospitalBMSP", "HospitalCMSP"]
    assert run_ceremony(tmp_path, HOSPITALS).key_id != result.key_id, "running it again rotates to a new key"


SCHEMA = 'mrn_column = "mrn"\nlabel_column = "y"\n[[features]]\nname = "x"\nmin = 0\nmax = 10\n'


def test_the_node_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    state = tmp_path / "state"
    init_identities(state, HOSPITALS)
    (tmp_path / "s.toml").write_text(SCHEMA)
    (tmp_path / "d.csv").write_text("mrn,y,x\nM1,1,2\nM2,0,3\n")
    published = tmp_path / "published"
    published.mkdir()
    for name in HOSPITALS:
        data = ["--data", str(tmp_path / "d.csv"), "--schema", str(tmp_path / "s.toml"), "--insecure"]
        init = runner.invoke(app, ["node", "init", "--hospital", name, *data, "--state-dir", str(state)])
        assert init.exit_code == 0 and "HE transport key" in init.output, init.output
        if name != "hospital-c":
            (published / f"{name}.pub").write_bytes((keys_dir_for(state, name) / "he-transport.pub").read_bytes())

    def carefed(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, [*args, "--state-dir", str(state)], terminal_width=200)
        return result.exit_code, result.output

    create = ("node", "he-key", "create", "--hospital", "hospital-a", "--recipient-keys", str(published))
    code, output = carefed(*create, "--key-id", "he-cli", "--recipients", "hospital-b,hospital-c")
    assert code == 2 and "no " in output and "hospital-c.pub" in output and "carefed node init" in output, output
    assert not (state / "nodes" / "hospital-a" / "he-outbox").exists()
    code, output = carefed(*create, "--key-id", "he/cli", "--recipients", "hospital-b")
    assert code == 1 and "error: key_id: must be 1-64 letters" in output, output
    code, output = carefed(*create, "--key-id", "he-cli", "--recipients", "2")
    assert code == 2 and "not a count" in output, output
    code, output = carefed(*create, "--key-id", "he-cli", "--recipients", "hospital-b")
    assert code == 0 and "recorded on the ledger by HospitalAMSP" in output, output
    bundle = state / "nodes" / "hospital-a" / "he-outbox" / "he-cli" / "hospital-b.sealed"
    assert bundle.exists() and f"carefed node he-key accept {bundle.name} --hospital hospital-b" in output

    tampered = tmp_path / "tampered.sealed"
    raw = json.loads(bundle.read_text())
    tampered.write_text(json.dumps({**raw, "ciphertext": raw["ciphertext"][:-8] + "AAAAAAA="}))
    code, output = carefed("node", "he-key", "accept", str(tampered), "--hospital", "hospital-b")
    assert code == 1 and "error: ciphertext: does not open" in output, output
    code, output = carefed("node", "he-key", "accept", str(bundle), "--hospital", "hospital-c")
    assert code == 1 and "error: recipient: the ledger does not list hospital-c" in output, output
    code, output = carefed("node", "he-key", "accept", str(tmp_path / "missing.sealed"), "--hospital", "hospital-b")
    assert code == 1 and "missing.sealed" in output, output
    code, output = carefed("node", "he-key", "accept", str(bundle), "--hospital", "hospital-b")
    assert code == 0 and "installed key he-cli from hospital-a" in output, output
    code, output = carefed("node", "he-key", "accept", str(bundle), "--hospital", "hospital-b")
    assert code == 1 and "error: key_id: hospital-b holds key he-cli already" in output, output
