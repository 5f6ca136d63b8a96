"""Audit export bundles verify offline, and every kind of tampering fails verification naming the cause."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from compliance.bundle import (
    MANIFEST,
    PROOFS,
    ExportedEvent,
    ExportFormat,
    export_bundle,
    fhir_event_problems,
    verify_bundle,
)
from compliance.records import AuditRecord
from fabric_network.identities import SigningIdentity
from fabric_network.merkle import merkle_root

NO_FILTERS: dict[str, str | None] = {"from": None, "to": None, "actor": None}


Signer = tuple[SigningIdentity, bytes]  # the exporting identity and the CA certificate that issued it


@pytest.fixture(scope="session")
def signer(exporter: SigningIdentity, exporter_ca_pem: bytes) -> Signer:
    return exporter, exporter_ca_pem


def _export(records: list[AuditRecord], fmt: ExportFormat, out: Path, signer: Signer) -> Path:
    identity, ca_pem = signer
    export_bundle(records, fmt, out, identity, ledger_height=len(records), filters=NO_FILTERS, signer_ca_pem=ca_pem)
    return out


def _edit_events(directory: Path, fmt: ExportFormat, edit: Callable[[list[Any]], None]) -> None:
    """Apply `edit` to the list of event units (CSV rows, JSON lines or Bundle entries) and write them back."""
    path = directory / fmt.events_file
    if fmt == ExportFormat.FHIR:
        bundle = json.loads(path.read_text())
        edit(bundle["entry"])
        path.write_text(json.dumps(bundle, indent=1) + "\n")
        return
    lines = path.read_text().splitlines()
    header, body = (lines[:1], lines[1:]) if fmt == ExportFormat.CSV else ([], lines)
    edit(body)
    path.write_text("\n".join(header + body) + "\n")


@pytest.fixture(params=list(ExportFormat), ids=lambda f: f.value)
def bundle(
    request: pytest.FixtureRequest, tmp_path: Path, audit_records: list[AuditRecord], signer: Signer
) -> tuple[Path, ExportFormat]:
    fmt: ExportFormat = request.param
    return _export(audit_records, fmt, tmp_path / f"export-{fmt.value}", signer), fmt


def test_a_fresh_export_verifies(bundle: tuple[Path, ExportFormat], consortium_cas: list[x509.Certificate]) -> None:
    directory, _ = bundle
    result = verify_bundle(directory, consortium_cas)
    assert result.ok, result.problems
    assert result.tree_size > 10


def test_flipping_any_byte_of_any_file_fails(
    bundle: tuple[Path, ExportFormat], consortium_cas: list[x509.Certificate]
) -> None:
    directory, fmt = bundle
    rng = random.Random(9162)
    for name in (fmt.events_file, PROOFS, MANIFEST):
        original = (directory / name).read_bytes()
        for offset in [0, len(original) - 2, *rng.sample(range(len(original)), 6)]:
            tampered = bytearray(original)
            tampered[offset] ^= 0x01
            (directory / name).write_bytes(bytes(tampered))
            problems = verify_bundle(directory, consortium_cas).problems
            # The cause names the damaged file: its digest differs, it no longer parses, or its signature fails.
            assert any(name in problem for problem in problems), (name, offset, problems)
            (directory / name).write_bytes(original)
    assert verify_bundle(directory, consortium_cas).ok


def _first_id(unit: Any, fmt: ExportFormat) -> str:
    if fmt == ExportFormat.FHIR:
        return str(unit["resource"]["id"])
    return str(json.loads(unit)["event_id"]) if fmt == ExportFormat.JSONL else str(unit.split(",", 1)[0])


def test_removed_event_is_named(bundle: tuple[Path, ExportFormat], consortium_cas: list[x509.Certificate]) -> None:
    directory, fmt = bundle
    removed: list[str] = []
    _edit_events(directory, fmt, lambda units: removed.append(_first_id(units.pop(3), fmt)))
    problems = verify_bundle(directory, consortium_cas).problems
    assert any(f"event {removed[0]} (position 3) was removed" in p for p in problems), problems


def test_duplicated_event_is_named(bundle: tuple[Path, ExportFormat], consortium_cas: list[x509.Certificate]) -> None:
    directory, fmt = bundle
    duplicated: list[str] = []

    def duplicate(units: list[Any]) -> None:
        units.insert(5, units[2])
        duplicated.append(_first_id(units[2], fmt))

    _edit_events(directory, fmt, duplicate)
    problems = verify_bundle(directory, consortium_cas).problems
    assert any(f"event {duplicated[0]} is duplicated" in p for p in problems), problems


def test_reordered_events_are_named(bundle: tuple[Path, ExportFormat], consortium_cas: list[x509.Certificate]) -> None:
    directory, fmt = bundle
    moved: list[str] = []

    def swap(units: list[Any]) -> None:
        units[1], units[4] = units[4], units[1]
        moved.append(_first_id(units[1], fmt))

    _edit_events(directory, fmt, swap)
    problems = verify_bundle(directory, consortium_cas).problems
    assert any("reordered" in p and f"holds event {moved[0]}" in p for p in problems), problems


def test_edited_event_is_named(bundle: tuple[Path, ExportFormat], consortium_cas: list[x509.Certificate]) -> None:
    directory, fmt = bundle
    edited: list[str] = []

    def edit(units: list[Any]) -> None:
        edited.append(_first_id(units[6], fmt))
        if fmt == ExportFormat.FHIR:
            units[6]["resource"]["outcome"] = "8"
        else:
            units[6] = units[6].replace("success", "serious-failure", 1)

    _edit_events(directory, fmt, edit)
    problems = verify_bundle(directory, consortium_cas).problems
    assert any(
        f"event {edited[0]} (position 6) fails its inclusion proof: its content was edited" in p for p in problems
    ), problems


def test_a_fabricated_event_is_named(bundle: tuple[Path, ExportFormat], consortium_cas: list[x509.Certificate]) -> None:
    """An event written into the bundle after export, well-formed and with a fresh id, is refused and named."""
    directory, fmt = bundle
    forged_id = "evt-" + "f" * 28

    def fabricate(units: list[Any]) -> None:
        genuine = units[4]
        original_id = _first_id(genuine, fmt)
        if fmt == ExportFormat.FHIR:
            forged = json.loads(json.dumps(genuine).replace(original_id, forged_id))
        else:
            forged = genuine.replace(original_id, forged_id)
        units.insert(5, forged)

    _edit_events(directory, fmt, fabricate)
    problems = verify_bundle(directory, consortium_cas).problems
    assert f"event {forged_id} was added: it is not part of the signed export" in problems, problems
    assert f"{fmt.events_file} was changed after export (its SHA-256 differs from the manifest's)" in problems
    assert any("does not match the manifest's" in p for p in problems), "the tree head must not cover it"


def test_swapped_manifest_is_named(
    tmp_path: Path, audit_records: list[AuditRecord], signer: Signer, consortium_cas: list[x509.Certificate]
) -> None:
    first = _export(audit_records, ExportFormat.JSONL, tmp_path / "first", signer)
    second = _export(audit_records[:-1], ExportFormat.JSONL, tmp_path / "second", signer)
    shutil.copy(second / MANIFEST, first / MANIFEST)
    problems = verify_bundle(first, consortium_cas).problems
    assert any("the manifest was swapped" in p for p in problems), problems


def test_an_added_file_is_named(bundle: tuple[Path, ExportFormat], consortium_cas: list[x509.Certificate]) -> None:
    directory, _ = bundle
    (directory / "events-extra.csv").write_text("event_id\nforged\n")
    assert verify_bundle(directory, consortium_cas).problems == [
        "events-extra.csv was added: it is not part of the signed export"
    ]


def test_a_signature_from_outside_the_consortium_fails(
    bundle: tuple[Path, ExportFormat], outsider_cas: list[x509.Certificate]
) -> None:
    directory, _ = bundle
    problems = verify_bundle(directory, outsider_cas).problems
    assert any("was not issued by any of the given consortium CA certificates" in p for p in problems), problems


@pytest.mark.parametrize("fmt", list(ExportFormat), ids=lambda f: f.value)
def test_consistency_between_successive_exports(
    fmt: ExportFormat,
    tmp_path: Path,
    audit_records: list[AuditRecord],
    signer: Signer,
    consortium_cas: list[x509.Certificate],
) -> None:
    older = _export(audit_records[:9], fmt, tmp_path / "older", signer)
    newer = _export(audit_records, fmt, tmp_path / "newer", signer)
    result = verify_bundle(newer, consortium_cas, previous=older)
    assert result.ok, result.problems

    rewritten = list(audit_records)
    victim = rewritten[2]
    rewritten[2] = AuditRecord(**{**victim.__dict__, "purpose": "TREAT" if victim.purpose != "TREAT" else "HRESCH"})
    forged = _export(rewritten, fmt, tmp_path / "forged", signer)
    assert verify_bundle(forged, consortium_cas).ok  # self-consistent on its own ...
    problems = verify_bundle(forged, consortium_cas, previous=older).problems  # ... but not with the past
    assert any(f"event {victim.event_id} (position 2) differs from the earlier export" in p for p in problems), problems


def test_consistency_needs_both_exports_in_one_format(
    tmp_path: Path, audit_records: list[AuditRecord], signer: Signer, consortium_cas: list[x509.Certificate]
) -> None:
    older = _export(audit_records[:9], ExportFormat.JSONL, tmp_path / "older", signer)
    newer = _export(audit_records, ExportFormat.CSV, tmp_path / "newer", signer)
    problems = verify_bundle(newer, consortium_cas, previous=older).problems
    assert problems == [f"--previous {older}: format jsonl differs from csv; export both in one format"]


@pytest.mark.parametrize("fmt", list(ExportFormat), ids=lambda f: f.value)
def test_an_independent_verifier_can_rebuild_every_leaf_from_the_documented_encoding(
    fmt: ExportFormat, tmp_path: Path, audit_records: list[AuditRecord], signer: Signer
) -> None:
    """A regulator's own tool reads the events file as the manifest's `leaf_encoding` spells it (no CareFed code),
    hashes each leaf per RFC 9162 and must find the bundle's leaf hashes and tree head; and the file says what the
    ledger holds (every column, block number and detail)."""
    directory = _export(audit_records, fmt, tmp_path / "export", signer)
    text = (directory / fmt.events_file).read_text(encoding="utf-8")
    if fmt == ExportFormat.FHIR:
        leaves = [
            json.dumps(e["resource"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            for e in json.loads(text)["entry"]
        ]
    else:
        lines = text.split("\n")
        assert lines[-1] == "", "the events file ends with one line end"
        leaves = lines[1:-1] if fmt == ExportFormat.CSV else lines[:-1]
    assert all("\r" not in leaf for leaf in leaves)
    proofs = [json.loads(line) for line in (directory / PROOFS).read_text().splitlines()[1:]]
    assert [p["leaf_hash"] for p in proofs] == [hashlib.sha256(b"\x00" + leaf.encode()).hexdigest() for leaf in leaves]
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["tree_head"] == merkle_root([leaf.encode() for leaf in leaves]).hex()
    assert manifest["tree_size"] == len(audit_records)

    if fmt == ExportFormat.CSV:
        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows == [record.to_row() for record in audit_records]
    elif fmt == ExportFormat.JSONL:
        values = [json.loads(leaf) for leaf in leaves]
        assert [v["block_number"] for v in values] == [r.block_number for r in audit_records]
        assert [v["detail"] for v in values] == [r.detail for r in audit_records]
        assert [v["event_id"] for v in values] == [r.event_id for r in audit_records]
    else:
        assert [json.loads(leaf)["id"] for leaf in leaves] == [r.event_id for r in audit_records]


def test_an_fhir_event_that_is_not_a_valid_audit_event_is_named(
    tmp_path: Path, audit_records: list[AuditRecord], signer: Signer
) -> None:
    """The FHIR check runs on every event that carries a resource, names the event, and ignores CSV/JSONL events."""
    directory = _export(audit_records[:3], ExportFormat.FHIR, tmp_path / "export", signer)
    resources = [e["resource"] for e in json.loads((directory / ExportFormat.FHIR.events_file).read_text())["entry"]]
    valid = ExportedEvent("ok", b"", resources[0])
    missing_type = ExportedEvent("no-type", b"", {k: v for k, v in resources[1].items() if k != "type"})
    not_balp = ExportedEvent("no-agent-who", b"", {**resources[2], "agent": [{"requestor": True}]})
    rows = ExportedEvent("csv-row", b"a,b,c")
    problems = fhir_event_problems([valid, missing_type, not_balp, rows])
    assert [p.split(":", 1)[0] for p in problems if "no-type" in p] == ["event no-type"]
    assert any(p.startswith("event no-type: not a valid FHIR AuditEvent (") for p in problems), problems
    assert any(p.startswith("event no-agent-who: ") for p in problems), problems
    assert not any("event ok" in p or "csv-row" in p for p in problems), problems


@pytest.mark.parametrize(("key", "value"), [("actor", "hospital-a"), ("from", "2026-01-01")])
def test_consistency_needs_the_same_filters(
    key: str,
    value: str,
    tmp_path: Path,
    audit_records: list[AuditRecord],
    signer: Signer,
    consortium_cas: list[x509.Certificate],
) -> None:
    """Two exports of differently filtered streams cannot prove a prefix relation: the differing filter is named
    with both values, whichever side carries it."""
    identity, ca_pem = signer
    filtered = {**NO_FILTERS, key: value}
    older = tmp_path / "older"
    export_bundle(audit_records[:5], ExportFormat.JSONL, older, identity, 5, filtered, ca_pem)
    newer = _export(audit_records, ExportFormat.JSONL, tmp_path / "newer", signer)
    assert verify_bundle(newer, consortium_cas, previous=older).problems == [
        f"--previous {older}: filter --{key} differs ({value} vs None)"
    ]
    newest = tmp_path / "newest"
    export_bundle(audit_records, ExportFormat.JSONL, newest, identity, len(audit_records), filtered, ca_pem)
    assert verify_bundle(newest, consortium_cas, previous=older).ok
    assert verify_bundle(newest, consortium_cas, previous=newer).problems == [
        f"--previous {newer}: filter --{key} differs (None vs {value})"
    ]


def test_a_re_export_of_the_same_events_is_consistent_and_a_longer_previous_is_not(
    tmp_path: Path, audit_records: list[AuditRecord], signer: Signer, consortium_cas: list[x509.Certificate]
) -> None:
    first = _export(audit_records, ExportFormat.CSV, tmp_path / "first", signer)
    again = _export(audit_records, ExportFormat.CSV, tmp_path / "again", signer)
    assert verify_bundle(again, consortium_cas, previous=first).ok
    shorter = _export(audit_records[:-1], ExportFormat.CSV, tmp_path / "shorter", signer)
    assert verify_bundle(shorter, consortium_cas, previous=first).problems == [
        f"--previous {first} has {len(audit_records)} events, more than this export's {len(audit_records) - 1}"
    ]
