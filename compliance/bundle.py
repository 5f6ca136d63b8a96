"""Audit export bundles: events in one of three formats, inclusion proofs, and a signed manifest; and their
offline verification.

A bundle directory holds::

    events.csv | events.jsonl | events.fhir.json   the exported events, in ledger order
    proofs.jsonl                                    line 1: the bundle id; then per event its RFC 9162 audit path
    manifest.json                                   tree head, tree size, ledger height, file digests, filters,
                                                    the exporter's X.509 certificate and its ECDSA signature

The leaves of the Merkle tree are the events exactly as the format spells them: a CSV row (without its line
end), a JSON Lines line, or the canonical JSON (sorted keys, compact) of a FHIR AuditEvent. So a verifier needs
nothing but the bundle and the consortium's CA certificates, and two exports in the same format of the same
event stream can be proven consistent (the older one a prefix of the newer one).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import json
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from pydantic import ValidationError

from compliance.fhir_audit import audit_bundle_json, balp_problems
from compliance.formats import ExportFormat as ExportFormat  # re-exported: the bundle's formats
from compliance.records import COLUMNS, AuditRecord, canonical_json
from compliance.signing import certificate_subject, signature_problems
from fabric_network.identities import SigningIdentity
from fabric_network.merkle import (
    MerkleProofError,
    MerkleTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

EXPORT_VERSION = 1
MANIFEST = "manifest.json"
PROOFS = "proofs.jsonl"


class BundleError(ValueError):
    """A bundle that cannot be written or read at all; the message names the file and the fix."""


@dataclass(frozen=True)
class ExportedEvent:
    """One event as read back from a bundle: its id and the exact bytes that were hashed."""

    event_id: str
    leaf: bytes
    resource: dict[str, Any] | None = None  # the AuditEvent, for FHIR bundles


@dataclass
class VerifyResult:
    """The outcome of `carefed audit verify`: ok only when there is no problem at all."""

    directory: Path
    problems: list[str] = field(default_factory=list)
    tree_size: int = 0
    tree_head: str = ""
    ledger_height: int = 0
    signer: str = ""
    consistent_with: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


# --- writing ------------------------------------------------------------------------------------------------


def _csv_line(values: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue().removesuffix("\n")


def _jsonl_value(record: AuditRecord) -> dict[str, Any]:
    row: dict[str, Any] = record.to_row()
    row["block_number"] = record.block_number
    row["detail"] = record.detail
    return row


def _write_events(
    records: Sequence[AuditRecord], fmt: ExportFormat, path: Path, bundle_id: str, now: str
) -> list[bytes]:
    """Write the events file and return the leaves in order."""
    if fmt == ExportFormat.CSV:
        lines = [_csv_line([record.to_row()[c] for c in COLUMNS]) for record in records]
        path.write_text("\n".join([_csv_line(COLUMNS), *lines]) + "\n", encoding="utf-8")
        return [line.encode() for line in lines]
    if fmt == ExportFormat.JSONL:
        lines = [canonical_json(_jsonl_value(record)) for record in records]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return [line.encode() for line in lines]
    bundle = audit_bundle_json(list(records), bundle_id, now)
    path.write_text(json.dumps(bundle, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return [canonical_json(entry["resource"]).encode() for entry in bundle.get("entry", [])]


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _signed_bytes(manifest: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in manifest.items() if k != "signature"}).encode()


def export_bundle(
    records: Sequence[AuditRecord],
    fmt: ExportFormat,
    out_dir: Path,
    signer: SigningIdentity,
    ledger_height: int,
    filters: dict[str, str | None],
    signer_ca_pem: bytes,
) -> dict[str, Any]:
    """Write a signed, verifiable bundle of `records` (in ledger order) to `out_dir`; return its manifest.

    The manifest carries the signer's CA certificate (`signer_ca_pem`), so a verifier who pins that CA's
    fingerprint needs nothing but the bundle. Refuses a non-empty directory rather than mixing two exports' files.
    """
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BundleError(f"--out {out_dir}: the directory is not empty; give a new directory for each export")
    seen = Counter(record.event_id for record in records)
    duplicated = [event_id for event_id, n in seen.items() if n > 1]
    if duplicated:
        raise BundleError(f"event ids must be unique within an export; repeated: {', '.join(duplicated[:5])}")
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle_id = uuid.uuid4().hex  # hex: an opaque id the ledger accepts in an audit event object
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    leaves = _write_events(records, fmt, out_dir / fmt.events_file, bundle_id, now)
    tree = MerkleTree([leaf_hash(leaf) for leaf in leaves])
    with (out_dir / PROOFS).open("w", encoding="utf-8") as proofs:
        proofs.write(canonical_json({"bundle_id": bundle_id, "tree_size": tree.size}) + "\n")
        for index, record in enumerate(records):
            entry = {
                "index": index,
                "event_id": record.event_id,
                "leaf_hash": tree.leaf_hashes[index].hex(),
                "audit_path": [h.hex() for h in tree.inclusion_proof(index)],
            }
            proofs.write(canonical_json(entry) + "\n")
    manifest: dict[str, Any] = {
        "carefed_audit_export": EXPORT_VERSION,
        "bundle_id": bundle_id,
        "format": fmt.value,
        "events_file": fmt.events_file,
        "exported_at": now,
        "filters": filters,
        "ledger_height": ledger_height,
        "tree_size": tree.size,
        "tree_head": tree.root().hex(),
        "tree_algorithm": "RFC 9162 Merkle tree, SHA-256, leaf prefix 0x00, node prefix 0x01",
        "leaf_encoding": {
            "csv": "each data row without its line end, UTF-8",
            "jsonl": "each line without its line end, UTF-8",
            "fhir": "each entry.resource as JSON with sorted keys and no whitespace, UTF-8",
        }[fmt.value],
        "files": {name: _sha256_file(out_dir / name) for name in (fmt.events_file, PROOFS)},
        "signer": {
            "msp_id": signer.msp_id,
            "subject": certificate_subject(signer.cert_pem),
            "certificate": signer.cert_pem.decode(),
            "ca_certificate": signer_ca_pem.decode(),
        },
    }
    manifest["signature"] = base64.b64encode(signer.sign(_signed_bytes(manifest))).decode()
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


# --- reading ------------------------------------------------------------------------------------------------


def _read_events(fmt: ExportFormat, path: Path) -> list[ExportedEvent]:
    text = path.read_text(encoding="utf-8")
    if fmt == ExportFormat.CSV:
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if not rows or tuple(rows[0]) != COLUMNS:
            raise BundleError(f"{path.name}: the header is not the documented column set {', '.join(COLUMNS)}")
        return [ExportedEvent(row[0] if row else "", _csv_line(row).encode()) for row in rows[1:]]
    if fmt == ExportFormat.JSONL:
        events = []
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                event_id = str(json.loads(line).get("event_id", ""))
            except (json.JSONDecodeError, AttributeError):
                event_id = f"<line {number}: not a JSON object>"
            events.append(ExportedEvent(event_id, line.encode()))
        return events
    try:
        bundle = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path.name}: not JSON ({exc})") from None
    return [
        ExportedEvent(
            str(entry.get("resource", {}).get("id", "")),
            canonical_json(entry.get("resource")).encode(),
            entry.get("resource"),
        )
        for entry in bundle.get("entry", [])
    ]


@dataclass(frozen=True)
class _Proof:
    index: int
    event_id: str
    leaf_hash: bytes
    audit_path: list[bytes]


def _read_proofs(path: Path) -> tuple[str, list[_Proof]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0])
        proofs = [
            _Proof(
                p["index"], p["event_id"], bytes.fromhex(p["leaf_hash"]), [bytes.fromhex(h) for h in p["audit_path"]]
            )
            for p in map(json.loads, lines[1:])
        ]
    except (IndexError, KeyError, ValueError, TypeError) as exc:
        raise BundleError(f"{PROOFS}: malformed ({exc})") from None
    return str(header.get("bundle_id", "")), proofs


def _event_order_problems(events: list[ExportedEvent], proofs: list[_Proof]) -> list[str]:
    """Name removed, duplicated, added and reordered events by comparing against the signed proof list."""
    exported = [p.event_id for p in proofs]
    present = [e.event_id for e in events]
    expected_counts, actual_counts = Counter(exported), Counter(present)
    problems = []
    for event_id in exported:
        if expected_counts[event_id] and not actual_counts[event_id]:
            problems.append(f"event {event_id} (position {exported.index(event_id)}) was removed")
    for event_id, count in actual_counts.items():
        if event_id not in expected_counts:
            problems.append(f"event {event_id} was added: it is not part of the signed export")
        elif count > expected_counts[event_id]:
            problems.append(f"event {event_id} is duplicated ({count} times)")
    if not problems and present != exported:
        for position, (got, want) in enumerate(zip(present, exported, strict=True)):
            if got != want:
                problems.append(
                    f"events are reordered: position {position} holds event {got}, the export put {want} there"
                )
                break
    return problems


#: called as progress(events_checked, events_total) while a bundle's inclusion proofs are checked.
Progress = Callable[[int, int], None]


def _inclusion_problems(
    events: list[ExportedEvent], proofs: list[_Proof], size: int, root: bytes, progress: Progress | None = None
) -> list[str]:
    problems = []
    for position, (event, proof) in enumerate(zip(events, proofs, strict=False)):
        if progress is not None:
            progress(position + 1, len(events))
        if event.event_id != proof.event_id:
            continue  # already reported as removed/added/reordered
        hashed = leaf_hash(event.leaf)
        try:
            verify_inclusion(proof.index, size, hashed, proof.audit_path, root)
        except MerkleProofError as exc:
            cause = "its content was edited" if hashed != proof.leaf_hash else f"its inclusion proof is broken ({exc})"
            problems.append(f"event {event.event_id} (position {position}) fails its inclusion proof: {cause}")
    return problems


def fhir_event_problems(events: list[ExportedEvent]) -> list[str]:
    from fhir.resources.R4B.auditevent import AuditEvent

    problems = []
    for event in events:
        if event.resource is None:
            continue
        try:
            AuditEvent.model_validate(event.resource)
        except ValidationError as exc:
            problems.append(f"event {event.event_id}: not a valid FHIR AuditEvent ({exc.error_count()} errors)")
            continue
        problems.extend(f"event {event.event_id}: {p}" for p in balp_problems(event.resource))
    return problems


def _load_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory}: no {MANIFEST}; give the directory `carefed audit export` wrote")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{MANIFEST}: not JSON ({exc})") from None
    return manifest


def _bundle_leaves(directory: Path, manifest: dict[str, Any]) -> tuple[ExportFormat, list[ExportedEvent]]:
    try:
        fmt = ExportFormat(manifest["format"])
    except (KeyError, ValueError):
        raise BundleError(f"{MANIFEST}: format {manifest.get('format')!r} is not csv, jsonl or fhir") from None
    events_path = directory / fmt.events_file
    if not events_path.is_file():
        raise BundleError(f"{fmt.events_file} is missing from {directory}")
    return fmt, _read_events(fmt, events_path)


def carried_ca_pem(directory: Path) -> str:
    """The CA certificate (PEM) a bundle's manifest carries for its signer; trusted only once pinned."""
    ca_pem = _load_manifest(directory).get("signer", {}).get("ca_certificate")
    if not isinstance(ca_pem, str) or not ca_pem:
        raise BundleError(f"{directory}/{MANIFEST} carries no signer CA certificate; verify it with --ca instead")
    return ca_pem


def verify_bundle(
    directory: Path, cas: list[x509.Certificate], previous: Path | None = None, progress: Progress | None = None
) -> VerifyResult:
    """Check a bundle offline: signature and chain, file digests, tree head, every event's inclusion, the
    BALP profile of every FHIR AuditEvent, and with `previous` the RFC 9162 consistency of the two exports.

    Never raises on a tampered bundle: whatever cannot be read becomes a named problem.
    """
    result = VerifyResult(directory)
    try:
        _verify_into(result, directory, cas, previous, progress)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        result.problems.append(f"{MANIFEST} or a bundle file is malformed: {type(exc).__name__}: {exc}")
    return result


def _verify_into(
    result: VerifyResult,
    directory: Path,
    cas: list[x509.Certificate],
    previous: Path | None,
    progress: Progress | None,
) -> None:
    try:
        manifest = _load_manifest(directory)
        fmt, events = _bundle_leaves(directory, manifest)
        proof_bundle_id, proofs = _read_proofs(directory / PROOFS)
    except (BundleError, OSError, UnicodeDecodeError) as exc:
        result.problems.append(str(exc))
        return
    result.tree_size = int(manifest.get("tree_size", -1))
    result.tree_head = str(manifest.get("tree_head", ""))
    result.ledger_height = int(manifest.get("ledger_height", -1))
    result.signer = str(manifest.get("signer", {}).get("subject", ""))

    try:
        exported_at = dt.datetime.fromisoformat(str(manifest.get("exported_at")))
        signature = base64.b64decode(str(manifest.get("signature", "")), validate=True)
    except ValueError as exc:
        result.problems.append(f"{MANIFEST}: unreadable exported_at or signature ({exc})")
        return
    result.problems.extend(
        f"{MANIFEST}: {p}"
        for p in signature_problems(
            str(manifest.get("signer", {}).get("certificate", "")), _signed_bytes(manifest), signature, cas, exported_at
        )
    )
    if proof_bundle_id != manifest.get("bundle_id"):
        result.problems.append(
            f"{MANIFEST} is of export {manifest.get('bundle_id')} but {PROOFS} is of export {proof_bundle_id}: "
            "the manifest was swapped"
        )
    signed_files = dict(manifest.get("files", {}))
    for name, digest in signed_files.items():
        path = directory / name
        if not path.is_file():
            result.problems.append(f"{name} is missing")
        elif _sha256_file(path) != digest:
            result.problems.append(f"{name} was changed after export (its SHA-256 differs from the manifest's)")
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_file() and name != MANIFEST and name not in signed_files:
            result.problems.append(f"{name} was added: it is not part of the signed export")

    result.problems.extend(_event_order_problems(events, proofs))
    root = bytes.fromhex(result.tree_head) if len(result.tree_head) == 64 else b""
    result.problems.extend(_inclusion_problems(events, proofs, result.tree_size, root, progress))
    tree = MerkleTree([leaf_hash(e.leaf) for e in events])
    if tree.size != result.tree_size or tree.root() != root:
        result.problems.append(
            f"the tree head over the {tree.size} events in {fmt.events_file} ({tree.root().hex()[:16]}…) does not "
            f"match the manifest's ({result.tree_size} events, {result.tree_head[:16]}…)"
        )
    if fmt == ExportFormat.FHIR:
        result.problems.extend(fhir_event_problems(events))
    if previous is not None:
        result.consistent_with = previous
        result.problems.extend(_consistency_problems(manifest, tree, events, previous, cas))


def _consistency_problems(
    manifest: dict[str, Any], tree: MerkleTree, events: list[ExportedEvent], previous: Path, cas: list[x509.Certificate]
) -> list[str]:
    """RFC 9162 consistency: the previous export's signed tree must be a prefix of this one."""
    earlier = verify_bundle(previous, cas)
    if not earlier.ok:
        return [f"--previous {previous} does not verify: {p}" for p in earlier.problems]
    old = _load_manifest(previous)
    if old.get("format") != manifest.get("format"):
        older, newer = old.get("format"), manifest.get("format")
        return [f"--previous {previous}: format {older} differs from {newer}; export both in one format"]
    old_filters, new_filters = dict(old.get("filters", {})), dict(manifest.get("filters", {}))
    for key in ("from", "actor"):
        if old_filters.get(key) != new_filters.get(key):
            return [f"--previous {previous}: filter --{key} differs ({old_filters.get(key)} vs {new_filters.get(key)})"]
    old_size, old_root = int(old["tree_size"]), bytes.fromhex(old["tree_head"])
    if old_size > tree.size:
        return [f"--previous {previous} has {old_size} events, more than this export's {tree.size}"]
    try:
        verify_consistency(old_size, tree.size, old_root, tree.root(), tree.consistency_proof(old_size))
    except MerkleProofError as exc:
        _, old_events = _bundle_leaves(previous, old)
        for position, (before, now) in enumerate(zip(old_events, events, strict=False)):
            if before.leaf != now.leaf:
                return [
                    f"not consistent with --previous {previous}: event {before.event_id} (position {position}) "
                    f"differs from the earlier export — history was rewritten ({exc})"
                ]
        return [f"not consistent with --previous {previous}: {exc}"]
    return []
