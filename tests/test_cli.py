"""The `carefed` console command: the entry point every user starts from."""

import subprocess
import sys

from typer.testing import CliRunner

from carefed import __version__
from carefed.cli import app


def test_version_prints_the_installed_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"carefed {__version__}"
    assert __version__ != "0.0.0+source", "tests must run against the installed distribution"


def test_every_documented_command_group_is_reachable() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("demo", "node", "consortium", "keys", "ledger", "fabric", "api", "audit", "report"):
        assert group in result.stdout


def test_help_does_not_import_heavy_libraries() -> None:
    """`carefed --help` must stay fast: torch, tenseal and flwr load only inside the commands that use them."""
    code = (
        "import sys; from carefed.cli import app; "
        "print(sorted(m for m in ('torch', 'tenseal', 'flwr') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
