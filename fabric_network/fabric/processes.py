"""Start, watch and stop the native processes of a CareFed Fabric network — exactly the ones it started.

Each process gets a pid file (``<dir>/<name>.json``) holding its pid *and* its kernel start time
(``/proc/<pid>/stat`` field 22). A pid alone can be reused by an unrelated process after a crash or a reboot;
the pair cannot, so ``stop`` never signals a process CareFed did not start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from carefed.logs import rotating_log


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_time: int  # clock ticks since boot, /proc/<pid>/stat field 22
    argv: list[str]
    port: int  # the port that shows it is serving
    log: str
    health_port: int | None = None  # a Fabric operations endpoint serving /healthz, if the process has one


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start = fields[0], fields[19]
    return None if state == "Z" else int(start)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def healthz(port: int) -> str:
    """A Fabric operations endpoint's verdict: ``OK``, or what it reports as failing (or why it did not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return str(json.loads(response.read()).get("status", "OK"))
    except urllib.error.HTTPError as exc:  # 503 with the failed checks in the body
        failed = json.loads(exc.read() or b"{}").get("failed_checks", [])
        return "failing: " + ", ".join(f"{c.get('component')}: {c.get('reason')}" for c in failed)
    except OSError as exc:
        return f"no answer ({exc})"


class Supervisor:
    """The processes of one network, tracked under ``pid_dir``."""

    def __init__(self, pid_dir: Path, log_dir: Path) -> None:
        self.pid_dir = pid_dir
        self.log_dir = log_dir

    def _pid_file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.json"

    def record(self, name: str) -> ProcessRecord | None:
        path = self._pid_file(name)
        if not path.exists():
            return None
        return ProcessRecord(**json.loads(path.read_text()))

    def records(self) -> list[ProcessRecord]:
        return [ProcessRecord(**json.loads(p.read_text())) for p in sorted(self.pid_dir.glob("*.json"))]

    def is_running(self, record: ProcessRecord) -> bool:
        """Alive and still the very process that was started (same pid, same start time)."""
        return _start_time(record.pid) == record.start_time

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], port: int, health_port: int | None = None
    ) -> ProcessRecord:
        """Start ``argv`` detached (own session, so a Ctrl-C in the shell that ran `up` does not stop it)."""
        existing = self.record(name)
        if existing and self.is_running(existing):
            return existing
        if port_open(port):
            raise RuntimeError(f"{name}: port {port} is already in use by another program; choose another --base-port")
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with rotating_log(log_path) as log:
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        start_time = _start_time(process.pid)
        if start_time is None:
            raise RuntimeError(f"{name} exited at once; see {log_path}")
        record = ProcessRecord(name, process.pid, start_time, list(argv), port, str(log_path), health_port)
        self._pid_file(name).write_text(json.dumps(asdict(record)))
        return record

    def wait_serving(self, record: ProcessRecord, *also: int, timeout_s: float = 60.0) -> None:
        """Wait until the process listens on its port and on every port in ``also``; fail early with its log's
        tail if it dies.

        A Fabric node opens its listeners one after the other (the orderer's admin endpoint comes after its
        gRPC port), so a caller that next talks to another listener names it here rather than racing it.
        """
        deadline = time.monotonic() + timeout_s
        waiting = [record.port, *also]
        while time.monotonic() < deadline:
            if not self.is_running(record):
                tail = Path(record.log).read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"{record.name} stopped while starting; last log lines:\n" + "\n".join(tail))
            waiting = [port for port in waiting if not port_open(port)]
            if not waiting:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{record.name} did not listen on port(s) {waiting} within {timeout_s:.0f}s")

    def stop(self, name: str, grace_s: float = 10.0) -> bool:
        """SIGTERM (then SIGKILL after ``grace_s``) the recorded process if it is still ours; forget it."""
        record = self.record(name)
        if record is None:
            return False
        stopped = False
        if self.is_running(record):
            os.kill(record.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self.is_running(record) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.is_running(record):
                os.kill(record.pid, signal.SIGKILL)
            # A thread-group leader turns zombie while its other threads still exit and hold its sockets:
            # stopped means its port is free again.
            while port_open(record.port) and time.monotonic() < deadline + grace_s:
                time.sleep(0.05)
            stopped = True
        self._pid_file(name).unlink()
        return stopped
