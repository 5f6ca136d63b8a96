"""Audit export and offline verification throughput on the embedded ledger.

Writes N audit events (batches of 500) to a fresh embedded ledger, then times reading the trail from the
ledger, exporting it (JSON Lines and FHIR) and verifying each bundle. The limit a verifier cannot beat is
hashing the leaves and computing one RFC 9162 tree head; the verify/limit ratio says how far above it
`carefed audit verify` is (signature, digests, one inclusion proof per event, BALP checks).

    python -m bench.audit_export [--events N] [--state-dir D] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.progress import Progress

import bench.script_mode  # noqa: F401  (first: `python bench/X.py` must find the packages, not bench/X.py)

# isort: split
from compliance.bundle import ExportFormat, export_bundle, verify_bundle
from compliance.signing import consortium_ca_certificates, org_ca_pem
from compliance.trail import audit_trail
from fabric_network.identities import identity_for, init_identities
from fabric_network.ledger import open_ledger
from fabric_network.merkle import MerkleTree, leaf_hash

T = TypeVar("T")
BATCH = 500


def _timed(step: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = step()
    return result, time.perf_counter() - start


def _write_events(state_dir: Path, count: int) -> None:
    with open_ledger(state_dir=state_dir, org="hospital-a", role="client") as ledger, Progress() as progress:
        task = progress.add_task("writing audit events", total=count)
        for start in range(0, count, BATCH):
            events = [
                {
                    "actor": f"clinician-{i % 17}",
                    "role": "clinician",
                    "action": "model.predict" if i % 3 else "patient.read",
                    "object": "model:bench-model" if i % 3 else f"patient:{i:064x}",
                    "outcome": "success",
                    "purpose": "TREAT",
                }
                for i in range(start, min(start + BATCH, count))
            ]
            ledger.submit("AuditContract:append_audit_events", events)
            progress.advance(task, len(events))


def run(count: int, state_dir: Path) -> dict[str, float | int]:
    consortium = init_identities(state_dir, ["hospital-a"])
    _write_events(state_dir, count)
    signer = identity_for(consortium, "consortium", "admin")
    cas = consortium_ca_certificates(state_dir)
    with open_ledger(state_dir=state_dir, org="consortium", role="admin") as ledger:
        (records, height), read_s = _timed(lambda: audit_trail(ledger))
    figures: dict[str, float | int] = {"events": len(records), "read_s": read_s}
    for fmt in (ExportFormat.JSONL, ExportFormat.FHIR):
        out = state_dir / f"export-{fmt.value}"
        start = time.perf_counter()
        export_bundle(records, fmt, out, signer, height, {}, org_ca_pem(state_dir, "consortium"))
        figures[f"export_{fmt.value}_s"] = time.perf_counter() - start
        start = time.perf_counter()
        result = verify_bundle(out, cas)
        figures[f"verify_{fmt.value}_s"] = time.perf_counter() - start
        if not result.ok:
            raise SystemExit(f"bench bundle does not verify: {result.problems[:3]}")
    lines = (state_dir / "export-jsonl" / ExportFormat.JSONL.events_file).read_bytes().splitlines()
    _, figures["merkle_only_s"] = _timed(lambda: MerkleTree([leaf_hash(line) for line in lines]).root())
    figures["verify_jsonl_events_per_s"] = round(len(records) / figures["verify_jsonl_s"])
    figures["verify_vs_merkle_limit"] = round(figures["verify_jsonl_s"] / figures["merkle_only_s"], 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        figures = run(args.events, args.state_dir or Path(scratch))
    console = Console()
    for key, value in figures.items():
        console.print(f"{key:28} {value:.3f}" if isinstance(value, float) else f"{key:28} {value}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
