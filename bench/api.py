"""Prediction latency and capacity of the CareFed service, with the audit trail on and off, and a soak run.

Starts the real service (`carefed api --workers N`, uvicorn, in its own processes) on a fresh consortium with a
registered model — the same one the API tests register — signs in as a clinician and sends
`POST /models/{id}/predict` open-loop at a fixed rate. Latency is counted from each request's *scheduled* send
time, so a stalled server cannot hide behind a client that waits for it (no coordinated omission).

The client shares the machine's cores with the service, so it must be cheap: raw HTTP/1.1 on keep-alive
connections (uvloop, httptools), the request's bytes built once, no coroutine per request. An httpx client cost
1.8 ms of CPU per request at 100 req/s and more the more connections it held, until at 400 req/s it took the
cores the service needed and the run collapsed (135 served, p99 13 s); this one costs about 0.1 ms. Its CPU per
request is reported beside the server's.

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
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httptools
import httpx
import numpy as np
import uvloop
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
RATE_STEPS = tuple(float(step) for step in range(1, 11))  # multiples of --rps tried by the capacity search
AUDIT_QUERY_LIMIT = 10_000  # the AuditContract's largest page
PREOPENED_CONNECTIONS = 32  # keep-alive connections opened before the clock starts, spread over the workers
MAX_CONNECTIONS = 512  # more only while requests wait for one: a stalled service gets a queue, not a flood
ANSWER_TIMEOUT_S = 120.0  # after the last request is sent; whatever is unanswered then counts as an error


@dataclass
class Level:
    """One open-loop run at a fixed rate."""

    rate: float
    latencies_ms: list[float]
    achieved_rps: float
    requests: int
    errors: int
    cpu_s: float
    client_cpu_s: float
    load_average: float  # the machine's 1-minute load average when the run ended

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
    def client_cpu_ms_per_request(self) -> float:
        return 1000 * self.client_cpu_s / max(self.requests, 1)

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


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight; httptools parses the answers.

    The load generator shares the machine's cores with the service, so each request must cost it microseconds:
    the request's bytes are built once, and a connection is a protocol callback, not a coroutine per request.
    """

    def __init__(self, load: _OpenLoop) -> None:
        self._load = load
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.index = -1  # the request in flight, -1 when idle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def send(self, index: int) -> None:
        assert self._transport is not None
        self.index = index
        self._transport.write(self._load.request)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_message_complete(self) -> None:  # httptools callback: one whole answer has arrived
        index, self.index = self.index, -1
        self._load.answered(self, index, self._parser.get_status_code() == 200)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._load.lost(self)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _OpenLoop:
    """Request i is due at `start + i / rate` whether or not earlier ones were answered (open loop): it goes out
    on an idle connection, else on a new one (up to `max_connections`), else waits for the first connection to
    come free — its latency is counted from its due time all the same, so nothing hides a stalled server."""

    def __init__(self, host: str, port: int, request: bytes, total: int, max_connections: int) -> None:
        self.host, self.port, self.request = host, port, request
        self.max_connections = max_connections
        self.answered_at = np.full(total, np.nan)
        self.errors = 0
        self.outstanding = 0
        self._idle: deque[_Connection] = deque()
        self._waiting: deque[int] = deque()
        self._connections = 0  # open or opening
        self._all_answered = asyncio.Event()

    async def connect(self, count: int) -> None:
        await asyncio.gather(*(self._open() for _ in range(count)))

    async def _open(self) -> None:
        self._connections += 1
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self._connections -= 1
            if self._waiting:  # a request that waited for this connection fails rather than wait forever
                self._failed(self._waiting.popleft())
            return
        self._next(connection)

    def fire(self, index: int) -> None:
        self.outstanding += 1
        if self._idle:
            self._idle.popleft().send(index)  # FIFO: requests spread over every connection, hence every worker
            return
        self._waiting.append(index)
        if self._connections < self.max_connections:
            asyncio.get_running_loop().create_task(self._open())

    def answered(self, connection: _Connection, index: int, ok: bool) -> None:
        if ok:
            self.answered_at[index] = time.perf_counter()
            self._done()
        else:
            self._failed(index)
        self._next(connection)

    def lost(self, connection: _Connection) -> None:
        self._connections -= 1
        with contextlib.suppress(ValueError):
            self._idle.remove(connection)
        if connection.index >= 0:
            self._failed(connection.index)

    def _next(self, connection: _Connection) -> None:
        if self._waiting:
            connection.send(self._waiting.popleft())
        else:
            self._idle.append(connection)

    def _failed(self, index: int) -> None:
        self.errors += 1
        self._done()

    def _done(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0:
            self._all_answered.set()

    async def run(self, start: float, rate: float, indices: range) -> None:
        """Fire request `indices[k]` at `start + k / rate`, then wait for every answer."""
        for index in indices:
            delay = start + (index - indices.start) / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.fire(index)
        if self.outstanding:
            self._all_answered.clear()
            await asyncio.wait_for(self._all_answered.wait(), ANSWER_TIMEOUT_S)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()


def sign_in(url: str) -> str:
    """The bench clinician's bearer token."""
    signed_in = httpx.post(f"{url}/login/access-token", data={"username": USER, "password": PASSWORD}, timeout=60)
    signed_in.raise_for_status()
    return str(signed_in.json()["access_token"])


def predict_request(url: str, token: str, model_id: str, features: dict[str, float]) -> bytes:
    """The bytes of one `POST /models/{id}/predict`, built once and sent as they are on every connection."""
    body = json.dumps({"features": features}).encode()
    head = (
        f"POST /models/{model_id}/predict HTTP/1.1\r\nHost: {httpx.URL(url).netloc.decode()}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def open_loop(
    url: str, model_id: str, features: dict[str, float], rate: float, duration_s: float, service_pid: int
) -> Level:
    """Warm-up requests one at a time (over different connections, so every worker answers some), then
    `(WARM_UP_S + duration_s) * rate` requests open-loop. Latencies of the warm-up requests and of the first
    WARM_UP_S seconds are not kept, but every request counts (errors, CPU, audit events)."""
    request = predict_request(url, sign_in(url), model_id, features)
    warm_up, timed = WARM_UP_REQUESTS, int((WARM_UP_S + duration_s) * rate)
    address = httpx.URL(url)
    load = _OpenLoop(address.host, address.port or 80, request, warm_up + timed, MAX_CONNECTIONS)

    async def run() -> tuple[float, float, float]:
        await load.connect(PREOPENED_CONNECTIONS)
        for index in range(warm_up):
            await load.run(time.perf_counter(), rate, range(index, index + 1))
        cpu_before, client_before = tree_cpu_seconds(service_pid), time.process_time()
        start = time.perf_counter() + 0.05
        try:
            await load.run(start, rate, range(warm_up, warm_up + timed))
        except TimeoutError:
            load.errors += load.outstanding
        finally:
            load.close()
        return start, tree_cpu_seconds(service_pid) - cpu_before, time.process_time() - client_before

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        start, cpu, client_cpu = runner.run(run())
    skipped = int(WARM_UP_S * rate)
    answered_at = load.answered_at[warm_up + skipped :]
    due = start + np.arange(skipped, timed) / rate
    answered = ~np.isnan(answered_at)
    latencies = ((answered_at[answered] - due[answered]) * 1000).tolist()
    window = (float(answered_at[answered].max()) - (start + WARM_UP_S)) if answered.any() else float("inf")
    served = len(latencies) / window
    return Level(rate, latencies, served, warm_up + timed, load.errors, cpu, client_cpu, os.getloadavg()[0])


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
        level = open_loop(url, model_id, features, rps, duration_s, process.pid)
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
        "soak_client_cpu_ms_per_request": round(level.client_cpu_ms_per_request, 3),
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
            levels[label] = open_loop(url, model_id, features, rps, duration_s, process.pid)
            if not audit:
                continue
            best = 0.0
            for step in RATE_STEPS:
                rate = rps * step
                level = levels["audit on"] if step == 1.0 else None
                if level is None:
                    level = open_loop(url, model_id, features, rate, duration_s, process.pid)
                console.print(
                    f"  {rate:6.0f} req/s offered: {level.achieved_rps:6.1f} served, p50 {level.p50:7.1f} ms, "
                    f"p99 {level.p99:8.1f} ms, {level.errors} errors, CPU per request: server "
                    f"{level.cpu_ms_per_request:.2f} ms, client {level.client_cpu_ms_per_request:.2f} ms; "
                    f"load {level.load_average:.1f}"
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
        "client_cpu_ms_per_request": round(on.client_cpu_ms_per_request, 3),
        "max_rps_p99_under_50ms": best,
        "search": [
            {
                "offered_rps": level.rate,
                "served_rps": round(level.achieved_rps, 1),
                "p99_ms": round(level.p99, 2),
                "errors": level.errors,
                "server_cpu_ms_per_request": round(level.cpu_ms_per_request, 3),
                "client_cpu_ms_per_request": round(level.client_cpu_ms_per_request, 3),
                "load_average_1min": round(level.load_average, 2),
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
