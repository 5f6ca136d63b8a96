"""Every bench script starts both ways the docs write it: `python -m bench.X` and `python bench/X.py`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in ("__init__", "script_mode"))


@pytest.mark.parametrize("form", ["file", "module"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bench_script_starts_both_ways(script: str, form: str) -> None:
    """As a file, bench/ is the top of sys.path, where bench/api.py used to shadow the `api` package; as a
    module, the repository is."""
    command = [f"bench/{script}.py"] if form == "file" else ["-m", f"bench.{script}"]
    done = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--json" in done.stdout
