"""FHIR ingestion throughput on the Synthea patients (data/synthea-r4): Bundles and Bulk Data NDJSON.

    python -m bench.ingest [--schema data/synthea-r4/diabetes-leaky.toml] [--repeats 3] [--json]

Unpacks the three hospitals' Bundles, writes the same patients as a Bulk Data export (NDJSON per type, the
Observations split over a plain and a gzipped file), then times, in CPU seconds of this process (the machine is
shared, wall time would measure the neighbours), best of `--repeats`:

- `load_records` on the NDJSON export and on the Bundle directories (the schema's rules applied end to end);
- bare parsing of the same bytes with `orjson.loads` and with `json.loads` (line by line / file by file), the
  floor any reader has to pay.

Peak memory is measured in fresh processes loading one hospital and all three merged (about 3x the patients):
"memory flat" means the second is not about 3x the first. With --json the last line is one JSON object with
`ndjson_resources_per_s`, `bundle_resources_per_s`, `ndjson_patients_per_s`, `bundle_patients_per_s`,
`bare_orjson_resources_per_s`, `bare_json_resources_per_s`, `ratio_vs_bare_parse` (NDJSON load / bare orjson
parse), `peak_rss_mb` (all three hospitals), `peak_rss_mb_one_hospital` and `resources`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

import bench.script_mode  # noqa: F401  (first: `python bench/X.py` must find the packages, not bench/X.py)

SYNTHEA = Path(__file__).resolve().parents[1] / "data" / "synthea-r4"
HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")


def unpack(root: Path) -> list[Path]:
    """The three hospitals' Bundle directories, unpacked from the archives in the repository."""
    dirs = []
    for name in HOSPITALS:
        with tarfile.open(SYNTHEA / f"{name}.tar.xz") as archive:
            archive.extractall(root / name, filter="data")
        dirs.append(root / name)
    return dirs


def bulk_export(bundle_dirs: list[Path], out: Path) -> Path:
    """The patients of `bundle_dirs` as a Bulk Data export: NDJSON per type, `Type/id` references."""
    out.mkdir(parents=True)
    by_type: dict[str, list[bytes]] = {}
    for directory in bundle_dirs:
        for path in sorted(directory.glob("*.json")):
            entries = orjson.loads(path.read_bytes())["entry"]
            targets = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries}

            def rewrite(node: Any, targets: dict[str, str] = targets) -> Any:
                if isinstance(node, dict):
                    return {k: targets.get(v, v) if k == "reference" else rewrite(v) for k, v in node.items()}
                if isinstance(node, list):
                    return [rewrite(item) for item in node]
                return node

            for entry in entries:
                resource = rewrite(entry["resource"])
                by_type.setdefault(resource["resourceType"], []).append(orjson.dumps(resource) + b"\n")
    for kind, lines in by_type.items():
        if kind == "Observation":
            half = len(lines) // 2
            (out / f"{kind}.1.ndjson").write_bytes(b"".join(lines[:half]))
            (out / f"{kind}.2.ndjson.gz").write_bytes(gzip.compress(b"".join(lines[half:])))
        else:
            (out / f"{kind}.ndjson").write_bytes(b"".join(lines))
    return out


def _cpu(action: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        action()
        best = min(best, time.process_time() - started)
    return best


def _ndjson_lines(export: Path) -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted(export.iterdir()):
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        lines += data.splitlines()
    return lines


def _parse_all(parse: Callable[[bytes], Any], chunks: list[bytes]) -> None:
    """Parse each chunk and drop the result, as a streaming reader does (keeping them all costs GC time)."""
    for chunk in chunks:
        parse(chunk)


def _peak_rss_mb(data: list[Path], schema: Path) -> float:
    """Peak RSS (VmHWM) of a fresh process loading `data`.

    VmHWM, not getrusage's ru_maxrss: the latter survives exec and would report this (large) parent's peak.
    """
    script = (
        "import sys; from pathlib import Path; from hospital_node.data import DataSchema, load_records;"
        "schema = DataSchema.from_toml(Path(sys.argv[1]));"
        "[load_records(Path(p), schema) for p in sys.argv[2:]];"
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(schema), *map(str, data)], check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip())


def measure(schema_path: Path, repeats: int, work: Path) -> dict[str, Any]:
    from hospital_node.data import DataSchema, load_records

    schema = DataSchema.from_toml(schema_path)
    bundle_dirs = unpack(work / "bundles")
    export = bulk_export(bundle_dirs, work / "ndjson")
    one_hospital = bulk_export(bundle_dirs[:1], work / "ndjson-one")
    resources = len(_ndjson_lines(export))
    load_records(one_hospital, schema)  # warm-up: imports, the UCUM registry, fhir.resources' model classes
    reports: list[Any] = []
    ndjson_s = _cpu(lambda: reports.append(load_records(export, schema)), repeats)
    bundle_s = _cpu(lambda: [load_records(d, schema) for d in bundle_dirs], repeats)
    # The bare parses read and decompress the same files as the loader does (the NDJSON lines, the Bundle files).
    bare_orjson_s = _cpu(lambda: _parse_all(orjson.loads, _ndjson_lines(export)), repeats)
    bare_json_s = _cpu(lambda: _parse_all(json.loads, _ndjson_lines(export)), repeats)
    bundle_paths = [p for d in bundle_dirs for p in sorted(d.glob("*.json"))]
    bare_bundle_s = _cpu(lambda: _parse_all(orjson.loads, [p.read_bytes() for p in bundle_paths]), repeats)
    patients = reports[-1].ehr.patients_read
    return {
        "resources": resources,
        "patients": patients,
        "ndjson_cpu_s": ndjson_s,
        "bundle_cpu_s": bundle_s,
        "ndjson_resources_per_s": resources / ndjson_s,
        "bundle_resources_per_s": resources / bundle_s,
        "ndjson_patients_per_s": patients / ndjson_s,
        "bundle_patients_per_s": patients / bundle_s,
        "bare_orjson_resources_per_s": resources / bare_orjson_s,
        "bare_json_resources_per_s": resources / bare_json_s,
        "bare_orjson_bundle_resources_per_s": resources / bare_bundle_s,
        "ratio_vs_bare_parse": ndjson_s / bare_orjson_s,
        "ratio_vs_bare_json_parse": ndjson_s / bare_json_s,
        "bundle_ratio_vs_bare_parse": bundle_s / bare_bundle_s,
        "peak_rss_mb_one_hospital": _peak_rss_mb([one_hospital], schema_path),
        "peak_rss_mb": _peak_rss_mb([export], schema_path),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--schema", type=Path, default=SYNTHEA / "diabetes-leaky.toml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="carefed-ingest-") as work:
        figures = measure(args.schema, args.repeats, Path(work))
    table = Table(title=f"FHIR ingestion, {figures['resources']:,} resources, {figures['patients']} patients (CPU)")
    table.add_column("")
    table.add_column("resources/s", justify="right")
    table.add_column("patients/s", justify="right")
    table.add_row(
        "NDJSON, load_records", f"{figures['ndjson_resources_per_s']:,.0f}", f"{figures['ndjson_patients_per_s']:.0f}"
    )
    table.add_row(
        "Bundles, load_records", f"{figures['bundle_resources_per_s']:,.0f}", f"{figures['bundle_patients_per_s']:.0f}"
    )
    table.add_row("NDJSON, bare orjson.loads", f"{figures['bare_orjson_resources_per_s']:,.0f}", "")
    table.add_row("NDJSON, bare json.loads", f"{figures['bare_json_resources_per_s']:,.0f}", "")
    table.add_row("Bundles, bare orjson.loads", f"{figures['bare_orjson_bundle_resources_per_s']:,.0f}", "")
    console = Console()
    console.print(table)
    console.print(
        f"NDJSON load / bare orjson parse: {figures['ratio_vs_bare_parse']:.2f}x (json: "
        f"{figures['ratio_vs_bare_json_parse']:.2f}x); Bundles: {figures['bundle_ratio_vs_bare_parse']:.2f}x. "
        f"Peak RSS: {figures['peak_rss_mb_one_hospital']:.0f} MB for one hospital, {figures['peak_rss_mb']:.0f} MB "
        "for all three."
    )
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
