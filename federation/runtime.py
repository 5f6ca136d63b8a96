"""The Flower Deployment Engine on one machine: a SuperLink and one SuperNode per hospital as real processes.

No simulation engine: the same binaries a consortium runs in production (`flower-superlink`,
`flower-supernode`, `flwr run`), on free localhost ports, with TLS unless told otherwise. What Flower 1.42 needs
that is easy to get wrong (docs/flower.md): runtime dependency installation disabled (offline), `FLWR_HOME` inside
the state directory (the CLI reads its connections from `$FLWR_HOME/config.toml`), and completion learnt by
polling `flwr ls`, because `flwr run --stream` exits 0 even when the ServerApp crashed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import tomli_w

from carefed.logs import rotating_log
from federation.tls import SuperLinkTls

CONNECTION_NAME = "carefed"
FINISHED_PREFIX = "finished:"


class RuntimeFailure(RuntimeError):
    """A Flower process did not start, or a run did not finish as completed."""


def free_port() -> int:
    """A port nobody listens on right now (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _flower_binary(name: str) -> str:
    """The Flower executable installed beside the running interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _node_config_arg(values: Mapping[str, str | int | float | bool]) -> str:
    """Flower's `--node-config` syntax: space-separated TOML `key=value` pairs."""
    parts = []
    for key, value in values.items():
        if isinstance(value, str) and (" " in value or "'" in value):
            raise ValueError(f"node-config value for {key!r} may not contain spaces or quotes: {value!r}")
        parts.append(f"{key}={json.dumps(value) if not isinstance(value, str) else repr(value)}")
    return " ".join(parts)


@dataclass(frozen=True)
class RunOutcome:
    """How a Flower run ended, as `flwr ls` reports it."""

    run_id: int
    status: str
    details: str
    elapsed_s: float

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


@dataclass
class FlowerRuntime:
    """Owns the SuperLink and SuperNode processes of one consortium deployment; a context manager."""

    home: Path
    tls: SuperLinkTls | None = None
    env_overrides: dict[str, str] = field(default_factory=dict)
    superlink_port: int = 0
    superlink_host: str = "127.0.0.1"  # "0.0.0.0" to serve hospitals on other machines
    supernode_auth: bool = False  # only SuperNodes whose public key was registered may connect (needs TLS)
    supernodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    others: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _superlink: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)

    @property
    def address(self) -> str:
        """Where this machine reaches the SuperLink (loopback when it listens on every interface)."""
        host = "127.0.0.1" if self.superlink_host in ("0.0.0.0", "::") else self.superlink_host
        return f"{host}:{self.superlink_port}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "FLWR_HOME": str(self.home),
                "FLWR_DISABLE_UPDATE_CHECK": "1",
                "FLWR_TELEMETRY_ENABLED": "0",
                "PYTHONUNBUFFERED": "1",
                # The SuperLink and SuperNodes spawn `flower-superexec`, `flwr-serverapp`… by name.
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            }
        )
        env.update(self.env_overrides)
        return env

    def log_path(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start a process of this deployment (own session, output in `logs/<name>.log`, rotated); closed with
        the rest."""
        with rotating_log(self.log_path(name)) as log:
            # A new session so a Ctrl-C in the terminal reaches us first and we shut the processes down in order.
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        if not name.startswith(("superlink", "supernode-")):
            self.others[name] = process
        return process

    def start_superlink(self, timeout_s: float = 60.0, port: int | None = None) -> str:
        """Start the SuperLink on `port` (default: a free one), wait for its health endpoint, write the CLI
        connection."""
        self.superlink_port = port or free_port()
        argv = [
            _flower_binary("flower-superlink"),
            "--host",
            self.superlink_host,
            "--port",
            str(self.superlink_port),
            "--disable-runtime-dependency-installation",
            # A database file, not Flower's in-memory default: the SuperNodes' registrations survive a SuperLink
            # restart, so after a crash they carry on with the same node ids and a resumed run finds them.
            "--database",
            str(self.home / "superlink.db"),
        ]
        if self.tls is None:
            argv.append("--insecure")
        else:
            argv += [
                "--ssl-ca-certfile",
                str(self.tls.ca_cert),
                "--ssl-certfile",
                str(self.tls.server_cert),
                "--ssl-keyfile",
                str(self.tls.server_key),
            ]
        if self.supernode_auth:
            if self.tls is None:
                raise RuntimeFailure("SuperNode authentication needs TLS: start the SuperLink with certificates")
            argv.append("--enable-supernode-auth")
        self._superlink = self.spawn("superlink", argv)
        self._write_connection()
        self._wait_healthy(timeout_s)
        return self.address

    def kill_superlink(self) -> None:
        """SIGKILL the SuperLink process alone, as a crash would: its app processes are left behind."""
        assert self._superlink is not None, "no SuperLink was started"
        self._superlink.kill()
        self._superlink.wait()

    def restart_superlink(self, timeout_s: float = 60.0) -> list[int]:
        """After the SuperLink died: stop what it left running, start it again on its port; the pids stopped.

        The SuperNodes keep retrying the same address, so they reconnect on their own. What the dead SuperLink
        started (its SuperExec, a ServerApp still polling it) is found by this deployment's `FLWR_HOME` in the
        process environment — its parent is gone, so no process tree leads there any more — and killed, so no
        orphan of the old run keeps working on the state directory next to the resumed one.
        """
        if self._superlink is not None and self._superlink.poll() is None:
            raise RuntimeFailure("the SuperLink is still running")
        orphans = self._orphans()
        for orphan in orphans:
            with contextlib.suppress(psutil.NoSuchProcess):
                orphan.kill()
        psutil.wait_procs(orphans, timeout=10)
        self.start_superlink(timeout_s, port=self.superlink_port)
        return [orphan.pid for orphan in orphans]

    def _orphans(self) -> list[psutil.Process]:
        """Live processes of this deployment (its `FLWR_HOME`) that no live process of ours leads to."""
        live = [
            p for p in (*self.supernodes.values(), *self.others.values(), self._superlink) if p and p.poll() is None
        ]
        ours = {p.pid for p in live}
        for process in live:
            with contextlib.suppress(psutil.NoSuchProcess):
                ours |= {child.pid for child in psutil.Process(process.pid).children(recursive=True)}
        found = []
        for candidate in psutil.process_iter():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                if candidate.pid not in ours and candidate.environ().get("FLWR_HOME") == str(self.home):
                    found.append(candidate)
        return found

    def _write_connection(self) -> None:
        connection: dict[str, Any] = {"address": self.address}
        if self.tls is None:
            connection["insecure"] = True
        else:
            connection["root-certificates"] = str(self.tls.ca_cert)
        config = {"superlink": {"default": CONNECTION_NAME, CONNECTION_NAME: connection}}
        (self.home / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")

    def _wait_healthy(self, timeout_s: float) -> None:
        scheme = "http" if self.tls is None else "https"
        verify: bool | ssl.SSLContext = True
        if self.tls is not None:
            verify = ssl.create_default_context(cafile=self.tls.ca_cert)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._superlink is not None
            if self._superlink.poll() is not None:
                raise RuntimeFailure(
                    f"SuperLink exited with code {self._superlink.returncode}; see {self.log_path('superlink')}"
                )
            try:
                if httpx.get(f"{scheme}://{self.address}/health", verify=verify, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeFailure(f"SuperLink not healthy after {timeout_s:.0f} s; see {self.log_path('superlink')}")

    def register_supernode(self, public_key: Path) -> None:
        """Allow the SuperNode holding this OpenSSH EC public key to connect (`flwr supernode register`)."""
        reply = self._flwr("supernode", "register", str(public_key), CONNECTION_NAME)
        if not reply.get("success"):
            raise RuntimeFailure(f"the SuperLink refused to register {public_key}: {reply}")

    def start_supernode(
        self,
        name: str,
        node_config: Mapping[str, str | int | float | bool],
        *,
        superlink: str | None = None,
        root_certificates: Path | None = None,
        auth_key: Path | None = None,
    ) -> None:
        """Start a hospital's SuperNode (its own local runtime port) connected to a SuperLink.

        By default it connects to this deployment's SuperLink with its CA; a hospital's own node passes the
        consortium's address and CA certificate (None = insecure, local experiments only). `auth_key` is the
        node's private key for SuperNode authentication (its public half registered at the SuperLink).
        """
        address = superlink or self.address
        ca = root_certificates if superlink else (self.tls.ca_cert if self.tls else None)
        argv = [
            _flower_binary("flower-supernode"),
            "--superlink",
            address,
            "--port",
            str(free_port()),
            "--node-config",
            _node_config_arg(node_config),
        ]
        argv += ["--insecure"] if ca is None else ["--root-certificates", str(ca)]
        if auth_key is not None:
            argv += ["--auth-supernode-private-key", str(auth_key)]
        self.supernodes[name] = self.spawn(f"supernode-{name}", argv)

    def wait_for_log_line(
        self, processes: Mapping[str, subprocess.Popen[bytes]], marker: bytes, timeout_s: float
    ) -> None:
        """Block until each named process has written `marker` to its log, or fail naming the laggards."""
        deadline = time.monotonic() + timeout_s
        pending = set(processes)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                if processes[name].poll() is not None:
                    raise RuntimeFailure(
                        f"{name} exited with code {processes[name].returncode}; see {self.log_path(name)}"
                    )
                if marker in self.log_path(name).read_bytes():
                    pending.discard(name)
            time.sleep(0.3)
        if pending:
            raise RuntimeFailure(f"not ready after {timeout_s:.0f} s: {', '.join(sorted(pending))}")

    def wait_for_supernodes(self, timeout_s: float = 60.0) -> None:
        """Block until every SuperNode has registered with the SuperLink (its log names its node ID)."""
        self.wait_for_log_line(
            {f"supernode-{name}": p for name, p in self.supernodes.items()}, b"SuperNode ID:", timeout_s
        )

    def stop_supernode(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop one hospital's SuperNode (SIGKILL simulates a crash: the SuperLink only notices on heartbeat)."""
        process = self.supernodes[name]
        if process.poll() is None:
            process.send_signal(sig)
            process.wait(timeout=30)

    def _flwr(self, *args: str, timeout_s: float = 120.0) -> Any:
        result = subprocess.run(
            [_flower_binary("flwr"), *args, "--format", "json"],
            capture_output=True,
            env=self.env,
            timeout=timeout_s,
            check=False,
        )
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            raise RuntimeFailure(
                f"`flwr {' '.join(args)}` failed (exit {result.returncode}): "
                f"{result.stdout.decode(errors='replace')[-800:]}{result.stderr.decode(errors='replace')[-800:]}"
            ) from exc

    def submit(self, app_dir: Path, run_config: Mapping[str, Any]) -> int:
        """`flwr run` the app with run-config overrides written to a TOML file; returns the run id."""
        overrides = self.home / f"run-config-{time.time_ns()}.toml"
        overrides.write_text(tomli_w.dumps(dict(run_config)), encoding="utf-8")
        reply = self._flwr("run", str(app_dir), CONNECTION_NAME, "--run-config", str(overrides))
        if not reply.get("success") or "run-id" not in reply:
            raise RuntimeFailure(f"`flwr run` refused the run: {reply}")
        return int(reply["run-id"])

    def run_status(self, run_id: int) -> RunOutcome:
        reply = self._flwr("ls", CONNECTION_NAME, "--run-id", str(run_id))
        runs = reply.get("runs") or []
        if not reply.get("success") or not runs:
            raise RuntimeFailure(f"`flwr ls` has no run {run_id}: {reply}")
        run = runs[0]
        return RunOutcome(
            run_id=run_id,
            status=str(run.get("status", "")),
            details=str(run.get("status-details", "") or ""),
            elapsed_s=float(run.get("elapsed-s", 0.0) or 0.0),
        )

    def wait_for_run(
        self,
        run_id: int,
        timeout_s: float,
        poll_s: float = 0.5,
        on_poll: Callable[[], None] | None = None,
        status_every_s: float = 5.0,
    ) -> RunOutcome:
        """Wait until `flwr ls` reports the run finished (completed, failed or stopped) or the timeout passes.

        `on_poll` (cheap: e.g. reading the ServerApp's results file) runs every `poll_s`; the `flwr` CLI, a
        fresh Python process each time, only every `status_every_s`.
        """
        deadline = time.monotonic() + timeout_s
        next_status = time.monotonic() + status_every_s
        while time.monotonic() < deadline:
            if on_poll is not None:
                on_poll()
            if time.monotonic() >= next_status:
                outcome = self.run_status(run_id)
                if outcome.status.startswith(FINISHED_PREFIX):
                    return outcome
                next_status = time.monotonic() + status_every_s
            time.sleep(poll_s)
        raise RuntimeFailure(f"run {run_id} not finished after {timeout_s:.0f} s")

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Signal the process and the app processes it spawned (its own session, started by us)."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)

    def close(self) -> None:
        """SIGTERM every process, give them time to deregister, then SIGKILL what is left; reap all.

        Flower's SuperExec starts each ServerApp/ClientApp in a session of its own, so signalling our process
        groups misses them: their processes are found first (before a parent's exit re-parents them to init)
        and stopped by pid, or a `flwr-serverapp` would outlive the deployment holding its ports and files.
        """
        processes = [
            *self.supernodes.values(),
            *([self._superlink] if self._superlink else []),
            *self.others.values(),
        ]
        detached = _descendants_outside_groups(processes)
        for process in processes:
            self._signal_group(process, signal.SIGTERM)
        for app in detached:
            with contextlib.suppress(psutil.NoSuchProcess):
                app.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait()
        _, still_running = psutil.wait_procs(detached, timeout=15)
        for app in still_running:
            with contextlib.suppress(psutil.NoSuchProcess):
                app.kill()
        psutil.wait_procs(still_running, timeout=5)

    def __enter__(self) -> FlowerRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _descendants_outside_groups(processes: list[subprocess.Popen[bytes]]) -> list[psutil.Process]:
    """Every live descendant of `processes` that is not in one of their process groups (so a group signal
    misses it): the app processes Flower's SuperExec starts with a session of their own."""
    groups = {process.pid for process in processes}
    found: list[psutil.Process] = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(process.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):  # it may end meanwhile
                    if os.getpgid(child.pid) not in groups:
                        found.append(child)
    return found
