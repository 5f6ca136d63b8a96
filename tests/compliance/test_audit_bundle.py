"""Audit export bundles verify offline, and every kind of tampering fails verification naming the cause."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from compliance.bundle import MANIFEST, PROOFS, ExportFormat, export_bundle, verify_bundle
from compliance.records import AuditRecord
from fabric_network.identities import SigningIdentity

NO_FILTERS: dict[str, str | None] = {"from": None, "to": None, "actor": None}


def _export(records: list[AuditRecord], fmt: ExportFormat, out: Path, signer: SigningIdentity) -> Path:
    export_bundle(records, fmt, out, signer, ledger_height=len(records), filters=NO_FILTERS)
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
    request: pytest.FixtureRequest, tmp_path: Path, audit_records: list[AuditRecord], exporter: SigningIdentity
) -> tuple[Path, ExportFormat]:
    fmt: ExportFormat = request.param
    return _export(audit_records, fmt, tmp_path / f"export-{fmt.value}", exporter), fmt


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
            result = verify_bundle(directory, consortium_cas)
            assert not result.ok, f"flip at {name}:{offset} went unnoticed"
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


def test_swapped_manifest_is_named(
    tmp_path: Path, audit_records: list[AuditRecord], exporter: SigningIdentity, consortium_cas: list[x509.Certificate]
) -> None:
    first = _export(audit_records, ExportFormat.JSONL, tmp_path / "first", exporter)
    second = _export(audit_records[:-1], ExportFormat.JSONL, tmp_path / "second", exporter)
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
    exporter: SigningIdentity,
    consortium_cas: list[x509.Certificate],
) -> None:
    older = _export(audit_records[:9], fmt, tmp_path / "older", exporter)
    newer = _export(audit_records, fmt, tmp_path / "newer", exporter)
    result = verify_bundle(newer, consortium_cas, previous=older)
    assert result.ok, result.problems

    rewritten = list(audit_records)
    victim = rewritten[2]
    rewritten[2] = AuditRecord(**{**victim.__dict__, "purpose": "TREAT" if victim.purpose != "TREAT" else "HRESCH"})
    forged = _export(rewritten, fmt, tmp_path / "forged", exporter)
    assert verify_bundle(forged, consortium_cas).ok  # self-consistent on its own ...
    problems = verify_bundle(forged, consortium_cas, previous=older).problems  # ... but not with the past
    assert any(f"event {victim.event_id} (position 2) differs from the earlier export" in p for p in problems), problems


def test_consistency_needs_both_exports_in_one_format(
    tmp_path: Path, audit_records: list[AuditRecord], exporter: SigningIdentity, consortium_cas: list[x509.Certificate]
) -> None:
    older = _export(audit_records[:9], ExportFormat.JSONL, tmp_path / "older", exporter)
    newer = _export(audit_records, ExportFormat.CSV, tmp_path / "newer", exporter)
    problems = verify_bundle(newer, consortium_cas, previous=older).problems
    assert problems == [f"--previous {older}: format jsonl differs from csv; export both in one format"]
