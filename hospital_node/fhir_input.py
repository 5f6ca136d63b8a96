"""Reading FHIR R4 as hospitals export it, one resource at a time: a Bundle, a directory of Bundles, Bulk Data NDJSON.

Why streaming: a Bulk Data `$export` of a hospital is gigabytes; holding it (or its pydantic models) in memory
would make memory grow with the number of patients. Each reader yields one resource dict at a time with where it
came from (file and NDJSON line, or Bundle entry), so errors can name the exact spot and the caller keeps only
the few values it needs.

Why orjson and not `fhir.resources` for every resource: validating a whole Synthea export with pydantic models
runs at a few thousand resources/s, and most resources (Claims, ExplanationOfBenefits, …) are not used at all.
Resources are decoded with orjson; the ones the schema uses are checked field by field where they are read
(`hospital_node/ehr.py`), and Patients — few, and the source of the MRN — are validated with fhir.resources'
R4B model (R4B, not its default R5: R4 exports do not parse as R5).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

BUNDLE_SUFFIXES = (".json",)
NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")


class FhirInputError(ValueError):
    """The input cannot be read at all (no FHIR files in a directory, not a Bundle); names the path."""


@dataclass(frozen=True)
class Origin:
    """Where a resource came from: a file and its NDJSON line (1-based) or Bundle entry (0-based)."""

    file: Path
    line: int | None = None
    entry: int | None = None

    def describe(self, resource: Any = None) -> str:
        where = str(self.file)
        if self.line is not None:
            where += f" line {self.line}"
        if self.entry is not None:
            where += f" entry {self.entry}"
        if isinstance(resource, dict):
            kind, rid = resource.get("resourceType"), resource.get("id")
            if kind or rid:
                where += f" {kind or '?'}/{rid or '?'}"
        return where


@dataclass(frozen=True)
class Unreadable:
    """A line or entry that is not a JSON object with a resourceType: reported, never silently skipped."""

    origin: Origin
    reason: str
    resource: Any = None


Item = tuple[Origin, dict[str, Any]] | Unreadable


def is_fhir_path(path: Path) -> bool:
    """True for a directory, a Bundle (.json) or NDJSON file: the inputs `read_resources` understands."""
    name = path.name.lower()
    return path.is_dir() or name.endswith(BUNDLE_SUFFIXES) or name.endswith(NDJSON_SUFFIXES)


def fhir_files(path: Path) -> list[Path]:
    """The files to read, in a stable order: the path itself, or a directory's Bundles and NDJSON files."""
    if not path.exists():
        raise FileNotFoundError(f"data {path} does not exist")
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(BUNDLE_SUFFIXES + NDJSON_SUFFIXES)
    )
    if not files:
        raise FhirInputError(
            f"data directory {path} holds no FHIR files: expected Bundles (*.json) or Bulk Data NDJSON "
            "(*.ndjson, *.ndjson.gz)"
        )
    return files


def _open(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]  # GzipFile is a binary IO
    return path.open("rb")


def _read_ndjson(path: Path) -> Iterator[Item]:
    with _open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            origin = Origin(path, line=number)
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield Unreadable(origin, f"not valid JSON ({exc})")
                continue
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                yield Unreadable(origin, "not a FHIR resource: no resourceType", resource)
                continue
            yield origin, resource


def _read_bundle(path: Path) -> Iterator[Item]:
    try:
        bundle = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        yield Unreadable(Origin(path), f"not valid JSON ({exc})")
        return
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        kind = bundle.get("resourceType") if isinstance(bundle, dict) else type(bundle).__name__
        yield Unreadable(Origin(path), f"expected a FHIR Bundle, found {kind!r} (NDJSON files end in .ndjson)")
        return
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        yield Unreadable(Origin(path), "Bundle.entry is not a list")
        return
    for number, entry in enumerate(entries):
        origin = Origin(path, entry=number)
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            yield Unreadable(origin, "entry without a resource with a resourceType", resource)
            continue
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and resource["resourceType"] == "Patient":
            # The fullUrl is what `urn:uuid:` references point at; keep it beside the resource for aliasing.
            resource = {**resource, "_fullUrl": full_url}
        yield origin, resource


def read_resources(path: Path) -> Iterator[Item]:
    """Every resource of a Bundle, a directory of Bundles, or NDJSON files (`.gz` too), one at a time."""
    for file in fhir_files(path):
        if file.name.lower().endswith(NDJSON_SUFFIXES):
            yield from _read_ndjson(file)
        else:
            yield from _read_bundle(file)


def reference_id(reference: Any) -> str | None:
    """The logical id a reference points at, whatever its form.

    `urn:uuid:X` → X, `Patient/X` → X, `https://host/fhir/Patient/X/_history/2` → X. Bundles from Synthea use
    urn:uuid fullUrls, Bulk Data exports use `Patient/id`, some servers absolute URLs; all must meet.
    """
    if not isinstance(reference, str) or not reference:
        return None
    if reference.startswith("urn:uuid:") or reference.startswith("urn:oid:"):
        return reference[9:]
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return parts[-1] if len(parts) >= 2 else reference
