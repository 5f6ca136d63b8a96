"""Prediction latency of the CareFed service at a fixed request rate, with the audit trail on and off.

Starts the real service (`carefed api`, uvicorn, in its own process) on a fresh consortium with a registered
model — the same one the API tests register — signs in as a clinician and sends `POST /models/{id}/predict`
open-loop at `--rps` requests per second for `--duration` seconds. Latency is counted from each request's
*scheduled* send time, so a stalled server cannot hide behind a client that waits for it (no coordinated
omission). Then the same run against a service started with `CAREFED_API_AUDIT_ENABLED=false`: the
difference is what auditing every request through the ledger's durable outbox costs.

    python -m bench.api [--rps 100] [--duration 20] [--state-dir D] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from sqlmodel import Session

from api.core.config import Settings
from api.core.db import make_engine, upgrade_to_head
from api.core.security import hash_password
from api.models.user import Role, User
from fabric_network.identities import init_identities
from tests.api.model_fixture import register_model  # the registered model the API tests use

REPO = Path(__file__).resolve().parents[1]

console = Console(stderr=True)
PASSWORD = "bench-password-long"
WARM_UP_S = 2.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare(state_dir: Path) -> tuple[str, dict[str, float]]:
    """A consortium, a registered model and a clinician: the model id and one patient's features."""
    init_identities(state_dir, ["hospital-a"])
    model = register_model(state_dir)
    engine = make_engine(Settings(state_dir=state_dir).resolved_database_url)
    upgrade_to_head(engine)
    with Session(engine) as session:
        session.add(
            User(username="bench", role=Role.clinician, hospital="hospital-a", password_hash=hash_password(PASSWORD))
        )
        session.commit()
    engine.dispose()
    return model.model_id, model.benign_example


def start_service(state_dir: Path, audit: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "CAREFED_API_AUDIT_ENABLED": "true" if audit else "false",
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO)),
    }
    log = (state_dir / f"service-audit-{'on' if audit else 'off'}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "carefed", "api", "--state-dir", str(state_dir), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the service did not start within 120 s")


async def measure(
    url: str, model_id: str, features: dict[str, float], rps: float, duration_s: float
) -> tuple[list[float], float]:
    """Open-loop load: request i is due at t0 + i/rps; its latency runs from then to its answer (ms).
    Also the rate achieved over the measured window (requests answered per second)."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(30, pool=None)) as client:
        signed_in = await client.post("/login/access-token", data={"username": "bench", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        body = {"features": features}
        path = f"/models/{model_id}/predict"
        for _ in range(20):  # the first prediction loads the model
            (await client.post(path, json=body, headers=headers)).raise_for_status()
        latencies: list[float] = []
        finished: list[float] = []
        start = time.perf_counter() + 0.05
        total = int((WARM_UP_S + duration_s) * rps)

        async def one(index: int) -> None:
            due = start + index / rps
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            response = await client.post(path, json=body, headers=headers)
            response.raise_for_status()
            if index >= WARM_UP_S * rps:
                now = time.perf_counter()
                latencies.append((now - due) * 1000)
                finished.append(now)

        await asyncio.gather(*(one(i) for i in range(total)))
    window = max(finished) - (start + WARM_UP_S)
    return latencies, len(latencies) / window


def run(
    state_dir: Path, model_id: str, features: dict[str, float], audit: bool, rps: float, duration_s: float
) -> tuple[list[float], float]:
    process, url = start_service(state_dir, audit)
    try:
        return asyncio.run(measure(url, model_id, features, rps, duration_s))
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rps", type=float, default=100.0, help="requests per second (default 100)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per run (default 20)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--state-dir", type=Path, help="keep the consortium, ledger and service logs here (new dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="carefed-bench-api-") as tmp:
        state_dir = args.state_dir or Path(tmp)
        console.print("[bold]preparing[/]: consortium, registered model, clinician")
        model_id, features = prepare(state_dir)
        results = {}
        for audit in (True, False):
            label = "audit on" if audit else "audit off"
            console.print(f"[bold]{label}[/]: {args.rps:g} predictions/s for {args.duration:g} s")
            latencies, achieved = run(state_dir, model_id, features, audit, args.rps, args.duration)
            results[audit] = (np.percentile(latencies, 50), np.percentile(latencies, 99), achieved, len(latencies))
    (p50, p99, rps, n), (p50_off, p99_off, _, _) = results[True], results[False]
    console.print(f"predict at {rps:.1f} req/s, {n} requests measured")
    console.print(f"  audit on : p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    console.print(f"  audit off: p50 {p50_off:6.2f} ms   p99 {p99_off:6.2f} ms")
    console.print(f"  p99 ratio on/off: {p99 / p99_off:.2f}x   (bar: p99 <= 50 ms with auditing on)")
    if args.json:
        print(
            json.dumps(
                {
                    "p50_ms": round(float(p50), 3),
                    "p99_ms": round(float(p99), 3),
                    "p50_ms_no_audit": round(float(p50_off), 3),
                    "p99_ms_no_audit": round(float(p99_off), 3),
                    "rps": round(float(rps), 2),
                    "requests": n,
                }
            )
        )


if __name__ == "__main__":
    main()
