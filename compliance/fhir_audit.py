"""Audit records as FHIR R4 AuditEvents following IHE Basic Audit Log Patterns (BALP) 1.1.4, and BALP checks.

FHIR: the resources are built and validated with ``fhir.resources.R4B`` (R4B's AuditEvent, Provenance and
Bundle are R4's; fhir.resources 8 ships R5 by default and R4B, not R4, as its older release).

Why CareFed checks BALP itself: fhir.resources validates structure and datatypes, not terminology or profiles —
it accepts ``action = "X"`` or a DICOM code that means something else. A regulator's tool would reject such an
export, so every exported AuditEvent passes :func:`balp_problems` first, which checks the fixed codes, the action
and outcome value sets and the required agent/entity slices of the profile the event claims in ``meta.profile``.

Sources: the BALP FSH at github.com/IHE/ITI.BasicAudit (input/fsh/PatientRead.fsh, PatientQuery.fsh,
PatientCreate.fsh, PatientUpdate.fsh, PatientDelete.fsh, AuthZ.fsh, Disclose.fsh). BALP defines no login
profile; logins follow DICOM PS3.15 A.5.3.8 "User Authentication" (type DCM 110114, subtype 110122 Login or
110123 Logout, action E), which CareFed checks the same way but cannot claim as a BALP profile.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from compliance.records import AuditRecord, EventKind, Outcome

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
AUTHZ_SUBTYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
OUTCOME_CODES = {
    Outcome.SUCCESS: "0",
    Outcome.MINOR_FAILURE: "4",
    Outcome.SERIOUS_FAILURE: "8",
    Outcome.MAJOR_FAILURE: "12",
}
PSEUDONYM_SYSTEM = "urn:carefed:pseudonym"
COHORT_SYSTEM = "urn:carefed:consent-snapshot-root"
ACTOR_SYSTEM = "urn:carefed:identity"
ORG_SYSTEM = "urn:carefed:msp-id"

Code = tuple[str, str]


@dataclass(frozen=True)
class ProfileRule:
    """What one BALP profile fixes: type, allowed subtypes, action, outcome, required agent/entity slices."""

    type: Code
    subtypes: frozenset[Code]
    action: str
    outcome: str | None  # None: any outcome of the value set
    agents: dict[str, Code]  # slice name -> agent.type coding that must be present once
    entities: dict[str, tuple[Code, Code | None]] = field(default_factory=dict)  # slice -> (type, role)


_PATIENT_ENTITY = ((ENTITY_TYPE, "1"), (OBJECT_ROLE, "1"))
_DATA_ENTITY = ((ENTITY_TYPE, "2"), (OBJECT_ROLE, "4"))
_QUERY_ENTITY = ((ENTITY_TYPE, "2"), (OBJECT_ROLE, "24"))
_SOURCE_ROLE = (DCM, "110153")
_DESTINATION_ROLE = (DCM, "110152")
_REST = (AUDIT_EVENT_TYPE, "rest")


def _rest(subtypes: set[str], action: str, client: Code, server: Code, main: str) -> ProfileRule:
    main_entity = _QUERY_ENTITY if main == "query" else _DATA_ENTITY
    return ProfileRule(
        _REST,
        frozenset((RESTFUL, s) for s in subtypes),
        action,
        "0",
        {"client": client, "server": server},
        {main: main_entity},
    )


def _with_patient(rule: ProfileRule) -> ProfileRule:
    return ProfileRule(
        rule.type,
        rule.subtypes,
        rule.action,
        rule.outcome,
        rule.agents,
        {**rule.entities, "patient": _PATIENT_ENTITY},
    )


_READ = _rest({"read", "vread"}, "R", _DESTINATION_ROLE, _SOURCE_ROLE, "data")
_CREATE = _rest({"create"}, "C", _SOURCE_ROLE, _DESTINATION_ROLE, "data")
_UPDATE = _rest({"update", "patch"}, "U", _SOURCE_ROLE, _DESTINATION_ROLE, "data")
_DELETE = _rest({"delete"}, "D", _SOURCE_ROLE, _DESTINATION_ROLE, "data")
_QUERY = _rest({"search", "search-type", "search-system"}, "E", _SOURCE_ROLE, _DESTINATION_ROLE, "query")

PROFILE_RULES: dict[str, ProfileRule] = {
    BALP + "Read": _READ,
    BALP + "PatientRead": _with_patient(_READ),
    BALP + "Create": _CREATE,
    BALP + "PatientCreate": _with_patient(_CREATE),
    BALP + "Update": _UPDATE,
    BALP + "PatientUpdate": _with_patient(_UPDATE),
    BALP + "Delete": _DELETE,
    BALP + "PatientDelete": _with_patient(_DELETE),
    BALP + "Query": _QUERY,
    BALP + "PatientQuery": _with_patient(_QUERY),
    BALP + "AuthZconsent": ProfileRule(
        (DCM, "110113"),
        frozenset({(AUTHZ_SUBTYPE, "AuthZ-Consent")}),
        "E",
        None,
        {
            "client": (DCM, "110150"),
            "user": (PARTICIPATION, "IRCP"),
            "userorg": (ROLE_CLASS, "PROV"),
            "authorizer": (SECURITY_ROLE, "authserver"),
        },
        {"patient": _PATIENT_ENTITY, "consent": ((RESOURCE_TYPES, "Consent"), None)},
    ),
    BALP + "PrivacyDisclosure.Source": ProfileRule(
        (DCM, "110106"),
        frozenset({(LIFECYCLE, "disclose")}),
        "R",
        None,
        {"source": _SOURCE_ROLE, "recipient": _DESTINATION_ROLE},
        {"patient": _PATIENT_ENTITY},
    ),
}
# Not a BALP profile (BALP has none for logins): DICOM's User Authentication event, checked the same way.
USER_AUTHENTICATION = ProfileRule(
    (DCM, "110114"), frozenset({(DCM, "110122"), (DCM, "110123")}), "E", None, {"user": (PARTICIPATION, "IRCP")}
)
_REST_KINDS = {
    EventKind.REST_READ: ("Read", "read"),
    EventKind.REST_CREATE: ("Create", "create"),
    EventKind.REST_UPDATE: ("Update", "update"),
    EventKind.REST_DELETE: ("Delete", "delete"),
    EventKind.REST_QUERY: ("Query", "search-type"),
}


def _coding(code: Code, display: str | None = None) -> dict[str, str]:
    coding = {"system": code[0], "code": code[1]}
    if display:
        coding["display"] = display
    return coding


def _concept(code: Code) -> dict[str, Any]:
    return {"coding": [_coding(code)]}


def _identity(system: str, value: str, display: str | None = None) -> dict[str, Any]:
    reference: dict[str, Any] = {"identifier": {"system": system, "value": value}}
    if display:
        reference["display"] = display
    return reference


def _agent(type_: Code, who: dict[str, Any], requestor: bool, **extra: Any) -> dict[str, Any]:
    return {"type": _concept(type_), "who": who, "requestor": requestor, **extra}


def _network(address: str) -> dict[str, str]:
    return {"address": address, "type": "1"}  # 1 = machine name


def _patient_entity(record: AuditRecord) -> dict[str, Any] | None:
    """The patient by pseudonym; a cohort (many patients) by the root of its consent snapshot."""
    if record.patient:
        what = {"type": "Patient", **_identity(PSEUDONYM_SYSTEM, record.patient)}
    elif record.detail.get("snapshot_root"):
        what = {
            "type": "Patient",
            **_identity(COHORT_SYSTEM, str(record.detail["snapshot_root"]), "patients of a consent snapshot"),
        }
    else:
        return None
    return {"type": _coding(_PATIENT_ENTITY[0]), "role": _coding((OBJECT_ROLE, "1")), "what": what}


def _profile_and_body(record: AuditRecord) -> tuple[str | None, dict[str, Any]]:
    actor = _identity(ACTOR_SYSTEM, record.actor, record.actor)
    org = _identity(ORG_SYSTEM, record.organisation, record.organisation)
    service = _identity(ACTOR_SYSTEM, "carefed", "CareFed consortium ledger")
    purpose = [_concept((ACT_REASON, record.purpose))] if record.purpose else []
    user = _agent((PARTICIPATION, "IRCP"), actor, True, role=[{"text": record.role}], purposeOfUse=purpose or None)
    patient = _patient_entity(record)
    body: dict[str, Any]

    if record.kind in _REST_KINDS or record.kind == EventKind.TRAINING_DATA_USE:
        name, subtype = _REST_KINDS.get(record.kind, ("Query", "search-type"))
        rule = PROFILE_RULES[BALP + name]
        client_type, server_type = rule.agents["client"], rule.agents["server"]
        entities = []
        if name == "Query":
            query = f"{record.action}?object={record.object}&purpose={record.purpose}"
            entities.append(
                {
                    "type": _coding(_QUERY_ENTITY[0]),
                    "role": _coding(_QUERY_ENTITY[1] or _QUERY_ENTITY[0]),
                    "query": base64.b64encode(query.encode()).decode(),
                    "description": query,
                }
            )
        else:
            entities.append(
                {
                    "type": _coding(_DATA_ENTITY[0]),
                    "role": _coding((OBJECT_ROLE, "4")),
                    "what": {"display": record.object},
                }
            )
        if patient:
            entities.append(patient)
            name = "Patient" + name
        body = {
            "type": _coding(_REST),
            "subtype": [_coding((RESTFUL, subtype))],
            "action": rule.action,
            "agent": [
                _agent(client_type, org, False, network=_network(record.organisation)),
                _agent(server_type, service, False, network=_network("carefed")),
                user,
            ],
            "entity": entities,
        }
        profile = BALP + name if record.outcome == Outcome.SUCCESS else None  # BALP records failures differently
        return profile, body

    if record.kind == EventKind.CONSENT_DECISION:
        rule = PROFILE_RULES[BALP + "AuthZconsent"]
        entities = [
            {"type": _coding(rule.entities["consent"][0]), "what": {"display": record.object}},
        ]
        if patient:
            entities.insert(0, patient)
        body = {
            "type": _coding(rule.type, "Security Alert"),
            "subtype": [_coding((AUTHZ_SUBTYPE, "AuthZ-Consent"))],
            "action": "E",
            "purposeOfEvent": purpose or None,
            "agent": [
                _agent(rule.agents["client"], org, False, network=_network(record.organisation)),
                user,
                _agent(rule.agents["userorg"], org, False),
                _agent(rule.agents["authorizer"], service, False),
            ],
            "entity": entities,
        }
        return (BALP + "AuthZconsent" if patient else None), body

    if record.kind == EventKind.DISCLOSURE:
        rule = PROFILE_RULES[BALP + "PrivacyDisclosure.Source"]
        recipient = record.recipient or "unknown recipient"
        entities = [
            {
                "type": _coding((ENTITY_TYPE, "2")),
                "role": _coding((OBJECT_ROLE, "3")),
                "what": {"display": record.object},
            }
        ]
        if patient:
            entities.insert(0, patient)
        body = {
            "type": _coding(rule.type, "Export"),
            "subtype": [_coding((LIFECYCLE, "disclose"))],
            "action": "R",
            "purposeOfEvent": purpose or None,
            "agent": [
                _agent(_SOURCE_ROLE, org, False, network=_network(record.organisation)),
                _agent(
                    _DESTINATION_ROLE, _identity(ACTOR_SYSTEM, recipient, recipient), False, network=_network(recipient)
                ),
                user,
            ],
            "entity": entities,
        }
        # BALP requires the patient whose data was disclosed; without one (e.g. an audit export) none is claimed.
        return (BALP + "PrivacyDisclosure.Source" if patient else None), body

    if record.kind in (EventKind.LOGIN, EventKind.LOGOUT):
        login_or_out = (DCM, "110122") if record.kind == EventKind.LOGIN else (DCM, "110123")
        body = {
            "type": _coding(USER_AUTHENTICATION.type, "User Authentication"),
            "subtype": [_coding(login_or_out)],
            "action": "E",
            "agent": [user, _agent((SECURITY_ROLE, "authserver"), service, False)],
        }
        return None, body

    # Any other ledger transaction (run registered, budget set, erasure, ...): DICOM "Application Activity",
    # the CareFed action as subtype; no BALP profile describes these, so none is claimed.
    body = {
        "type": _coding((DCM, "110100"), "Application Activity"),
        "subtype": [{"system": "urn:carefed:action", "code": record.action}],
        "action": "E",
        "purposeOfEvent": purpose or None,
        "agent": [user, _agent((ROLE_CLASS, "PROV"), org, False)],
        "entity": [{"type": _coding((ENTITY_TYPE, "2")), "what": {"display": record.object}}],
    }
    if patient:
        body["entity"].insert(0, patient)
    return None, body


def audit_event_json(record: AuditRecord) -> dict[str, Any]:
    """The AuditEvent for one record as a JSON object, validated by fhir.resources."""
    profile, body = _profile_and_body(record)
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": record.event_id,
        **({"meta": {"profile": [profile]}} if profile else {}),
        **{k: v for k, v in body.items() if v is not None},
        "recorded": record.time,
        "outcome": OUTCOME_CODES[record.outcome],
        "source": {
            "site": "carefed",
            "observer": _identity(ORG_SYSTEM, record.organisation, record.organisation),
            "type": [_coding((SOURCE_TYPE, "4"), "Application Server")],
        },
    }
    for agent in resource.get("agent", []):
        if agent.get("purposeOfUse") is None:
            agent.pop("purposeOfUse", None)
    # Ledger facts without a BALP slot ride along as entity details (non-identifying by construction).
    detail = {"tx_id": record.tx_id, "block_number": record.block_number, "carefed_action": record.action}
    detail.update({k: v for k, v in record.detail.items() if isinstance(v, str | int | float)})
    resource.setdefault("entity", []).append(
        {
            "type": _coding((ENTITY_TYPE, "2")),
            "role": _coding((OBJECT_ROLE, "13")),
            "what": {"identifier": {"system": "urn:carefed:ledger-tx", "value": record.tx_id}},
            "detail": [{"type": k, "valueString": str(v)} for k, v in sorted(detail.items()) if str(v)],
        }
    )
    AuditEvent.model_validate(resource)  # raises on any structural error; the dict is what gets written
    return resource


def audit_bundle_json(records: list[AuditRecord], bundle_id: str, timestamp: str) -> dict[str, Any]:
    """A collection Bundle of AuditEvents, validated by fhir.resources; each must pass the BALP checks."""
    entries = []
    for record in records:
        event = audit_event_json(record)
        problems = balp_problems(event)
        if problems:
            raise ValueError(f"AuditEvent {record.event_id} breaks its profile: {'; '.join(problems)}")
        full_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'urn:carefed:audit-event:' + record.event_id)}"
        entries.append({"fullUrl": full_url, "resource": event})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": bundle_id, "type": "collection", "timestamp": timestamp}
    # Each AuditEvent was validated above; validating the envelope with them all again would double the cost
    # (fhir.resources needs ~10 ms per AuditEvent), so the Bundle is validated with its entry URLs alone.
    Bundle.model_validate({**bundle, "entry": [{"fullUrl": e["fullUrl"]} for e in entries]} if entries else bundle)
    if entries:
        bundle["entry"] = entries
    return bundle


def _codes(codings: list[dict[str, Any]] | None) -> set[Code]:
    return {(c.get("system", ""), c.get("code", "")) for c in codings or []}


def _agent_types(agent: dict[str, Any]) -> set[Code]:
    return _codes(agent.get("type", {}).get("coding"))


def balp_problems(event: dict[str, Any]) -> list[str]:
    """Everything in one AuditEvent JSON object that breaks its BALP profile (or DICOM login rules); [] if none."""
    problems: list[str] = []
    action, outcome = event.get("action"), event.get("outcome")
    if action not in {"C", "R", "U", "D", "E"}:
        problems.append(f"action {action!r} is not one of C, R, U, D, E")
    if outcome not in set(OUTCOME_CODES.values()):
        problems.append(f"outcome {outcome!r} is not one of 0, 4, 8, 12")
    if not event.get("recorded"):
        problems.append("recorded is missing")
    profiles = event.get("meta", {}).get("profile", [])
    unknown = [p for p in profiles if p.startswith(BALP) and p not in PROFILE_RULES]
    problems.extend(f"meta.profile {p} is not a BALP 1.1.4 AuditEvent profile" for p in unknown)
    type_code = (event.get("type", {}).get("system", ""), event.get("type", {}).get("code", ""))
    rules = [(p.removeprefix(BALP), PROFILE_RULES[p]) for p in profiles if p in PROFILE_RULES]
    if not rules and type_code == USER_AUTHENTICATION.type:
        rules = [("User Authentication", USER_AUTHENTICATION)]
    for name, rule in rules:
        problems.extend(f"{name}: {p}" for p in _rule_problems(event, rule, type_code))
    return problems


def _rule_problems(event: dict[str, Any], rule: ProfileRule, type_code: Code) -> list[str]:
    problems = []
    if type_code != rule.type:
        problems.append(f"type is {type_code[0]}#{type_code[1]}, the profile fixes {rule.type[0]}#{rule.type[1]}")
    if not _codes(event.get("subtype")) & rule.subtypes:
        wanted = ", ".join(sorted(f"{s}#{c}" for s, c in rule.subtypes))
        problems.append(f"subtype needs one of {wanted}")
    if event.get("action") != rule.action:
        problems.append(f"action is {event.get('action')!r}, the profile fixes {rule.action!r}")
    if rule.outcome is not None and event.get("outcome") != rule.outcome:
        problems.append(f"outcome is {event.get('outcome')!r}, the profile fixes {rule.outcome!r}")
    agents = event.get("agent", [])
    for slice_name, agent_type in rule.agents.items():
        matching = [a for a in agents if agent_type in _agent_types(a)]
        if len(matching) != 1:
            problems.append(f"agent[{slice_name}] ({agent_type[1]}) must appear once, found {len(matching)}")
        elif not matching[0].get("who"):
            problems.append(f"agent[{slice_name}].who is missing")
    entities = event.get("entity", [])
    for slice_name, (entity_type, entity_role) in rule.entities.items():
        matching = [
            e
            for e in entities
            if (e.get("type", {}).get("system"), e.get("type", {}).get("code")) == entity_type
            and (entity_role is None or (e.get("role", {}).get("system"), e.get("role", {}).get("code")) == entity_role)
        ]
        if not matching:
            problems.append(f"entity[{slice_name}] ({entity_type[1]}) is missing")
        elif slice_name == "patient" and matching[0].get("what", {}).get("type") != "Patient":
            problems.append("entity[patient].what must reference a Patient")
        elif slice_name == "query" and not matching[0].get("query"):
            problems.append("entity[query].query is missing")
    return problems
