"""Logging for every CareFed process: standard-library loggers rendered by structlog, for people or as JSON.

The packages log with ``logging.getLogger(__name__)`` (so libraries and our code share one pipeline); this
module puts structlog's `ProcessorFormatter` on the root handler, which adds a UTC timestamp and the level and
renders either coloured console lines or one JSON object per line (``--log-format json``) for a log collector.
The long-running services CareFed starts (Fabric nodes, chaincode servers, Flower's SuperLink and SuperNodes)
log to files with rotation: `rotating_log`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from carefed.options import LogFormat


def _formatter(log_format: LogFormat) -> structlog.stdlib.ProcessorFormatter:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if log_format is LogFormat.json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


def level_for(verbose: int, quiet: bool) -> int:
    """``-q`` → errors only; default → warnings; ``-v`` → info; ``-vv`` → debug."""
    if quiet:
        return logging.ERROR
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


class _CareFedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure_logging` installs; marked by its class so a second call replaces only it."""


def configure_logging(level: int = logging.WARNING, log_format: LogFormat = LogFormat.console) -> None:
    """Route every standard-library logger through one stderr handler rendered by structlog.

    Handlers others installed on the root logger (a test runner's, an embedding application's) stay.
    """
    handler = _CareFedHandler(sys.stderr)
    handler.setFormatter(_formatter(log_format))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CareFedHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    structlog.configure(
        processors=[structlog.stdlib.add_log_level, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class LogRotation(BaseSettings):
    """How large a service's log file grows before it is rotated, and how many old files are kept."""

    model_config = SettingsConfigDict(env_prefix="CAREFED_LOG_")

    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="rotate a service log past this size")
    backups: int = Field(default=5, ge=1, description="rotated files kept: name.log.1 … name.log.N")


@contextmanager
def rotating_log(path: Path, rotation: LogRotation | None = None) -> Iterator[IO[bytes]]:
    """A pipe to hand a service as stdout/stderr; `carefed.log_pump` writes what arrives to ``path`` with
    rotation. Start the service inside the ``with``: on leaving it only the service (and what it starts) holds
    the pipe, so the pump ends when they do.
    """
    rotation = rotation or LogRotation()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()  # there at once for readers that wait for a line in it (the pump opens it a moment later)
    pump = subprocess.Popen(
        [sys.executable, "-m", "carefed.log_pump", str(path), str(rotation.max_bytes), str(rotation.backups)],
        stdin=subprocess.PIPE,
        # Not the starter's stdout/stderr: a pump outlives `carefed fabric up`, and holding the caller's pipe
        # open would keep `carefed fabric up | tail` (or a subprocess capturing its output) waiting for ever.
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C for the service's parent must not cut its log short
    )
    assert pump.stdin is not None
    try:
        yield pump.stdin
    finally:
        pump.stdin.close()
