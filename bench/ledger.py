"""Durable audit events per second on the ledger, beside the raw SQLite insert rate of this machine (the limit).

    python bench/ledger.py [--events N] [--batch B] [--tx-events E] [--transactions T] [--state-dir D]
                           [--backend embedded|fabric|both] [--hospitals N] [--json]

Every figure is for *durable* writes: the embedded ledger commits with ``synchronous=FULL`` in WAL mode, and the
SQLite baseline inserts the same event JSON into a plain table with the same settings. Modes:

* ``single``  — one audit event per transaction per block, one ``submit`` per event (an API request's cost);
* ``blocks``  — ``submit_batch`` of B single-event transactions, one block (the outbox's path for other calls);
* ``events``  — ``append_audit_events`` transactions of E events each (default 1,000, the contract's maximum),
  T of them per ``submit_batch`` (the outbox's path for runs of audit events: one delivery carries several
  runs; on Fabric they are endorsed concurrently and share a block).

The headline ``events_per_s`` is the fastest batched mode, ``sqlite_insert_per_s`` the SQLite rate with the same
commit batching, ``p50_ms``/``p99_ms`` that mode's commit latency per submit call. With ``--state-dir`` the
ledger stays there, so ``carefed ledger verify --state-dir D`` checks what the benchmark wrote.
With ``--json`` the last line is one JSON object with keys backend, events_per_s, sqlite_insert_per_s,
ratio_vs_sqlite, p50_ms, p99_ms, single_p99_ms (a single-event submit's p99) and the per-mode details under
``modes``; with ``--backend both``, one such object per backend under ``results``.

``--backend fabric`` starts a Fabric network of ``--hospitals`` hospitals (default 3, the demo's; majority
endorsement, so 2 of 3 peers endorse every transaction) with `carefed fabric up` on free ports in the state
directory, and stops it afterwards; the calls go through hospital-a's gateway peer. On Fabric, ``blocks``
submits the B transactions concurrently so the orderer cuts them into the same block(s).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import bench.script_mode  # noqa: F401  (first: `python bench/X.py` must find the packages, not bench/X.py)

if TYPE_CHECKING:
    from fabric_network.ledger import Ledger

EVENT: dict[str, str] = {
    "actor": "svc-bench",
    "role": "service",
    "action": "model.predict",
    "object": "model:breast-cancer-mlp",
    "outcome": "success",
    "purpose": "TREAT",
}


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def sqlite_insert_rate(directory: Path, rows: int, batch: int) -> float:
    """Rows per second into a plain WAL table with ``synchronous=FULL``, committing every ``batch`` rows."""
    db = sqlite3.connect(directory / f"baseline-{batch}.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    body = json.dumps(EVENT).encode()
    start = time.perf_counter()
    for first in range(0, rows, batch):
        db.execute("BEGIN")
        db.executemany("INSERT INTO events (body) VALUES (?)", [(body,)] * min(batch, rows - first))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return rows / elapsed


def measure(
    name: str, submit: Callable[[int], int], events: int, per_call: int, progress: Progress
) -> dict[str, float]:
    """Call ``submit(n)`` (which durably writes n events and returns how many it wrote) until ``events`` are done."""
    latencies: list[float] = []
    written = 0
    task = progress.add_task(name, total=events)
    start = time.perf_counter()
    while written < events:
        began = time.perf_counter()
        written += submit(min(per_call, events - written))
        latencies.append(time.perf_counter() - began)
        progress.update(task, completed=written)
    elapsed = time.perf_counter() - start
    return {
        "events": written,
        "events_per_s": written / elapsed,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


def run_modes(
    ledger: Ledger, events: int, batch: int, tx_events: int, transactions: int, progress: Progress
) -> dict[str, dict[str, float]]:
    """The three modes on an open ledger."""
    from fabric_network.ledger import Call, TxResult

    def single(_: int) -> int:
        ledger.submit("AuditContract:append_audit_event", EVENT)
        return 1

    def blocks(n: int) -> int:
        outcomes = ledger.submit_batch([Call("AuditContract:append_audit_event", (EVENT,))] * n)
        return sum(isinstance(o, TxResult) for o in outcomes)

    def in_transactions(n: int) -> int:
        sizes = [min(tx_events, n - first) for first in range(0, n, tx_events)]
        outcomes = ledger.submit_batch([Call("AuditContract:append_audit_events", ([EVENT] * k,)) for k in sizes])
        return sum(len(o.result) for o in outcomes if isinstance(o, TxResult))

    return {
        "single": measure("single", single, max(50, events // 10), 1, progress),
        "blocks": measure("blocks", blocks, events, batch, progress),
        "events": measure("events", in_transactions, events, tx_events * transactions, progress),
    }


def run_backend(
    backend: str,
    state_dir: Path,
    events: int,
    batch: int,
    tx_events: int,
    transactions: int,
    progress: Progress,
    hospitals: int = 3,
) -> dict[str, dict[str, float]]:
    """The modes on the embedded ledger of ``state_dir``, or on a Fabric network of ``hospitals`` started there."""
    from fabric_network.identities import init_identities
    from fabric_network.ledger import open_ledger

    if backend == "embedded":
        init_identities(state_dir, ["hospital-a"])
        with open_ledger(state_dir=state_dir, org="hospital-a", batch_max_transactions=batch) as ledger:
            return run_modes(ledger, events, batch, tx_events, transactions, progress)
    from fabric_network.fabric import network
    from fabric_network.fabric.install import default_fabric_home

    init_identities(state_dir, [f"hospital-{chr(ord('a') + i)}" for i in range(hospitals)])
    network.up(state_dir, default_fabric_home(), hospitals, network.find_free_base_port(hospitals))
    try:
        with open_ledger(backend="fabric", state_dir=state_dir, org="hospital-a") as ledger:
            return run_modes(ledger, events, batch, tx_events, transactions, progress)
    finally:
        network.down(state_dir)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="events per batched mode (single runs a tenth)")
    parser.add_argument("--hospitals", type=int, default=3, help="hospitals of the Fabric network (2..26)")
    parser.add_argument("--batch", type=int, default=100, help="events per batch (1..1000)")
    parser.add_argument(
        "--tx-events", type=int, default=1000, help="events per append_audit_events transaction (1..1000)"
    )
    parser.add_argument(
        "--transactions", type=int, default=1, help="append_audit_events transactions per submit_batch (1..100)"
    )
    parser.add_argument("--state-dir", type=Path, help="keep the ledger here (default: a temporary directory)")
    parser.add_argument("--backend", choices=["embedded", "fabric", "both"], default="embedded")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    if not (1 <= args.batch <= 1000 and 1 <= args.tx_events <= 1000 and 1 <= args.transactions <= 100):
        parser.error("--batch and --tx-events must be 1..1000, --transactions 1..100")
    if args.events < 1:
        parser.error("--events must be ≥ 1")
    if not 2 <= args.hospitals <= 26:
        parser.error("--hospitals must be 2..26 (hospital-a … hospital-z)")

    console = Console(stderr=args.json)
    backends = ["embedded", "fabric"] if args.backend == "both" else [args.backend]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="carefed-bench-") as scratch:
        baseline_single = sqlite_insert_rate(Path(scratch), max(50, args.events // 10), 1)
        baseline_batched = sqlite_insert_rate(Path(scratch), args.events, args.batch)
        for backend in backends:
            state_dir = (args.state_dir or Path(scratch) / "state") / (backend if len(backends) > 1 else "")
            state_dir.mkdir(parents=True, exist_ok=True)
            with Progress(console=console, transient=True) as progress:
                try:
                    modes = run_backend(
                        backend,
                        state_dir,
                        args.events,
                        args.batch,
                        args.tx_events,
                        args.transactions,
                        progress,
                        args.hospitals,
                    )
                except RuntimeError as exc:  # FabricInstallError, NetworkError: say what to do, no traceback
                    raise SystemExit(f"bench/ledger.py --backend {backend}: {exc}") from None
            results[backend] = summarise(backend, modes, args.batch, baseline_single, baseline_batched, console)
    result: dict[str, Any] = results[backends[0]] if len(backends) == 1 else {"results": results}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return result


def summarise(
    backend: str,
    modes: dict[str, dict[str, float]],
    batch: int,
    baseline_single: float,
    baseline_batched: float,
    console: Console,
) -> dict[str, Any]:
    """Print one backend's table and return its JSON object."""
    best = max(("blocks", "events"), key=lambda m: modes[m]["events_per_s"])
    table = Table(title=f"Durable audit events/s, {backend} ledger vs SQLite (batch {batch})")
    for column in ("mode", "events/s", "p50 ms", "p99 ms", "SQLite rows/s", "ratio"):
        table.add_column(column, justify="right")
    for mode, figures in modes.items():
        limit = baseline_single if mode == "single" else baseline_batched
        table.add_row(
            mode,
            f"{figures['events_per_s']:,.0f}",
            f"{figures['p50_ms']:.2f}",
            f"{figures['p99_ms']:.2f}",
            f"{limit:,.0f}",
            f"{figures['events_per_s'] / limit:.3f}",
        )
    console.print(table)
    return {
        "backend": backend,
        "events_per_s": round(modes[best]["events_per_s"], 1),
        "sqlite_insert_per_s": round(baseline_batched, 1),
        "ratio_vs_sqlite": round(modes[best]["events_per_s"] / baseline_batched, 4),
        "p50_ms": round(modes[best]["p50_ms"], 3),
        "p99_ms": round(modes[best]["p99_ms"], 3),
        "headline_mode": best,
        "single_p99_ms": round(modes["single"]["p99_ms"], 3),
        "batch": batch,
        "sqlite_single_insert_per_s": round(baseline_single, 1),
        "modes": {m: {k: round(v, 3) for k, v in f.items()} for m, f in modes.items()},
    }


if __name__ == "__main__":
    main()
