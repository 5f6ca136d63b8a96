"""Key ceremony (secret vs public context), the aggregator's guard, and the registry's tamper check."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from consortium.keys import public_context_path, secret_context_path
from fabric_network.identities import init_identities
from federation.model_artifact import FeatureRange, ModelArtifact, ModelSpec
from federation.registry import MissingArtifactError, ModelRegistry, TamperedModelError
from harness.key_ceremony import run_ceremony


def test_ceremony_separates_secret_and_public_contexts(tmp_path: Path) -> None:
    from privacy.he import MissingSecretKeyError, PublicContext, SecretContext, decrypt, encrypt, load_context

    init_identities(tmp_path, ["hospital-a", "hospital-b"])
    result = run_ceremony(tmp_path, ["hospital-a", "hospital-b"])
    secrets_ = [secret_context_path(tmp_path, h) for h in ("hospital-a", "hospital-b")]
    assert all(p.stat().st_mode & 0o077 == 0 and p.parent.stat().st_mode & 0o077 == 0 for p in secrets_)
    public = load_context(public_context_path(tmp_path).read_bytes())
    assert type(public) is PublicContext and result.public_context.parent != secrets_[0].parent
    secret = SecretContext.deserialize(secrets_[0].read_bytes())
    blob = encrypt(secret, np.array([1.5, -2.0]))
    with pytest.raises(MissingSecretKeyError):
        decrypt(public, blob)
    np.testing.assert_allclose(
        decrypt(SecretContext.deserialize(secrets_[1].read_bytes()), blob), [1.5, -2.0], atol=1e-3
    )


def test_aggregator_guard_refuses_hospital_key_material(tmp_path: Path) -> None:
    init_identities(tmp_path, ["hospital-a"])
    run_ceremony(tmp_path, ["hospital-a"])
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from consortium.keys import forbid_secret_reads, SecretKeyAccessDenied
        guard = forbid_secret_reads(Path({str(tmp_path)!r}))
        Path({str(public_context_path(tmp_path))!r}).read_bytes()
        print("denied before", guard.denied)
        for target in ({str(secret_context_path(tmp_path, "hospital-a"))!r}, {str(tmp_path / "nodes")!r} + "/x"):
            try:
                open(target, "rb")
            except SecretKeyAccessDenied as exc:
                print("refused", exc)
        print("denied", guard.denied)
        print("opened", guard.opened)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    *_, denied_before, _, _, denied, opened = result.stdout.splitlines()
    assert denied_before == "denied before []", "reading the public context is no attempt at key material"
    assert result.stdout.count("refused the aggregator may not read hospital key material") == 2
    # The control for the federated run's "no attempt" check: an attempt is caught AND recorded.
    assert "he-secret.ctx" in denied and "/nodes/x" in denied
    assert "public.ctx" in opened and "he-secret" not in opened


def test_registry_refuses_an_artefact_that_differs_from_the_ledger(tmp_path: Path) -> None:
    spec = ModelSpec((FeatureRange("a", 0, 1), FeatureRange("b", 0, 2)))
    artifact = ModelArtifact.from_vector(spec, "run-x", 3, [0.5, -0.25, 0.1])
    registry = ModelRegistry(tmp_path)
    digest = registry.store(artifact.to_bytes())
    assert digest == artifact.sha256 == hashlib.sha256(registry.path_of(digest).read_bytes()).hexdigest()
    loaded = registry.load("m", digest)  # the caller passes the hash the ledger registered for "m"
    np.testing.assert_array_equal(loaded.parameters, artifact.parameters)
    with pytest.raises(TamperedModelError, match="not registered on the ledger"):
        registry.load("m", None)
    with pytest.raises(MissingArtifactError, match="not in the registry"):
        registry.load("m", "0" * 64)
    path = registry.path_of(digest)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(TamperedModelError, match="altered"):
        registry.load("m", digest)
    assert [(s.sha256, s.intact) for s in registry.stored()] == [(digest, False)]
    assert registry.store(artifact.to_bytes()) == digest, "storing the artefact again replaces the altered copy"
    assert registry.load("m", digest).round == 3 and registry.path_of(digest).stat().st_mode & 0o222 == 0
