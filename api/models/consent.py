"""Patient consent as FHIR R4 `Consent` resources, and its translation to and from the ledger's ConsentContract.

In: a hospital's Consent naming the patient by MRN (`patient.identifier`). It is validated with
`fhir.resources` (its R4B package: the Consent resource is unchanged between R4 4.0.1 and R4B) and then
against what CareFed records: one purpose of use (v3 ActReason), a consent scope, a permit provision and its
validity period. The MRN leaves this module only towards the hospital's pseudonym table; errors name fields,
never the values sent.

Out: the ledger's record as a Consent naming the patient by pseudonym, so what the API returns is exactly
what is on chain.
"""

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B.consent import Consent
from pydantic import BaseModel, Field, ValidationError

from api.core.problems import ProblemError, field_errors
from api.models.common import FieldError
from fabric_network.contracts.common import CONSENT_SCOPES, PURPOSE_CODES

ACT_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CONSENT_SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PSEUDONYM_SYSTEM = "urn:carefed:pseudonym"
CONSENT_KEY_SYSTEM = "urn:carefed:consent"
LOINC_PRIVACY_POLICY = {"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}
MRN_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
PSEUDONYM_PATTERN = r"^[0-9a-f]{64}$"

EXAMPLE_CONSENT: dict[str, Any] = {
    "resourceType": "Consent",
    "status": "active",
    "scope": {"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": "research"}]},
    "category": [{"coding": [LOINC_PRIVACY_POLICY]}],
    "patient": {"identifier": {"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-0042"}},
    "policyRule": {"coding": [{"system": ACT_CODE_SYSTEM, "code": "OPTIN"}]},
    "provision": {
        "type": "permit",
        "period": {"start": "2026-01-01T00:00:00Z", "end": "2031-01-01T00:00:00Z"},
        "purpose": [{"system": ACT_REASON_SYSTEM, "code": "HRESCH"}],
    },
}


@dataclass(frozen=True)
class ConsentGrant:
    """A validated consent to record: the MRN (kept out of repr, so it never reaches a log) and its terms."""

    mrn: str = field(repr=False)
    purpose: str
    scope: str
    valid_from: str
    valid_until: str


class MrnQuery(BaseModel):
    """A patient named by MRN; sent in a request body so the MRN never appears in a URL or an access log."""

    mrn: str = Field(min_length=1, max_length=64, pattern=MRN_PATTERN.pattern, description="The hospital's MRN.")


def consent_key(pseudonym: str, purpose: str) -> str:
    """The FHIR resource id of a ledger consent (one per pseudonym and purpose): 64 hex chars, FHIR's id limit."""
    return hashlib.sha256(f"{pseudonym}/{purpose}".encode()).hexdigest()


def _utc_text(value: dt.date | dt.datetime | str, name: str, errors: list[FieldError]) -> str:
    """A FHIR date or dateTime as the ledger's ISO 8601 UTC text; a bare date means midnight UTC."""
    if isinstance(value, str):
        try:
            value = (
                dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                if "T" in value
                else dt.date.fromisoformat(value)
            )
        except ValueError:
            errors.append(FieldError(field=name, location="body", message="must be a FHIR date or dateTime"))
            return ""
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if value.tzinfo is None:
        errors.append(FieldError(field=name, location="body", message="a dateTime with a time needs a time zone"))
        return ""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _problem(errors: list[FieldError], name: str, message: str) -> None:
    errors.append(FieldError(field=name, location="body", message=message))


def _codes(concept: Any, system: str) -> list[str]:
    """The codes of a CodeableConcept (or a bare Coding list) in one code system."""
    codings = getattr(concept, "coding", None) if not isinstance(concept, list) else concept
    return [c.code for c in codings or [] if c.system == system and c.code]


def parse_consent(body: Any, *, now: dt.datetime) -> ConsentGrant:
    """Validate a FHIR R4 Consent for recording; every problem is reported at once, naming its field."""
    if not isinstance(body, dict):
        raise ProblemError(422, "must be a FHIR Consent resource (a JSON object)", field="(root)")
    if body.get("resourceType") != "Consent":
        raise ProblemError(422, "must be 'Consent'", field="resourceType")
    try:
        consent = Consent.model_validate(body)
    except ValidationError as error:
        # Only the locations and rule messages: pydantic's input echo (which could hold the MRN) is dropped.
        raise ProblemError.invalid(field_errors(error.errors(include_input=False))) from None
    errors: list[FieldError] = []
    if consent.status != "active":
        _problem(errors, "status", "must be 'active' to record a consent (withdraw with POST …/withdraw)")
    scopes = [code for code in _codes(consent.scope, CONSENT_SCOPE_SYSTEM) if code in CONSENT_SCOPES]
    if len(scopes) != 1:
        _problem(errors, "scope", f"needs one coding of {CONSENT_SCOPE_SYSTEM}: {', '.join(CONSENT_SCOPES)}")
    mrn = ""
    patient = consent.patient
    if patient is None or patient.identifier is None or not patient.identifier.value:
        _problem(errors, "patient.identifier.value", "required: the patient's MRN at this hospital")
    elif patient.reference:
        _problem(errors, "patient.reference", "name the patient by identifier (MRN) only, not by reference")
    elif not MRN_PATTERN.fullmatch(patient.identifier.value):
        _problem(errors, "patient.identifier.value", "an MRN is 1-64 letters, digits and . _ / - characters")
    else:
        mrn = patient.identifier.value
    provision = consent.provision
    purposes: list[str] = []
    valid_from, valid_until = "", ""
    if provision is None:
        _problem(errors, "provision", "required: a permit provision with its purpose and period")
    else:
        if provision.type not in (None, "permit"):
            _problem(errors, "provision.type", "must be 'permit': a refusal is recorded by recording no consent")
        purposes = _codes(provision.purpose or [], ACT_REASON_SYSTEM)
        if len(purposes) != 1 or purposes[0] not in PURPOSE_CODES:
            _problem(
                errors,
                "provision.purpose",
                f"needs exactly one coding of {ACT_REASON_SYSTEM}, one of {', '.join(sorted(PURPOSE_CODES))}",
            )
        period = provision.period
        start = period.start if period and period.start else (consent.dateTime or now)
        valid_from = _utc_text(start, "provision.period.start", errors)
        if period and period.end:
            valid_until = _utc_text(period.end, "provision.period.end", errors)
            if valid_from and valid_until and valid_until <= valid_from:
                _problem(errors, "provision.period.end", "must be later than provision.period.start")
    if errors:
        raise ProblemError.invalid(errors)
    return ConsentGrant(mrn=mrn, purpose=purposes[0], scope=scopes[0], valid_from=valid_from, valid_until=valid_until)


def consent_resource(record: dict[str, Any]) -> dict[str, Any]:
    """A ledger consent record as a FHIR R4 Consent naming the patient by pseudonym (validated on the way out)."""
    provision_period = {"start": record["valid_from"]}
    if record.get("valid_until"):
        provision_period["end"] = record["valid_until"]
    resource = {
        "resourceType": "Consent",
        "id": consent_key(record["pseudonym"], record["purpose"]),
        "meta": {"lastUpdated": record["updated_at"]},
        "identifier": [{"system": CONSENT_KEY_SYSTEM, "value": f"{record['pseudonym']}/{record['purpose']}"}],
        # FHIR R4 has no "withdrawn" status: a consent that no longer applies is inactive.
        "status": "active" if record["status"] == "active" else "inactive",
        "scope": {"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": record["scope"]}]},
        "category": [{"coding": [LOINC_PRIVACY_POLICY]}],
        "patient": {"identifier": {"system": PSEUDONYM_SYSTEM, "value": record["pseudonym"]}},
        "dateTime": record["recorded_at"],
        "organization": [{"display": record["hospital"]}],
        "policyRule": {"coding": [{"system": ACT_CODE_SYSTEM, "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "period": provision_period,
            "purpose": [
                {"system": ACT_REASON_SYSTEM, "code": record["purpose"], "display": PURPOSE_CODES[record["purpose"]]}
            ],
        },
    }
    return Consent.model_validate(resource).model_dump(mode="json", exclude_none=True)
