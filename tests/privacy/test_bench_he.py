"""bench/he.py keeps its contract: a human table, then one JSON object with the documented keys as the last line."""

import json
import subprocess
import sys

DOCUMENTED_KEYS = {
    "bytes_per_hospital",
    "wire_ratio_vs_float32",
    "encrypt_s",
    "add_s",
    "decrypt_s",
    "plaintext_sum_s",
    "aggregate_ratio_vs_plaintext",
    "max_abs_error",
}


def test_json_last_line_has_the_documented_keys() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.he", "--values", "3000", "--hospitals", "3", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    lines = completed.stdout.strip().splitlines()
    assert "CKKS aggregation" in completed.stdout, "the human table comes first"
    report = json.loads(lines[-1])
    assert report.keys() >= DOCUMENTED_KEYS
    assert report["max_abs_error"] <= 1e-4
    assert report["wire_ratio_vs_float32"] == report["bytes_per_hospital"] / (4 * 3000)
