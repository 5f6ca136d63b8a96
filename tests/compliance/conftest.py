"""Shared fixtures: a consortium's identities and audit records to export."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from compliance.records import AuditRecord, EventKind, Outcome
from compliance.signing import consortium_ca_certificates
from fabric_network.identities import ConsortiumMaterial, SigningIdentity, identity_for, init_identities


@pytest.fixture(scope="session")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ConsortiumMaterial]:
    state_dir = tmp_path_factory.mktemp("consortium")
    return state_dir, init_identities(state_dir, ["hospital-a", "hospital-b"])


@pytest.fixture(scope="session")
def exporter(consortium: tuple[Path, ConsortiumMaterial]) -> SigningIdentity:
    return identity_for(consortium[1], "hospital-a", "admin")


@pytest.fixture(scope="session")
def consortium_cas(consortium: tuple[Path, ConsortiumMaterial]) -> list[x509.Certificate]:
    return consortium_ca_certificates(consortium[0])


@pytest.fixture(scope="session")
def outsider_cas(tmp_path_factory: pytest.TempPathFactory) -> list[x509.Certificate]:
    """CA certificates of another consortium: a bundle signed by ours must not chain to them."""
    state_dir = tmp_path_factory.mktemp("outsiders")
    init_identities(state_dir, ["hospital-a", "hospital-b"])
    return consortium_ca_certificates(state_dir)


@pytest.fixture(scope="session")
def audit_records() -> list[AuditRecord]:
    kinds = list(EventKind)
    return [
        AuditRecord(
            event_id=f"{i:040x}-0",
            time=f"2026-01-01T00:00:{i:02d}+00:00",
            actor="User1@hospital-a.carefed.local",
            role="client",
            organisation="HospitalAMSP",
            action=f"action.{kinds[i % len(kinds)].value}",
            kind=kinds[i % len(kinds)],
            object=f"object-{i}",
            outcome=Outcome.SUCCESS,
            purpose="HRESCH",
            patient=f"{i:064x}",
            recipient="clinician",
            tx_id=f"{i:064x}",
            block_number=i,
            detail={"i": i},
        )
        for i in range(1, 24)
    ]
