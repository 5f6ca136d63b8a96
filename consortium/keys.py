"""The CKKS key ceremony and the guard that keeps secret keys out of the aggregator's process.

The ceremony draws one consortium secret context and writes it into each hospital's key directory (mode 0700,
file 0600); the aggregator gets the public context — parameters and key id, no key — in a separate directory.
The aggregator's process additionally installs `forbid_secret_reads` before it does anything else: a Python
audit hook that refuses to open any hospital directory or any secret-context file. It records both what it
opened under the state directory and every attempt it refused, so a run can show that the aggregator not only
read no secret key but never tried to (a refusal alone would hide an attempt that some fallback then survived).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.layout import node_dir_for

SECRET_CONTEXT_NAME = "he-secret.ctx"
PUBLIC_CONTEXT_NAME = "public.ctx"


def public_context_path(state_dir: Path) -> Path:
    return state_dir / "consortium" / "he" / PUBLIC_CONTEXT_NAME


def secret_context_path(state_dir: Path, hospital: str) -> Path:
    return node_dir_for(state_dir, hospital) / "keys" / SECRET_CONTEXT_NAME


@dataclass(frozen=True)
class CeremonyResult:
    public_context: Path
    secret_contexts: dict[str, Path]
    fingerprint: str
    parameters: dict[str, Any]


def ceremony_parameters(hospitals: int) -> Any:
    """Summation-only CKKS parameters: one 40-bit prime at N=4096 (128-bit secure), scale 2^25.

    `privacy.he`'s default prime leaves |weight·value| ≤ 1; a trained model's weights exceed that, so a wider
    prime buys headroom (≤ 256 for 16 parties) at the same precision (error follows the scale) for 25% more bytes.
    """
    from privacy.he import CKKSParameters

    return CKKSParameters(
        poly_modulus_degree=4096, coeff_mod_bit_sizes=(40,), scale_bits=25, max_parties=max(16, hospitals)
    )


def run_ceremony(state_dir: Path, hospitals: list[str]) -> CeremonyResult:
    """Generate the consortium key; secret context → each hospital's key dir, public context → the aggregator's."""
    from privacy.he import generate_secret_context

    if not hospitals:
        raise ValueError("--hospitals: name at least one hospital")
    secret = generate_secret_context(ceremony_parameters(len(hospitals)))
    secret_bytes = secret.serialize()
    written: dict[str, Path] = {}
    for hospital in hospitals:
        path = secret_context_path(state_dir, hospital)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.chmod(0o600)
        tmp.write_bytes(secret_bytes)
        tmp.replace(path)
        written[hospital] = path
    public_path = public_context_path(state_dir)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_bytes(secret.public().serialize())
    p = secret.parameters
    parameters = {
        "scheme": "ckks",
        "poly_modulus_degree": p.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(p.coeff_mod_bit_sizes),
        "global_scale_bits": p.scale_bits,
        "packing": "seeded-complex",
    }
    fingerprint = secret.fingerprint.hex()
    manifest = {"fingerprint": fingerprint, "hospitals": hospitals, "parameters": parameters}
    (public_path.parent / "ceremony.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return CeremonyResult(public_path, written, fingerprint, parameters)


def he_parameters(state_dir: Path) -> dict[str, Any]:
    """The HE parameters recorded by the ceremony (for the run's lineage)."""
    manifest = json.loads((public_context_path(state_dir).parent / "ceremony.json").read_text(encoding="utf-8"))
    return dict(manifest["parameters"])


class SecretKeyAccessDenied(PermissionError):
    """The aggregator tried to open a hospital's directory or a secret context."""


@dataclass
class KeyGuard:
    """What the aggregator's guard saw: files opened under the state dir, and refused attempts at key material."""

    opened: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)


def forbid_secret_reads(state_dir: Path) -> KeyGuard:
    """Install the aggregator's guard; the returned record grows as the process opens files."""
    state = os.path.realpath(state_dir)
    nodes = os.path.realpath(state_dir / "nodes")
    guard = KeyGuard()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or not args or not isinstance(args[0], str | bytes | Path):
            return
        raw = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        path = os.path.realpath(raw) if raw else raw
        if path.startswith(nodes) or path.endswith(SECRET_CONTEXT_NAME):
            guard.denied.append(path)
            raise SecretKeyAccessDenied(f"the aggregator may not read hospital key material: {path}")
        if path.startswith(state):
            guard.opened.append(path)

    sys.addaudithook(hook)
    return guard
