"""Closing a deployment stops every process it started, including apps that left its process groups.

Flower's SuperExec starts each ServerApp/ClientApp with ``start_new_session=True``; a deployment that only
signalled its own process groups left `flwr-serverapp` running after `carefed demo` ended. The test stands in
a tiny spawner for the SuperExec: a process of the deployment that starts a grandchild in a new session.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

from federation.runtime import FlowerRuntime

SPAWNER = """
import subprocess, sys, time
app = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
open(sys.argv[1], "w").write(str(app.pid))
time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_close_stops_an_app_started_in_a_session_of_its_own(tmp_path: Path) -> None:
    pid_file = tmp_path / "app.pid"
    runtime = FlowerRuntime(home=tmp_path / "flower")
    spawner = runtime.spawn("superexec-stand-in", [sys.executable, "-c", SPAWNER, str(pid_file)])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the spawner never started its app"
        time.sleep(0.05)
    app_pid = int(pid_file.read_text())
    assert _running(app_pid)
    assert psutil.Process(app_pid).as_dict(["ppid"])["ppid"] == spawner.pid

    runtime.close()

    assert spawner.poll() is not None
    deadline = time.monotonic() + 10
    while _running(app_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(app_pid), "an app in its own session outlived the deployment"


def test_sigterm_stops_the_superlink_command_and_everything_it_started(tmp_path: Path) -> None:
    """systemd stops a service with SIGTERM: `carefed consortium superlink` must then stop its SuperLink and the
    SuperExec that one started, not leave them orphaned."""
    import signal
    import subprocess

    output = tmp_path / "superlink.out"
    with output.open("wb") as sink:
        command = subprocess.Popen(
            [sys.executable, "-m", "carefed", "consortium", "superlink", "--insecure", "--state-dir", str(tmp_path)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while b"SuperLink on" not in output.read_bytes():
            assert command.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "the SuperLink never came up"
            time.sleep(0.2)
        started = psutil.Process(command.pid).children(recursive=True)
        assert started, "the command runs the SuperLink as a child process"
        command.send_signal(signal.SIGTERM)
        assert command.wait(timeout=60) == 0, output.read_text()
        _, alive = psutil.wait_procs(started, timeout=30)
        assert [p.pid for p in alive if _running(p.pid)] == [], "left running after SIGTERM"
    finally:
        if command.poll() is None:
            command.kill()
