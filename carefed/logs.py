"""Logging for every CareFed process: standard-library loggers rendered by structlog, for people or as JSON.

The packages log with ``logging.getLogger(__name__)`` (so libraries and our code share one pipeline); this
module puts structlog's `ProcessorFormatter` on the root handler, which adds a UTC timestamp and the level and
renders either coloured console lines or one JSON object per line (``--log-format json``) for a log collector.
"""

from __future__ import annotations

import logging
import sys

import structlog

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
