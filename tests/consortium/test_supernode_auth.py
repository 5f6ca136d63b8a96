"""SuperNode authentication and the SuperLink's certificate for other machines' addresses (real Flower processes).

Across hosts only registered hospitals may join the consortium's SuperLink: a SuperNode whose key the consortium
registered connects; one with any other key is refused and never gets a node id. The SuperLink's certificate
names the addresses the hospitals dial, and adding one keeps the CA the hospitals already trust.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from carefed.cli import app
from federation.runtime import FlowerRuntime, RuntimeFailure
from federation.tls import ensure_superlink_tls
from hospital_node.site import ensure_supernode_auth_key

pytestmark = pytest.mark.timeout(600)


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in names}


def test_the_certificate_names_the_addresses_hospitals_dial_and_keeps_its_ca(tmp_path: Path) -> None:
    tls = ensure_superlink_tls(tmp_path, ("10.0.0.5",))
    assert _sans(tls.server_cert) == {"10.0.0.5", "127.0.0.1", "localhost"}
    ca, first = tls.ca_cert.read_bytes(), tls.server_cert.read_bytes()
    assert ensure_superlink_tls(tmp_path, ("10.0.0.5",)).server_cert.read_bytes() == first, "covered: kept"
    again = ensure_superlink_tls(tmp_path, ("10.0.0.5", "consortium.example"))
    assert _sans(again.server_cert) == {"10.0.0.5", "consortium.example", "127.0.0.1", "localhost"}
    assert again.ca_cert.read_bytes() == ca, "the hospitals' trusted CA stays the same"
    issued = x509.load_pem_x509_certificate(again.server_cert.read_bytes())
    issued.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))


def test_only_a_registered_supernode_connects(tmp_path: Path) -> None:
    state = tmp_path / "state"
    tls = ensure_superlink_tls(state / "consortium" / "tls")
    with FlowerRuntime(state / "flwr", tls=tls, supernode_auth=True) as runtime:
        runtime.start_superlink()
        (tmp_path / "hospital-a").mkdir()
        (tmp_path / "stranger").mkdir()
        registered = ensure_supernode_auth_key(tmp_path / "hospital-a")
        stranger = ensure_supernode_auth_key(tmp_path / "stranger")
        bad = CliRunner().invoke(
            app, ["consortium", "register-node", str(registered), "--state-dir", str(state)]
        )  # the private half by mistake
        refusal = " ".join(bad.output.replace("│", " ").split())  # the error box, unwrapped
        assert bad.exit_code == 2 and "not an OpenSSH EC public key" in refusal, bad.output
        ok = CliRunner().invoke(
            app, ["consortium", "register-node", str(registered.with_suffix(".pub")), "--state-dir", str(state)]
        )
        assert ok.exit_code == 0, ok.output
        runtime.start_supernode("hospital-a", {"hospital": "hospital-a"}, auth_key=registered)
        runtime.start_supernode("stranger", {"hospital": "stranger"}, auth_key=stranger)
        runtime.wait_for_log_line({"supernode-hospital-a": runtime.supernodes["hospital-a"]}, b"SuperNode ID:", 120)
        deadline = time.monotonic() + 60
        while runtime.supernodes["stranger"].poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        log = runtime.log_path("supernode-stranger").read_bytes()
        assert b"SuperNode ID:" not in log, "an unregistered key got a node id"
        assert b"[code: 2004] Failed to activate SuperNode" in log, log[-600:]
        assert runtime.supernodes["stranger"].poll() is not None, "the refused SuperNode should give up"
        with pytest.raises(RuntimeFailure, match="needs TLS"):
            FlowerRuntime(tmp_path / "plain", supernode_auth=True).start_superlink()
