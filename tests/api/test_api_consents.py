"""Consents as FHIR R4 resources through the API, on SQLite and PostgreSQL: recorded on the ledger under the
hospital's pseudonym, withdrawn, read back; bad input named by field and nothing stored; the MRN nowhere."""

import copy
import logging
from typing import Any

import pytest

from api.models.consent import EXAMPLE_CONSENT, PSEUDONYM_SYSTEM
from fabric_network.ledger import open_ledger
from federation.layout import node_dir_for
from hospital_node.pseudonyms import PseudonymTable
from tests.api.api_testing import Service

MRN = "MRN-7731"


def consent_for(mrn: str = MRN, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLE_CONSENT)
    body["patient"]["identifier"]["value"] = mrn
    body.update(changes)
    return body


def pseudonym_of(service: Service, mrn: str, hospital: str = "hospital-a") -> str | None:
    with PseudonymTable(node_dir_for(service.settings.state_dir, hospital) / "pseudonyms.sqlite") as table:
        return table.lookup(mrn)


def test_consent_recorded_read_and_withdrawn_through_the_ledger(service: Service) -> None:
    client, headers = service.client, service.headers("it-a")
    created = client.post("/consents", headers=headers, json=consent_for())
    assert created.status_code == 201, created.text
    resource = created.json()
    pseudonym = pseudonym_of(service, MRN)
    assert pseudonym is not None and len(pseudonym) == 64
    assert resource["resourceType"] == "Consent" and resource["status"] == "active"
    assert resource["patient"]["identifier"] == {"system": PSEUDONYM_SYSTEM, "value": pseudonym}
    assert created.headers["Location"] == f"/consents/{pseudonym}/HRESCH"
    assert MRN not in created.text

    with open_ledger(state_dir=service.settings.state_dir, org="hospital-a") as ledger:
        on_chain = ledger.evaluate("ConsentContract:read_consent", pseudonym, "HRESCH")
        assert on_chain["hospital"] == "HospitalAMSP" and on_chain["status"] == "active"
        assert pseudonym in ledger.evaluate("ConsentContract:list_active_consents", "HRESCH", "HospitalAMSP", "")

    listed = client.get("/consents", headers=headers, params={"purpose": "HRESCH"}).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == resource["id"]
    found = client.post("/consents/search", headers=headers, json={"mrn": MRN}).json()
    assert [item["id"] for item in found["items"]] == [resource["id"]]

    withdrawn = client.post(f"/consents/{pseudonym}/HRESCH/withdraw", headers=headers)
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "inactive"
    assert client.get(f"/consents/{pseudonym}/HRESCH", headers=headers).json()["status"] == "inactive"
    assert client.get("/consents", headers=headers).json()["total"] == 0
    again = client.post(f"/consents/{pseudonym}/HRESCH/withdraw", headers=headers)
    assert again.status_code == 409

    renewed = client.post("/consents", headers=headers, json=consent_for())
    assert renewed.status_code == 201 and renewed.json()["status"] == "active"
    assert pseudonym_of(service, MRN) == pseudonym  # the same patient keeps the same pseudonym


BAD_CONSENTS: dict[str, tuple[dict[str, Any], str]] = {
    "not a consent": ({"resourceType": "Patient"}, "resourceType"),
    "no scope": ({k: v for k, v in consent_for().items() if k != "scope"}, "scope"),
    "unknown element": (consent_for(colour="blue"), "colour"),
    "no MRN": (consent_for(patient={"display": "someone"}), "patient.identifier.value"),
    "MRN by reference": (
        consent_for(patient={"reference": "Patient/1", "identifier": {"value": MRN}}),
        "patient.reference",
    ),
    "draft": (consent_for(status="draft"), "status"),
    "unknown purpose": (
        consent_for(provision={"type": "permit", "purpose": [{"system": "urn:x", "code": "FUN"}]}),
        "provision.purpose",
    ),
    "deny": (
        consent_for(provision={**EXAMPLE_CONSENT["provision"], "type": "deny"}),
        "provision.type",
    ),
    "period backwards": (
        consent_for(provision={**EXAMPLE_CONSENT["provision"], "period": {"start": "2027-01-01", "end": "2026-01-01"}}),
        "provision.period.end",
    ),
    "bad date": (
        consent_for(provision={**EXAMPLE_CONSENT["provision"], "period": {"start": "next tuesday"}}),
        "provision.period.start",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONSENTS))
def test_malformed_consent_names_the_field_and_stores_nothing(
    service: Service, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    body, field = BAD_CONSENTS[case]
    with caplog.at_level(logging.DEBUG):
        response = service.client.post("/consents", headers=service.headers("it-a"), json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in response.json()["errors"]]
    assert MRN not in response.text and MRN not in caplog.text
    assert pseudonym_of(service, MRN) is None
    with open_ledger(state_dir=service.settings.state_dir, org="hospital-a") as ledger:
        assert ledger.evaluate("ConsentContract:list_active_consents", "HRESCH", "", "") == []


def test_ledger_refusal_leaves_no_pseudonym_behind(service: Service) -> None:
    """A consent the contract refuses (open-ended validity starting after it ends is caught here; an erased
    patient is refused by the contract) must not leave a fresh MRN → pseudonym entry."""
    headers = service.headers("it-a")
    assert service.client.post("/consents", headers=headers, json=consent_for()).status_code == 201
    pseudonym = pseudonym_of(service, MRN)
    with open_ledger(state_dir=service.settings.state_dir, org="hospital-a") as ledger:
        ledger.submit("ConsentContract:record_erasure", pseudonym)
    refused = service.client.post("/consents", headers=headers, json=consent_for())
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "pseudonym"
    assert pseudonym_of(service, MRN) == pseudonym  # a known patient keeps the entry; only new ones are undone


def test_hospital_it_sees_only_its_own_hospital(service: Service) -> None:
    created = service.client.post("/consents", headers=service.headers("it-a"), json=consent_for())
    pseudonym = created.json()["patient"]["identifier"]["value"]
    other = service.headers("it-b")
    assert service.client.get(f"/consents/{pseudonym}/HRESCH", headers=other).status_code == 403
    assert service.client.get("/consents", headers=other).json()["total"] == 0
    assert service.client.post("/consents/search", headers=other, json={"mrn": MRN}).json()["total"] == 0
    # the other hospital's table never learnt the MRN: a search does not draw pseudonyms
    assert pseudonym_of(service, MRN, "hospital-b") is None
