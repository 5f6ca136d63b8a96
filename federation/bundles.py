"""The two files organisations exchange to form a consortium across hosts; public material only.

* A hospital's **org bundle** (`carefed org init`): its ledger organisation's public certificates and peer
  address (the ``fabric`` part, checked by fabric_network.fabric.sites), the public half of its SuperNode
  authentication key, and its HE transport public key (others seal the consortium's CKKS key to it).
* The consortium's **join bundle** (`carefed consortium up`): the channel definition (``fabric``), the
  SuperLink's address and CA certificate, and every hospital's HE transport public key.

Neither holds a private key, so they may travel by any channel (e-mail, a ticket, scp); what a forged bundle
could change — a certificate, an address — each side checks against what it holds (docs/deployment.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

BUNDLE_SUFFIX = ".bundle.json"
JOIN_BUNDLE_NAME = "join.bundle.json"


class BundleError(ValueError):
    """A bundle file that cannot be used; the message names the file, the field and the fix."""


class HospitalBundle(BaseModel):
    """What a hospital sends the consortium to be added (`carefed consortium add-hospital`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    org: str
    fabric: dict[str, Any]
    supernode_public_key: str = Field(pattern=r"^ecdsa-sha2-nistp\d+ ")
    he_transport_public_key: str = Field(pattern=r"^-----BEGIN PUBLIC KEY-----")


class JoinBundle(BaseModel):
    """What the consortium hands every hospital (`carefed node join`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    superlink: str = Field(pattern=r"^[^\s:]+:\d+$", description="host:port the SuperNodes dial")
    superlink_ca_pem: str = Field(pattern=r"^-----BEGIN CERTIFICATE-----")
    fabric: dict[str, Any]
    he_transport_keys: dict[str, str]


Bundle = TypeVar("Bundle", HospitalBundle, JoinBundle)


def read_bundle(path: Path, kind: type[Bundle]) -> Bundle:
    """Read and check a bundle file; the error names the file and what is wrong with it."""
    what = "an org bundle of `carefed org init`" if kind is HospitalBundle else "a join bundle of `consortium up`"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BundleError(f"BUNDLE: cannot read {path} ({exc.strerror}); give the path of {what}") from None
    try:
        return kind.model_validate_json(text)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise BundleError(f"BUNDLE: {path} is not {what} ({reasons})") from None


def write_bundle(path: Path, bundle: HospitalBundle | JoinBundle) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(bundle.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
