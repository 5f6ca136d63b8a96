"""What every CareFed contract shares: argument validation, caller checks, transaction time, state helpers.

Contracts run on two backends (the embedded ledger and Fabric peers), so everything here is deterministic:
time comes from the transaction timestamp, never the clock; no randomness; JSON is written canonically
(sorted keys, no spaces) so every endorsing peer writes byte-identical values.

Validation errors are :class:`ContractError` s whose message starts with the offending field's name and says
what is allowed — never the rejected value itself, so an identifier typed into the wrong field is not echoed
back into logs or error reports.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import jsonschema
import jsonschema_rs
from cryptography import x509

from fabric_network.identities import CONSORTIUM_ORG, msp_id_for
from fabric_network.merkle import merkle_root
from fabric_network.shim import TransactionContextInterface

CONSORTIUM_MSP = msp_id_for(CONSORTIUM_ORG)

#: FHIR v3 ActReason purpose-of-use codes CareFed accepts (code → display).
PURPOSE_CODES: dict[str, str] = {
    "HRESCH": "healthcare research",
    "BIORCH": "biomedical research",
    "CLINTRCH": "clinical trial research",
    "DSRCH": "disease-specific healthcare research",
    "TREAT": "treatment",
    "ETREAT": "emergency treatment",
    "HOPERAT": "healthcare operations",
    "HQUALIMP": "health quality improvement",
    "PUBHLTH": "public health",
    "POPHLTH": "population health",
    "HPAYMT": "healthcare payment",
    "PATRQT": "patient requested",
    "HCOMPL": "health compliance",
}

#: FHIR R4 Consent.scope codes (http://terminology.hl7.org/CodeSystem/consentscope).
CONSENT_SCOPES = ("research", "patient-privacy", "treatment", "adr")

PSEUDONYM = re.compile(r"^[0-9a-f]{64}$")
SHA256_HEX = PSEUDONYM
RECORD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_IDENTIFIER_LIKE = (
    re.compile(r"\d{6,}"),  # MRN-, phone- or account-like digit runs
    re.compile(r"\d{3}-\d{2}-\d{4}"),  # SSN-like
    re.compile(r"@"),  # e-mail-like
)
_HEX_TOKEN = re.compile(r"[0-9a-f]{32,}")
MAX_BATCH = 1000
DECISIONS = ("approve", "reject")


class ContractError(Exception):
    """A refused transaction: the message names the field (or the rule) and what is allowed."""


# --- values ---------------------------------------------------------------------------------------------------


def pseudonym(field: str, value: str) -> str:
    """A patient pseudonym: 64 lowercase hex characters (a random 256-bit value drawn by the hospital)."""
    if not isinstance(value, str) or not PSEUDONYM.fullmatch(value):
        raise ContractError(f"{field}: must be a pseudonym of 64 lowercase hex characters (a random 256-bit value)")
    return value


def purpose(field: str, value: str, *, optional: bool = False) -> str:
    """A FHIR v3 ActReason purpose-of-use code."""
    if optional and value == "":
        return value
    if value not in PURPOSE_CODES:
        raise ContractError(
            f"{field}: must be a FHIR v3 ActReason purpose code, one of {', '.join(sorted(PURPOSE_CODES))}"
        )
    return value


def record_id(field: str, value: str) -> str:
    """An id CareFed makes up (run, model, snapshot, actor): short, plain and not shaped like a personal identifier."""
    if not isinstance(value, str) or not RECORD_ID.fullmatch(value):
        raise ContractError(
            f"{field}: must be 1-128 characters of letters, digits and . _ : / - (starting with a letter or digit)"
        )
    no_hex = _HEX_TOKEN.sub("", value)
    if any(pattern.search(no_hex) for pattern in _IDENTIFIER_LIKE):
        raise ContractError(
            f"{field}: looks like a personal identifier (6+ digit run, SSN or e-mail shape); "
            "use a pseudonym or an opaque CareFed id"
        )
    return value


def opaque_id(prefix: str) -> str:
    """A fresh id that always passes :func:`record_id` (for callers, never inside a contract: it is random).

    Short random hex can contain a 6-digit run and be refused as identifier-shaped; a full 32-character hex
    token is exempt from that check, so ``<prefix>-<uuid4 hex>`` is always accepted.
    """
    import uuid

    return f"{prefix}-{uuid.uuid4().hex}"


def msp_id(field: str, value: str) -> str:
    """An MSP id such as ``HospitalAMSP``."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9.-]{0,62}MSP", value):
        raise ContractError(f"{field}: must be an MSP id such as HospitalAMSP")
    return value


def epsilon(field: str, value: str, *, allow_zero: bool = False) -> float:
    """A privacy-loss ε: a finite number in (0, 100] (or [0, 100] where zero is allowed)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ContractError(f"{field}: must be a number") from None
    low_ok = number >= 0 if allow_zero else number > 0
    if not math.isfinite(number) or not low_ok or number > 100:
        raise ContractError(f"{field}: must be a finite number in {'[0' if allow_zero else '(0'}, 100]")
    return number


def timestamp(field: str, value: str, *, optional: bool = False) -> str:
    """An ISO 8601 UTC instant, returned in CareFed's canonical form (see :func:`canonical_time`)."""
    if optional and value == "":
        return value
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError):
        raise ContractError(f"{field}: must be an ISO 8601 UTC time such as 2026-01-31T00:00:00Z") from None
    if parsed.tzinfo is None or parsed.utcoffset() != dt.timedelta(0):
        raise ContractError(f"{field}: must be in UTC (end with Z or +00:00)")
    return canonical_time(parsed)


def canonical_time(moment: dt.datetime, nanos: int | None = None) -> str:
    """Fixed-width UTC text (``2026-01-31T00:00:00.000000000Z``): sorts lexically in time order."""
    moment = moment.astimezone(dt.UTC)
    fraction = nanos if nanos is not None else moment.microsecond * 1000
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:09d}Z"


@functools.cache
def _validators(schema_json: str) -> tuple[Any, jsonschema.Draft202012Validator]:
    """Compiled validators per schema: the Rust one decides (about 100 times faster), jsonschema words the error."""
    schema = json.loads(schema_json)
    return jsonschema_rs.validator_for(schema), jsonschema.Draft202012Validator(schema)


def json_argument(field: str, value: str, schema: dict[str, Any]) -> Any:
    """Parse a JSON argument and check it against its JSON schema; the error names the failing path."""
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        raise ContractError(f"{field}: must be JSON") from None
    fast, descriptive = _validators(json.dumps(schema, sort_keys=True))
    if fast.is_valid(parsed):
        return parsed
    error = jsonschema.exceptions.best_match(descriptive.iter_errors(parsed))
    raise ContractError(_describe(field, error) if error else f"{field}: does not match its schema")


def _describe(field: str, error: jsonschema.ValidationError) -> str:
    path = field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    rule, allowed = error.validator, error.validator_value
    if rule == "required":
        missing = [name for name in allowed if isinstance(error.instance, dict) and name not in error.instance]
        return f"{path}.{missing[0] if missing else '?'}: is required"
    if rule == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"{path}.{extra[0] if extra else '?'}: is not a known field"
    if rule == "enum":
        return f"{path}: must be one of {', '.join(map(str, allowed))}"
    templates = {
        "type": "must be of type {}",
        "pattern": "must match {}",
        "minimum": "must be ≥ {}",
        "maximum": "must be ≤ {}",
        "exclusiveMinimum": "must be > {}",
        "minItems": "must have at least {} item(s)",
        "maxItems": "must have at most {} items",
        "maxLength": "must be at most {} characters",
        "minLength": "must be at least {} characters",
        "uniqueItems": "must not repeat items",
        "maxProperties": "must have at most {} entries",
        "propertyNames": "has a key that is not allowed",
    }
    return f"{path}: {templates.get(str(rule), 'fails the {} rule').format(allowed if rule in templates else rule)}"


# Reusable JSON-schema fragments.
SCHEMA_RECORD_ID: dict[str, Any] = {"type": "string", "pattern": RECORD_ID.pattern}
SCHEMA_SHA256: dict[str, Any] = {"type": "string", "pattern": SHA256_HEX.pattern}
SCHEMA_MSP_ID: dict[str, Any] = {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9.-]{0,62}MSP$"}
SCHEMA_EPSILON: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 100}
SCHEMA_METRICS: dict[str, Any] = {
    "type": "object",
    "maxProperties": 32,
    "propertyNames": {"pattern": r"^[a-z][a-z0-9_]{0,47}$"},
    "additionalProperties": {"type": "number"},
}


# --- the caller and the transaction ----------------------------------------------------------------------------


def caller_msp(ctx: TransactionContextInterface) -> str:
    """The submitting identity's MSP id (from the signed proposal)."""
    mspid = ctx.get_client_identity().get_mspid()
    if not mspid:
        raise ContractError("caller: the transaction carries no MSP id")
    return str(mspid)


def caller_role(ctx: TransactionContextInterface) -> str:
    """The submitting identity's NodeOU role (client, admin, peer or orderer) from its certificate's OU."""
    return _node_ou(bytes(ctx.get_client_identity().get_x509()))


@functools.lru_cache(maxsize=256)
def _node_ou(cert_pem: bytes) -> str:
    """The NodeOU of a certificate; cached because a node submits with the same few certificates all day."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except Exception:
        raise ContractError("caller: the transaction's creator certificate cannot be read") from None
    units = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)]
    for role in ("admin", "client", "peer", "orderer"):
        if role in units:
            return role
    raise ContractError("caller: the certificate has no NodeOU role (client, admin, peer or orderer)")


def require_hospital(ctx: TransactionContextInterface, roles: tuple[str, ...] = ("client", "admin")) -> str:
    """The caller must be a hospital org (not the consortium) acting as one of ``roles``; returns its MSP id."""
    mspid = caller_msp(ctx)
    if mspid == CONSORTIUM_MSP:
        raise ContractError(f"caller: only a hospital may do this, not {CONSORTIUM_MSP}")
    require_role(ctx, roles)
    return mspid


def require_consortium(ctx: TransactionContextInterface, roles: tuple[str, ...] = ("client", "admin")) -> str:
    """The caller must be the consortium org acting as one of ``roles``; returns its MSP id."""
    mspid = caller_msp(ctx)
    if mspid != CONSORTIUM_MSP:
        raise ContractError(f"caller: only the consortium ({CONSORTIUM_MSP}) may do this")
    require_role(ctx, roles)
    return mspid


def require_role(ctx: TransactionContextInterface, roles: tuple[str, ...]) -> str:
    """The caller's NodeOU role must be one of ``roles``."""
    role = caller_role(ctx)
    if role not in roles:
        raise ContractError(f"caller: role {role} may not do this (allowed: {', '.join(roles)})")
    return role


def tx_time(ctx: TransactionContextInterface) -> str:
    """The transaction's timestamp (from the signed proposal, so identical on every endorser), canonical UTC."""
    stamp = ctx.get_stub().get_tx_timestamp()
    moment = dt.datetime.fromtimestamp(stamp.seconds, tz=dt.UTC)
    return canonical_time(moment, stamp.nanos)


def tx_id(ctx: TransactionContextInterface) -> str:
    """The transaction id."""
    return str(ctx.get_stub().get_txid())


# --- votes ----------------------------------------------------------------------------------------------------


def majority(approvals: int, voters: int) -> bool:
    """The consortium's one decision rule: more than half of those entitled to vote approved."""
    return 2 * approvals > voters


def tally(voters: list[str], votes: dict[str, str]) -> dict[str, Any]:
    """Who approved, rejected and has not voted yet, and whether the majority is reached or out of reach."""
    approved = [v for v in voters if votes.get(v) == "approve"]
    rejected = [v for v in voters if votes.get(v) == "reject"]
    pending = [v for v in voters if v not in votes]
    return {
        "approved": approved,
        "rejected": rejected,
        "pending": pending,
        "needed": len(voters) // 2 + 1,
        "majority": majority(len(approved), len(voters)),
        "out_of_reach": not majority(len(approved) + len(pending), len(voters)),
    }


def decision(field: str, value: str) -> str:
    """A vote: ``approve`` or ``reject``."""
    if value not in DECISIONS:
        raise ContractError(f"{field}: must be approve or reject")
    return value


#: What a vote's outcome changes before the ballot is stored: gets the ballot (votes recorded) and its tally.
Settle = Callable[[dict[str, Any], dict[str, Any]], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Ballot:
    """A kind of record hospitals vote on (a membership proposal, a training run), for :func:`cast_vote`.

    The record lives under the key (``object_type``, its id); ``field`` is the id's argument name,
    ``missing`` the error when no record has that id. Its ``status`` must be ``open_status`` for votes, its
    ``voters`` field lists who may vote (``not_voter`` says who, to anyone else) and its ``votes`` maps a
    hospital to its decision; ``event`` names the chaincode event of a vote.
    """

    field: str
    object_type: str
    missing: str
    voters: str
    open_status: str
    not_voter: str
    event: str


async def cast_vote(
    ctx: TransactionContextInterface, ballot: Ballot, value: str, vote: str, settle: Settle | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A hospital's vote on the ballot record with id ``value``; returns (record, tally).

    One path for every consortium vote, so each checks the caller, the id, the decision, that voting is open
    and that the caller may vote, in the same order with the same kind of messages. The key is made only once
    ``value`` is checked (a composite key refuses an empty attribute with a message naming no field).
    ``settle`` applies the outcome (e.g. the membership change on a majority) before the record is stored.
    The closed-vote message names the ballot after its id field (``run_id`` → "run_id: the run is started;
    votes are closed").
    """
    hospital = require_hospital(ctx)
    field = ballot.field
    record_id(field, value)
    decision("vote", vote)
    state_key = key(ctx, ballot.object_type, value)
    record = await require_json(ctx, state_key, ballot.missing)
    if record["status"] != ballot.open_status:
        raise ContractError(f"{field}: the {field.removesuffix('_id')} is {record['status']}; votes are closed")
    if hospital not in record[ballot.voters]:
        raise ContractError(f"caller: {ballot.not_voter}")
    record["votes"][hospital] = vote
    counted = tally(record[ballot.voters], record["votes"])
    if settle is not None:
        await settle(record, counted)
    await put_json(ctx, state_key, record)
    emit(ctx, ballot.event, {field: value, "hospital": hospital, "vote": vote})
    return record, counted


# --- state ----------------------------------------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: what every endorser must write identically."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key(ctx: TransactionContextInterface, object_type: str, *attributes: str) -> str:
    """A Fabric composite key, one per record (so concurrent writers of different records never conflict)."""
    return str(ctx.get_stub().create_composite_key(object_type, list(attributes)))


async def get_json(ctx: TransactionContextInterface, state_key: str) -> dict[str, Any] | None:
    """The JSON record under ``state_key``, or None when absent."""
    raw = await ctx.get_stub().get_state(state_key)
    if not raw:
        return None
    value: dict[str, Any] = json.loads(raw)
    return value


async def require_json(ctx: TransactionContextInterface, state_key: str, missing: str) -> dict[str, Any]:
    """The stored record, or a ContractError saying `missing` (which names the argument that pointed at nothing)."""
    record = await get_json(ctx, state_key)
    if record is None:
        raise ContractError(missing)
    return record


async def put_json(ctx: TransactionContextInterface, state_key: str, value: dict[str, Any]) -> None:
    """Write a JSON record canonically."""
    await ctx.get_stub().put_state(state_key, canonical_json(value))


async def scan_json(ctx: TransactionContextInterface, object_type: str, *attributes: str) -> list[dict[str, Any]]:
    """All records under a partial composite key, in key order."""
    iterator = await ctx.get_stub().get_state_by_partial_composite_key(object_type, list(attributes))
    return [json.loads(kv.value) async for kv in iterator]


async def history_json(ctx: TransactionContextInterface, state_key: str) -> list[dict[str, Any]]:
    """Every version a key has had, oldest first, each with the writing ``tx_id`` and whether it was a delete."""
    iterator = await ctx.get_stub().get_history_for_key(state_key)
    versions = []
    async for modification in iterator:
        value = json.loads(modification.value) if modification.value else None
        versions.append({"tx_id": modification.tx_id, "is_delete": bool(modification.is_delete), "value": value})
    return versions


def emit(ctx: TransactionContextInterface, name: str, payload: dict[str, Any]) -> None:
    """The transaction's one chaincode event (Fabric keeps only the last ``set_event`` of a transaction)."""
    ctx.get_stub().set_event(name, canonical_json(payload))


def snapshot_root(pseudonyms: Iterable[str]) -> str:
    """A consent snapshot's tree head: RFC 9162 Merkle root over the *sorted* pseudonyms' 32 raw bytes, in hex.

    Anyone holding the pseudonym list (``list_active_consents``) recomputes it; an inclusion proof for one
    patient uses the same leaves (``bytes.fromhex(pseudonym)``) in the same sorted order.
    """
    return merkle_root([bytes.fromhex(p) for p in sorted(pseudonyms)]).hex()
