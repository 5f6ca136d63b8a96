"""FHIR AuditEvents of the ledger's audit trail: valid FHIR, BALP-conformant, and CareFed's checks bite."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from compliance.bundle import ExportedEvent, ExportFormat, export_bundle, fhir_event_problems
from compliance.fhir_audit import BALP, DCM, balp_problems
from compliance.records import AuditRecord
from fabric_network.identities import SigningIdentity


@pytest.fixture(scope="module")
def fhir_events(
    tmp_path_factory: pytest.TempPathFactory,
    audit_records: list[AuditRecord],
    exporter: SigningIdentity,
    exporter_ca_pem: bytes,
) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("fhir") / "export"
    export_bundle(audit_records, ExportFormat.FHIR, out, exporter, len(audit_records), {}, exporter_ca_pem)
    bundle = Bundle.model_validate_json((out / ExportFormat.FHIR.events_file).read_text())
    assert bundle.type == "collection"
    return [json.loads(entry.resource.model_dump_json(exclude_none=True)) for entry in bundle.entry]


def test_every_event_parses_and_passes_the_balp_checks(fhir_events: list[dict[str, Any]]) -> None:
    for event in fhir_events:
        AuditEvent.model_validate(event)
        assert balp_problems(event) == [], event["id"]
    profiles = Counter(p.removeprefix(BALP) for e in fhir_events for p in e.get("meta", {}).get("profile", []))
    assert {"PatientRead", "PatientQuery", "AuthZconsent"} <= set(profiles), profiles
    logins = [e for e in fhir_events if e["type"]["code"] == "110114"]
    assert {e["subtype"][0]["code"] for e in logins} == {"110122", "110123"}


def _first(events: list[dict[str, Any]], profile: str) -> dict[str, Any]:
    return copy.deepcopy(next(e for e in events if BALP + profile in e.get("meta", {}).get("profile", [])))


@pytest.mark.parametrize(
    ("profile", "break_it", "named"),
    [
        ("PatientRead", lambda e: e["type"].update(code="110112"), "type is"),
        ("PatientRead", lambda e: e.update(action="X"), "action 'X' is not one of C, R, U, D, E"),
        ("PatientRead", lambda e: e.update(action="C"), "action is 'C', the profile fixes 'R'"),
        ("PatientRead", lambda e: e.update(outcome="3"), "outcome '3' is not one of 0, 4, 8, 12"),
        ("PatientRead", lambda e: e["subtype"][0].update(code="delete"), "subtype needs one of"),
        ("PatientRead", lambda e: e["agent"].pop(0), "agent[client] (110152) must appear once, found 0"),
        ("PatientQuery", lambda e: e["entity"].pop(1), "entity[patient] (1) is missing"),
        ("PatientQuery", lambda e: e["entity"][0].pop("query"), "entity[query].query is missing"),
    ],
)
def test_a_wrong_code_or_missing_slice_is_caught(
    fhir_events: list[dict[str, Any]], profile: str, break_it: Any, named: str
) -> None:
    event = _first(fhir_events, profile)
    break_it(event)
    problems = balp_problems(event)
    assert any(named in p for p in problems), problems
    AuditEvent.model_validate(event)  # fhir.resources alone would have let it through


def test_a_wrong_login_code_is_caught(fhir_events: list[dict[str, Any]]) -> None:
    login = copy.deepcopy(next(e for e in fhir_events if e["type"]["code"] == "110114"))
    login["subtype"] = [{"system": DCM, "code": "110120"}]  # "Application Start", not Login/Logout
    assert any("subtype needs one of" in p for p in balp_problems(login))


def test_an_unknown_balp_profile_is_named(fhir_events: list[dict[str, Any]]) -> None:
    event = _first(fhir_events, "PatientRead")
    event["meta"]["profile"] = [BALP + "PatientReed"]
    assert balp_problems(event) == [f"meta.profile {BALP}PatientReed is not a BALP 1.1.4 AuditEvent profile"]


def test_verify_reports_a_broken_profile_in_a_signed_bundle(
    tmp_path: Path, audit_records: list[AuditRecord], exporter: SigningIdentity, exporter_ca_pem: bytes
) -> None:
    out = tmp_path / "export"
    export_bundle(audit_records, ExportFormat.FHIR, out, exporter, len(audit_records), {}, exporter_ca_pem)
    bundle = json.loads((out / ExportFormat.FHIR.events_file).read_text())
    resource = next(e["resource"] for e in bundle["entry"] if "meta" in e["resource"])
    resource["action"] = "X"
    problems = fhir_event_problems([ExportedEvent(resource["id"], b"", resource)])
    assert problems and problems[0].startswith(f"event {resource['id']}: ")
