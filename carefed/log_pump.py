"""The process behind a rotated service log: reads the service's output from a pipe, writes it with rotation.

Fabric nodes, chaincode servers and Flower's SuperLink/SuperNodes run for days and write to stdout. A file
handed to them as stdout grows without bound and cannot be rotated: they never reopen it. So each service
writes to a pipe whose other end is this small process, which hands every line to the standard library's
`RotatingFileHandler` (`name.log`, then `name.log.1` … `name.log.N`, oldest dropped) and exits when every
writer has closed the pipe (the service and whatever it started). It imports nothing of CareFed's, so starting
one per service costs little; `carefed.logs.rotating_log` starts it.

Usage: ``python -m carefed.log_pump FILE MAX_BYTES BACKUPS`` with the service's output on stdin.
"""

from __future__ import annotations

import logging
import sys
from logging.handlers import RotatingFileHandler


def pump(path: str, max_bytes: int, backups: int) -> None:
    """Copy stdin to ``path`` line by line until end of file, rotating when a line would pass ``max_bytes``."""
    handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        for raw in sys.stdin.buffer:
            line = raw.decode("utf-8", errors="replace").removesuffix("\n")
            handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
    finally:
        handler.close()


if __name__ == "__main__":
    pump(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
