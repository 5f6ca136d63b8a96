"""Service logs rotate: a long-running service's output is kept in bounded files, newest last, no line lost
between the files that are kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carefed.logs import rotating_log

LINES = 400  # 400 lines of 40 bytes = 16,000 bytes through a 2,000-byte limit
WRITER = f"for i in range({LINES}): print(f'service line {{i:05d}} ' + 'x' * 20, flush=True)"


def _wait_for(path: Path, last_line: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text().endswith(last_line + "\n")):
        assert time.monotonic() < deadline, f"{path} never received the service's last line"
        time.sleep(0.05)


def test_a_service_log_rotates_within_its_limits_and_keeps_the_newest_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAREFED_LOG_MAX_BYTES", "2000")
    monkeypatch.setenv("CAREFED_LOG_BACKUPS", "3")
    log = tmp_path / "logs" / "peer0.hospital-a.log"
    with rotating_log(log) as sink:
        assert log.exists(), "callers wait for lines in the log at once: it must exist before the pump opens it"
        service = subprocess.Popen([sys.executable, "-c", WRITER], stdout=sink, stderr=subprocess.STDOUT)
    assert service.wait(timeout=60) == 0
    expected = [f"service line {i:05d} " + "x" * 20 for i in range(LINES)]
    _wait_for(log, expected[-1])

    files = [log.with_name(f"{log.name}.{n}") for n in (3, 2, 1)] + [log]
    assert all(f.exists() for f in files) and not log.with_name(f"{log.name}.4").exists(), "3 backups kept"
    assert all(f.stat().st_size <= 2000 for f in files), [f.stat().st_size for f in files]
    kept = [line for f in files for line in f.read_text().splitlines()]
    assert kept == expected[-len(kept) :], "the kept files are the newest lines, in order, none missing"
    assert len(kept) >= 3 * 2000 // 41, "the backups hold what their limit allows"


def test_the_pump_outlives_its_starter_and_does_not_hold_the_starters_output(tmp_path: Path) -> None:
    """`carefed fabric up` starts the services and exits: their logs must keep flowing after it is gone, and a
    caller reading its output (`carefed fabric up | tail`, a subprocess with captured output) must see it end
    although the services and their pumps go on running."""
    log = tmp_path / "orderer.log"
    service = "import time; print('still here', flush=True); time.sleep(120)"
    starter = (
        "import subprocess, sys\n"
        "from pathlib import Path\n"
        "from carefed.logs import rotating_log\n"
        f"with rotating_log(Path({str(log)!r})) as sink:\n"
        f"    p = subprocess.Popen([sys.executable, '-c', {service!r}], stdout=sink, stderr=subprocess.STDOUT,"
        " start_new_session=True)\n"
        "print(p.pid)\n"
    )
    started = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, timeout=30)
    service_pid = int(started.stdout.split()[-1])
    try:
        _wait_for(log, "still here")
    finally:
        os.kill(service_pid, signal.SIGKILL)
