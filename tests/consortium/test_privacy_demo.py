"""`carefed demo` (interim privacy-core demo): DP at three hospitals, keyless aggregation, budget refusal."""

import re

from typer.testing import CliRunner

from carefed.cli import app


def test_demo_prints_epsilon_sizes_and_error_and_stops_at_the_budget() -> None:
    result = CliRunner().invoke(app, ["demo", "--rounds", "1", "--epochs", "1", "--epsilon-per-round", "2"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    for hospital in ("st-mary", "northgate", "riverside"):
        assert hospital in output
    assert "no secret key" in output
    error = re.search(r"decryption error vs plaintext average ([0-9.e+-]+)", output)
    assert error is not None and float(error.group(1)) < 1e-4
    assert "round 2 refused before any training step" in output
    assert "limit 2.0000" in output
