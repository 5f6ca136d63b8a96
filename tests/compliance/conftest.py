"""Shared fixtures: a consortium history on a real embedded ledger, its identities, and its audit records."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from compliance.records import AuditRecord
from compliance.signing import consortium_ca_certificates, org_ca_pem
from compliance.trail import audit_trail
from fabric_network.identities import SigningIdentity, identity_for, init_identities, load_consortium
from hospital_node.pseudonyms import PseudonymTable
from tests.compliance.scenario import Scenario, build_scenario, make_node_scenario


@pytest.fixture(scope="session")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return build_scenario(tmp_path_factory.mktemp("scenario"))


@pytest.fixture(scope="session")
def exporter(scenario: Scenario) -> SigningIdentity:
    return identity_for(load_consortium(scenario.state_dir), "consortium", "admin")


@pytest.fixture(scope="session")
def exporter_ca_pem(scenario: Scenario) -> bytes:
    """The CA certificate that issued the exporter's identity (the bundle carries it)."""
    return org_ca_pem(scenario.state_dir, "consortium")


@pytest.fixture(scope="session")
def consortium_cas(scenario: Scenario) -> list[x509.Certificate]:
    return consortium_ca_certificates(scenario.state_dir)


@pytest.fixture(scope="session")
def outsider_cas(tmp_path_factory: pytest.TempPathFactory) -> list[x509.Certificate]:
    """CA certificates of another consortium: a bundle signed by ours must not chain to them."""
    state_dir = tmp_path_factory.mktemp("outsiders")
    init_identities(state_dir, ["hospital-a", "hospital-b"])
    return consortium_ca_certificates(state_dir)


@pytest.fixture(scope="session")
def audit_records(scenario: Scenario) -> list[AuditRecord]:
    """The scenario's audit trail as read from the ledger (the export's input)."""
    with scenario.ledger() as ledger:
        records, _ = audit_trail(ledger)
    return records


@pytest.fixture
def node_scenario(tmp_path: Path) -> tuple[Scenario, PseudonymTable]:
    """A private node scenario (erasure changes it)."""
    return make_node_scenario(tmp_path)
