"""`bench/analytics.py --json` prints the error table the [analytics] acceptance reads (a short run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_the_bench_prints_relative_errors_that_shrink_as_epsilon_grows() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.analytics", "--trials", "5", "--no-latency", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < summary["rel_error_mean_eps1"] <= summary["rel_error_mean_eps1_worst"]
    rows = summary["rel_error"]
    assert {r["cohort"] for r in rows} == {"synthea alive (age)", "synthea adults (bmi)", "breast cancer (mean_radius)"}
    for cohort in {r["cohort"] for r in rows}:
        by_epsilon = sorted((r["epsilon"], r["count"]) for r in rows if r["cohort"] == cohort)
        assert by_epsilon[0][1] > by_epsilon[-1][1], "ε = 0.1 adds more noise than ε = 1"
