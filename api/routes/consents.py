"""Consents: hospital IT records, reads and withdraws its own patients' consents as FHIR R4 Consent resources.

The MRN is turned into the patient's pseudonym through the hospital's own pseudonym table (a random value,
never derived from the MRN); only the pseudonym goes to the ledger, in a transaction signed by the hospital's
identity. The MRN is neither stored by the service nor logged, nor put in any URL: searching by MRN is a POST.
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response

from api.core.config import Settings
from api.core.ledger import LedgerHub, hospital_msp
from api.core.problems import PROBLEM_RESPONSES, ProblemError, contract_problem
from api.deps import CurrentUser, LedgerHubDep, PageDep, PageParams, SettingsDep
from api.models.common import Page
from api.models.consent import (
    EXAMPLE_CONSENT,
    PSEUDONYM_PATTERN,
    MrnQuery,
    consent_resource,
    parse_consent,
)
from api.models.user import User
from fabric_network.contracts.common import PURPOSE_CODES
from fabric_network.ledger import ContractRejected, Ledger
from federation.layout import node_dir_for
from hospital_node.pseudonyms import PseudonymTable

router = APIRouter(prefix="/consents", tags=["consents"], responses=PROBLEM_RESPONSES)

PURPOSE_PATTERN = "^(" + "|".join(sorted(PURPOSE_CODES)) + ")$"
PseudonymPath = Annotated[str, Path(pattern=PSEUDONYM_PATTERN, description="The patient's pseudonym (64 hex).")]
PurposePath = Annotated[str, Path(pattern=PURPOSE_PATTERN, description="FHIR v3 ActReason purpose code.")]
FhirConsent = dict[str, Any]
PSEUDONYM_TABLE_FILE = "pseudonyms.sqlite"


def hospital_of(user: User) -> str:
    """The hospital a hospital-IT user acts for (the role is always bound to one)."""
    assert user.hospital is not None, "hospital_it users are bound to a hospital (UserCreate enforces it)"
    return user.hospital


@contextmanager
def pseudonym_table(settings: Settings, hospital: str) -> Iterator[PseudonymTable]:
    """The hospital's MRN → pseudonym table, the same file its training node reads."""
    with PseudonymTable(node_dir_for(settings.state_dir, hospital) / PSEUDONYM_TABLE_FILE) as table:
        yield table


def _read(ledger: Ledger, pseudonym: str, purpose: str) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = ledger.evaluate("ConsentContract:read_consent", pseudonym, purpose)
    except ContractRejected:
        return None
    return record


def _owned_record(request: Request, ledger: Ledger, user: User, pseudonym: str, purpose: str) -> dict[str, Any]:
    """The consent, which must belong to the user's hospital: 404 if there is none, 403 if it is another's."""
    request.state.audit_object = f"consent:{pseudonym}"
    record = _read(ledger, pseudonym, purpose)
    if record is None:
        raise ProblemError(
            404, "no consent recorded for this pseudonym and purpose", field="pseudonym", location="path"
        )
    if record["hospital"] != hospital_msp(hospital_of(user)):
        raise ProblemError(403, "this consent belongs to another hospital", field="pseudonym", location="path")
    return record


def record_consent(
    request: Request, settings: Settings, hub: LedgerHub, user: User, consent: dict[str, Any]
) -> dict[str, Any]:
    """Validate a FHIR Consent, pseudonymise its MRN at the user's hospital and record (or renew) it on the ledger.

    A refused consent leaves nothing behind: a pseudonym drawn for a patient seen for the first time is
    forgotten again when the ledger refuses the consent.
    """
    grant = parse_consent(consent, now=dt.datetime.now(dt.UTC))
    hospital = hospital_of(user)
    ledger = hub.of(hospital)
    with pseudonym_table(settings, hospital) as table:
        new_patient = table.lookup(grant.mrn) is None
        pseudonym = table.pseudonym_for(grant.mrn)
        request.state.audit_object = f"consent:{pseudonym}"
        terms = (grant.purpose, grant.scope, grant.valid_from, grant.valid_until)
        try:
            if _read(ledger, pseudonym, grant.purpose) is None:
                record: dict[str, Any] = ledger.submit("ConsentContract:record_consent", pseudonym, *terms).result
            else:
                record = ledger.submit("ConsentContract:update_consent", pseudonym, *terms).result
        except BaseException as error:
            if new_patient:  # nothing of this patient reached the ledger: leave the table as it was
                table.forget(grant.mrn)
            if isinstance(error, ContractRejected):
                raise contract_problem(error) from None
            raise
    return record


@router.post("", name="create_consent", status_code=201)
def create_consent(
    request: Request,
    response: Response,
    user: CurrentUser,
    settings: SettingsDep,
    hub: LedgerHubDep,
    consent: Annotated[
        dict[str, Any],
        Body(
            description="A FHIR R4 Consent naming the patient by MRN in `patient.identifier`.",
            openapi_examples={"research consent": {"value": EXAMPLE_CONSENT}},
        ),
    ],
) -> FhirConsent:
    """Record (or renew) a patient's consent on the ledger; returns it as stored, the patient by pseudonym."""
    record = record_consent(request, settings, hub, user, consent)
    response.headers["Location"] = f"/consents/{record['pseudonym']}/{record['purpose']}"
    return consent_resource(record)


def active_consents(hub: LedgerHub, hospital: str, purpose: str, page: PageParams) -> Page[dict[str, Any]]:
    """One page of a hospital's active consent records for a purpose, by pseudonym."""
    ledger = hub.of(hospital)
    pseudonyms: list[str] = ledger.evaluate("ConsentContract:list_active_consents", purpose, hospital_msp(hospital), "")
    window = pseudonyms[page.offset : page.offset + page.limit]
    records = [record for p in window if (record := _read(ledger, p, purpose)) is not None]
    return Page(items=records, total=len(pseudonyms), offset=page.offset, limit=page.limit)


def patient_consents(
    request: Request, settings: Settings, hub: LedgerHub, hospital: str, mrn: str
) -> list[dict[str, Any]]:
    """The current consent record per purpose of the patient with this MRN at the hospital (none if unknown).

    Only looks the MRN up: a patient the hospital never pseudonymised gets no pseudonym from a search.
    """
    with pseudonym_table(settings, hospital) as table:
        pseudonym = table.lookup(mrn)
    if pseudonym is None:
        return []
    request.state.audit_object = f"patient:{pseudonym}"
    versions: list[dict[str, Any]] = hub.of(hospital).evaluate("ConsentContract:consent_history", pseudonym)
    records = [v["value"] for v in versions if not v["is_delete"] and v["value"]["hospital"] == hospital_msp(hospital)]
    latest = {record["purpose"]: record for record in records}  # versions come oldest first per purpose
    return [latest[purpose] for purpose in sorted(latest)]


@router.get("", name="list_consents")
def list_consents(
    user: CurrentUser,
    hub: LedgerHubDep,
    page: PageDep,
    purpose: Annotated[str, Query(pattern=PURPOSE_PATTERN, description="Purpose of use.")] = "HRESCH",
) -> Page[FhirConsent]:
    """The hospital's active consents for a purpose, by pseudonym."""
    records = active_consents(hub, hospital_of(user), purpose, page)
    return Page(
        items=[consent_resource(r) for r in records.items], total=records.total, offset=page.offset, limit=page.limit
    )


@router.post("/search", name="search_patient_consents")
def search_patient_consents(
    request: Request, user: CurrentUser, settings: SettingsDep, hub: LedgerHubDep, query: MrnQuery, page: PageDep
) -> Page[FhirConsent]:
    """Every current consent (any purpose, active or not) of the patient with this MRN at the user's hospital."""
    records = patient_consents(request, settings, hub, hospital_of(user), query.mrn)
    window = records[page.offset : page.offset + page.limit]
    return Page(items=[consent_resource(r) for r in window], total=len(records), offset=page.offset, limit=page.limit)


@router.get("/{pseudonym}/{purpose}", name="read_consent")
def read_consent(
    request: Request, user: CurrentUser, hub: LedgerHubDep, pseudonym: PseudonymPath, purpose: PurposePath
) -> FhirConsent:
    """One consent of the user's hospital as a FHIR R4 Consent."""
    return consent_resource(_owned_record(request, hub.of(hospital_of(user)), user, pseudonym, purpose))


def withdraw(request: Request, hub: LedgerHub, user: User, pseudonym: str, purpose: str) -> dict[str, Any]:
    """Withdraw one of the user's hospital's consents on the ledger; the withdrawn record."""
    ledger = hub.of(hospital_of(user))
    record = _owned_record(request, ledger, user, pseudonym, purpose)
    if record["status"] != "active":
        raise ProblemError(409, "this consent is already withdrawn", field="pseudonym", location="path")
    try:
        withdrawn: dict[str, Any] = ledger.submit("ConsentContract:withdraw_consent", pseudonym, purpose).result
    except ContractRejected as error:
        raise contract_problem(error) from None
    return withdrawn


@router.post("/{pseudonym}/{purpose}/withdraw", name="withdraw_consent")
def withdraw_consent(
    request: Request, user: CurrentUser, hub: LedgerHubDep, pseudonym: PseudonymPath, purpose: PurposePath
) -> FhirConsent:
    """Withdraw a consent: from now on the patient is left out of every training round for this purpose."""
    return consent_resource(withdraw(request, hub, user, pseudonym, purpose))
