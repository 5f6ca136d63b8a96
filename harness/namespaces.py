"""Organisations on their own "machines" on one Linux host: a network namespace each, on a bridge.

What makes a namespace a fair stand-in for a hospital's machine (docs/deployment.md, "Proof"):

* **network** — its own interface and address on a private /24 (a veth pair into a bridge on the host), its own
  loopback: every byte to another organisation crosses TCP between addresses, and cutting the hospital's link
  (``ip link set … down``) is a real outage;
* **files** — every command runs with the other organisations' state directories hidden under empty read-only
  tmpfs mounts in its own mount namespace (`ip netns exec` gives each command one), so no process of one org can
  open, or even list, a file of another — by construction rather than by convention;
* **processes** — each org's processes live in its namespace (`ip netns pids`), so a clean shutdown can be
  checked: after SIGTERM to the org's long-running commands, no process of it is left.

Needs root and iproute2. Used by tests/deployment/ and `bench/round.py --namespaces`.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: The environment a command gets (nothing of the caller's CareFed or Flower settings leaks in).
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_CACHE_HOME", "CAREFED_FABRIC_HOME", "UV_CACHE_DIR")


class NamespaceError(RuntimeError):
    """A namespace command failed; the message carries its output."""


def available() -> str:
    """ "" when namespaces can be made here, else why not (for a skip reason)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    return ""


@dataclass(frozen=True)
class Site:
    """One organisation's machine: its namespace, address, host-side link and state directory."""

    org: str
    namespace: str
    address: str
    link: str  # the host end of its veth pair (cut it to cut the org off)
    state_dir: Path


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class NamespaceNetwork:
    """A bridge and one namespace per organisation; state directories under ``root/<org>`` (mode 0700)."""

    root: Path
    orgs: Sequence[str]
    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000:04d}{random.randrange(100):02d}")
    sites: dict[str, Site] = field(default_factory=dict)
    processes: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"cfbr{self.tag}"

    def create(self) -> NamespaceNetwork:
        subnet = f"10.{77 + random.randrange(20)}.{random.randrange(1, 250)}"
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "up")
        for index, org in enumerate(self.orgs, start=1):
            namespace, link = f"cf{self.tag}-{index}", f"cf{self.tag}v{index}"
            state_dir = self.root / org
            state_dir.mkdir(parents=True, exist_ok=True)
            state_dir.chmod(0o700)
            site = Site(org, namespace, f"{subnet}.{index}", link, state_dir)
            self.sites[org] = site
            _ip("netns", "add", namespace)
            _ip("link", "add", link, "type", "veth", "peer", "name", f"{link}p")
            _ip("link", "set", f"{link}p", "netns", namespace)
            _ip("-n", namespace, "link", "set", f"{link}p", "name", "eth0")
            _ip("-n", namespace, "addr", "add", f"{site.address}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("link", "set", link, "master", self.bridge)
            _ip("link", "set", link, "up")
        return self

    def __enter__(self) -> NamespaceNetwork:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def command(self, org: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on ``org``'s machine: in its namespace, the other orgs' state directories hidden."""
        hidden = [str(s.state_dir) for s in self.sites.values() if s.org != org]
        steps = [f"mount -t tmpfs -o ro,size=4k,mode=0 carefed-hidden {shlex.quote(d)}" for d in hidden]
        steps += [f"cd {shlex.quote(str(self.sites[org].state_dir))}", 'exec "$@"']
        script = " && ".join(steps)
        return ["ip", "netns", "exec", self.sites[org].namespace, "sh", "-c", script, "carefed-site", *argv]

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k in _KEPT_ENV} | {"COLUMNS": "200"} | dict(extra or {})

    def run(self, org: str, argv: Sequence[str], timeout_s: float = 600.0, check: bool = True) -> str:
        """Run a command on ``org``'s machine to completion; its output (stdout and stderr)."""
        result = subprocess.run(
            self.command(org, argv), env=self.env(), capture_output=True, text=True, timeout=timeout_s, check=False
        )
        output = result.stdout + result.stderr
        if check and result.returncode != 0:
            raise NamespaceError(f"{org}: `{shlex.join(argv)}` exited {result.returncode}:\n{output[-4000:]}")
        return output

    def spawn(self, org: str, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """Start a long-running command on ``org``'s machine (its output in ``log``)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = subprocess.Popen(
                self.command(org, argv), env=self.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.setdefault(org, []).append(process)
        return process

    def pids(self, org: str) -> list[int]:
        """Every process living in ``org``'s namespace."""
        result = subprocess.run(
            ["ip", "netns", "pids", self.sites[org].namespace], capture_output=True, text=True, check=False
        )
        return [int(p) for p in result.stdout.split()]

    def stop(self, org: str, timeout_s: float = 90.0) -> list[int]:
        """SIGTERM the org's long-running commands (as systemd stops a unit) and wait for them; the pids still in
        its namespace afterwards (a clean shutdown leaves none)."""
        for process in self.processes.get(org, []):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.get(org, []):
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        settle = time.monotonic() + 10
        while self.pids(org) and time.monotonic() < settle:
            time.sleep(0.2)
        return self.pids(org)

    def cut(self, org: str) -> None:
        """Cut the org's network link, as a pulled cable or a failed switch port would."""
        _ip("link", "set", self.sites[org].link, "down")

    def restore(self, org: str) -> None:
        _ip("link", "set", self.sites[org].link, "up")

    def destroy(self) -> None:
        """Kill whatever is left in the namespaces, then remove them and the bridge."""
        for org, site in self.sites.items():
            for pid in self.pids(org):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", site.namespace], capture_output=True, check=False)
            subprocess.run(["ip", "link", "del", site.link], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
