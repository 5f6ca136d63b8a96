"""Files that must survive a crash whole: written to a temporary name, fsynced, then renamed over the target.

Both sides keep such files (the consortium's run checkpoint, a hospital's released round replies): a kill -9 at
any moment leaves the previous version or the new one, never a torn file.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_durably(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably (write, fsync, rename)."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
