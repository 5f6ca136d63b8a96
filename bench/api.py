"""Prediction latency and capacity of the CareFed service, with the audit trail on and off, and a soak run.

Starts the real service (`carefed api --workers N`, uvicorn, in its own processes) on a fresh consortium with a
registered model — the same one the API tests register — signs in as a clinician and sends
`POST /models/{id}/predict` open-loop at a fixed rate. Latency is counted from each request's *scheduled* send
time, so a stalled server cannot hide behind a client that waits for it (no coordinated omission).

- Default: `--rps` for `--duration` seconds with auditing on, then off (the difference is what auditing every
  request through the ledger's durable outbox costs); then, auditing on, rates rising from `--rps` until p99
  exceeds 50 ms or the service falls behind: `max_rps_p99_under_50ms` is the highest rate that held.
- `--soak`: `--rps` for `--duration` seconds, auditing on; then waits for the outboxes to reach the ledger and
  counts the bench user's prediction events there: `soak_requests`, `soak_errors` (must be 0) and
  `soak_audit_events` (must equal `soak_requests`: nothing lost, nothing recorded twice across workers).

Every figure comes with the server's CPU time per request (all its processes: workers and audit delivery) and
the machine's load average, because wall-clock latency on a shared machine says as much about the neighbours.

    python -m bench.api [--rps 100] [--duration 10] [--workers 2] [--soak] [--state-dir D] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from sqlmodel import Session, select

import bench.script_mode  # noqa: F401  (first: `python bench/X.py` must find the packages, not bench/X.py)

# isort: split
from api.core.config import Settings
from api.core.db import make_engine, upgrade_to_head
from api.core.security import hash_password
from api.models.user import Role, User
from fabric_network.identities import init_identities
from fabric_network.ledger import open_ledger
from tests.api.model_fixture import register_model  # the registered model the API tests use

REPO = Path(__file__).resolve().parents[1]

console = Console(stderr=True)
PASSWORD = "bench-password-long"
USER = "bench"
HOSPITAL = "hospital-a"
WARM_UP_S = 2.0
START_TIMEOUT_S = 600.0  # two workers importing torch on a machine at load 20+ take minutes
WARM_UP_REQUESTS = 20
P99_BAR_MS = 50.0
RATE_STEPS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)  # multiples of --rps tried by the capacity search
AUDIT_QUERY_LIMIT = 10_000  # the AuditContract's largest page


@dataclass
class Level:
    """One open-loop run at a fixed rate."""

    rate: float
    latencies_ms: list[float]
    achieved_rps: float
    requests: int
    errors: int
    cpu_s: float

    @property
    def p50(self) -> float:
        return float(np.percentile(self.latencies_ms, 50)) if self.latencies_ms else float("inf")

    @property
    def p99(self) -> float:
        return float(np.percentile(self.latencies_ms, 99)) if self.latencies_ms else float("inf")

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_s / max(self.requests, 1)

    @property
    def held(self) -> bool:
        """p99 within the bar, no errors, and the service kept up with the offered rate."""
        return self.errors == 0 and self.p99 <= P99_BAR_MS and self.achieved_rps >= 0.97 * self.rate


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare(state_dir: Path) -> tuple[str, dict[str, float], int]:
    """A consortium, a registered model and a clinician: the model id, one patient's features, the user id."""
    init_identities(state_dir, [HOSPITAL])
    model = register_model(state_dir)
    engine = make_engine(Settings(state_dir=state_dir).resolved_database_url)
    upgrade_to_head(engine)
    with Session(engine) as session:
        session.add(User(username=USER, role=Role.clinician, hospital=HOSPITAL, password_hash=hash_password(PASSWORD)))
        session.commit()
        user_id = session.exec(select(User.id).where(User.username == USER)).one()
    engine.dispose()
    assert user_id is not None
    return model.model_id, model.benign_example, user_id


def start_service(state_dir: Path, audit: bool, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "CAREFED_API_AUDIT_ENABLED": "true" if audit else "false",
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO)),
    }
    log = (state_dir / f"service-audit-{'on' if audit else 'off'}.log").open("ab")
    command = [sys.executable, "-m", "carefed", "api", "--state-dir", str(state_dir), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopping it stops every worker and delivery process
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}; see {log.name}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    stop_service(process)
    raise RuntimeError(f"the service did not start within {START_TIMEOUT_S:g} s; see {log.name}")


def stop_service(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the service's process group (uvicorn shuts its workers down), SIGKILL to what is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of `root` and every live descendant (workers, audit delivery), from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    return sum(times.get(pid, 0.0) for pid in tree)


async def sign_in(client: httpx.AsyncClient) -> dict[str, str]:
    signed_in = await client.post("/login/access-token", data={"username": USER, "password": PASSWORD})
    signed_in.raise_for_status()
    return {"Authorization": f"Bearer {signed_in.json()['access_token']}"}


async def open_loop(
    url: str, model_id: str, features: dict[str, float], rate: float, duration_s: float, service_pid: int
) -> Level:
    """Request i is due at t0 + i/rate; its latency runs from then to its answer. Latencies of the warm-up
    requests and of the first WARM_UP_S seconds are not kept, but every request counts (errors, CPU, audit
    events)."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(120, pool=None)) as client:
        headers = await sign_in(client)
        body = {"features": features}
        path = f"/models/{model_id}/predict"
        latencies: list[float] = []
        finished: list[float] = []
        errors = 0
        for _ in range(WARM_UP_REQUESTS):  # one after the other: every worker has its model loaded before the clock
            errors += (await client.post(path, json=body, headers=headers)).status_code != 200
        total = int((WARM_UP_S + duration_s) * rate)
        cpu_before = tree_cpu_seconds(service_pid)
        start = time.perf_counter() + 0.05

        async def one(index: int) -> None:
            nonlocal errors
            due = start + index / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                response = await client.post(path, json=body, headers=headers)
            except httpx.TransportError:
                errors += 1
                return
            if response.status_code != 200:
                errors += 1
                return
            if index >= WARM_UP_S * rate:
                now = time.perf_counter()
                latencies.append((now - due) * 1000)
                finished.append(now)

        await asyncio.gather(*(one(i) for i in range(total)))
        cpu = tree_cpu_seconds(service_pid) - cpu_before
    window = (max(finished) - (start + WARM_UP_S)) if finished else float("inf")
    return Level(rate, latencies, len(latencies) / window, WARM_UP_REQUESTS + total, errors, cpu)


def count_audit_events(state_dir: Path, actor: str, action: str, since: dt.datetime) -> int:
    """Events of `actor` doing `action` on the ledger since `since`, counted in time windows small enough for
    the AuditContract's page limit (a full page is split in two and counted again)."""

    def iso(moment: dt.datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    with open_ledger(state_dir=state_dir, org=HOSPITAL) as ledger:

        def count(start: dt.datetime, end: dt.datetime) -> int:
            query = {"actor": actor, "action": action, "from": iso(start), "to": iso(end), "limit": AUDIT_QUERY_LIMIT}
            found = len(ledger.evaluate("AuditContract:query_audit", json.dumps(query)))
            if found < AUDIT_QUERY_LIMIT:
                return found
            middle = start + (end - start) / 2
            return count(start, middle) + count(middle, end)

        return count(since, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))


def soak(
    state_dir: Path,
    model_id: str,
    features: dict[str, float],
    user_id: int,
    rps: float,
    duration_s: float,
    workers: int,
) -> dict[str, Any]:
    """`rps` predictions per second for `duration_s`, auditing on; then every request's event must be on the ledger."""
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    process, url = start_service(state_dir, audit=True, workers=workers)
    try:
        level = asyncio.run(open_loop(url, model_id, features, rps, duration_s, process.pid))
        expected = level.requests - level.errors
        deadline = time.monotonic() + 120 + level.requests / 200  # delivery catches up after the load
        events = count_audit_events(state_dir, f"user-{user_id}", "api.predict", since)
        while events < expected and time.monotonic() < deadline:
            time.sleep(1.0)
            events = count_audit_events(state_dir, f"user-{user_id}", "api.predict", since)
    finally:
        stop_service(process)
    return {
        "soak_requests": level.requests,
        "soak_errors": level.errors,
        "soak_audit_events": events,
        "soak_rps": rps,
        "soak_duration_s": duration_s,
        "soak_p50_ms": round(level.p50, 3),
        "soak_p99_ms": round(level.p99, 3),
        "soak_server_cpu_ms_per_request": round(level.cpu_ms_per_request, 3),
    }


def capacity(
    state_dir: Path, model_id: str, features: dict[str, float], rps: float, duration_s: float, workers: int
) -> dict[str, Any]:
    """Latency at `rps` with auditing on and off, then the highest rate (auditing on) whose p99 held ≤ 50 ms."""
    levels: dict[str, Level] = {}
    for audit in (False, True):
        process, url = start_service(state_dir, audit, workers)
        try:
            label = "audit on" if audit else "audit off"
            console.print(f"[bold]{label}[/]: {rps:g} predictions/s for {duration_s:g} s")
            levels[label] = asyncio.run(open_loop(url, model_id, features, rps, duration_s, process.pid))
            if not audit:
                continue
            best = 0.0
            for step in RATE_STEPS:
                rate = rps * step
                level = levels["audit on"] if step == 1.0 else None
                if level is None:
                    level = asyncio.run(open_loop(url, model_id, features, rate, duration_s, process.pid))
                console.print(
                    f"  {rate:6.0f} req/s offered: {level.achieved_rps:6.1f} served, p50 {level.p50:7.1f} ms, "
                    f"p99 {level.p99:8.1f} ms, {level.errors} errors, {level.cpu_ms_per_request:.2f} ms server CPU "
                    f"per request, load {os.getloadavg()[0]:.1f}"
                )
                levels[f"search {rate:g}"] = level
                if not level.held:
                    break
                best = rate
        finally:
            stop_service(process)
    on, off = levels["audit on"], levels["audit off"]
    return {
        "p50_ms": round(on.p50, 3),
        "p99_ms": round(on.p99, 3),
        "p50_ms_no_audit": round(off.p50, 3),
        "p99_ms_no_audit": round(off.p99, 3),
        "rps": round(on.achieved_rps, 2),
        "requests": on.requests,
        "server_cpu_ms_per_request": round(on.cpu_ms_per_request, 3),
        "server_cpu_ms_per_request_no_audit": round(off.cpu_ms_per_request, 3),
        "max_rps_p99_under_50ms": best,
        "search": [
            {
                "offered_rps": level.rate,
                "served_rps": round(level.achieved_rps, 1),
                "p99_ms": round(level.p99, 2),
                "errors": level.errors,
                "server_cpu_ms_per_request": round(level.cpu_ms_per_request, 3),
            }
            for name, level in levels.items()
            if name.startswith("search")
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rps", type=float, default=100.0, help="requests per second (default 100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="service worker processes (default 2)")
    parser.add_argument("--soak", action="store_true", help="one long run at --rps, then count the audit events")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--state-dir", type=Path, help="keep the consortium, ledger and service logs here (new dir)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="carefed-bench-api-") as tmp:
        state_dir = args.state_dir or Path(tmp)
        console.print("[bold]preparing[/]: consortium, registered model, clinician")
        model_id, features, user_id = prepare(state_dir)
        if args.soak:
            console.print(f"[bold]soak[/]: {args.rps:g} predictions/s for {args.duration:g} s, auditing on")
            results = soak(state_dir, model_id, features, user_id, args.rps, args.duration, args.workers)
        else:
            results = capacity(state_dir, model_id, features, args.rps, args.duration, args.workers)
    results["workers"] = args.workers
    results["load_average"] = [round(max(a, b), 2) for a, b in zip(load_before, os.getloadavg(), strict=True)]
    results["cpus"] = os.cpu_count()
    for key, value in results.items():
        if key != "search":
            console.print(f"  {key}: {value}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
