"""The options every `carefed` command shares, the environment they read, and their choices as Enums.

One place names the environment variables (documented in docs/configuration.md), so a command's default never
overrides them: Click reads ``CAREFED_STATE_DIR``, ``CAREFED_LEDGER_BACKEND`` and ``CAREFED_ORG`` whenever the
option is not given on the command line, and the library settings (`LedgerSettings`, the API's `Settings`, both
pydantic-settings) read the same names when code opens a ledger or the service without a CLI in front of it.
This module stays import-light (no torch, flwr, fhir.resources) because every command's signature uses it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

ENV_STATE_DIR = "CAREFED_STATE_DIR"
ENV_LEDGER_BACKEND = "CAREFED_LEDGER_BACKEND"
ENV_ORG = "CAREFED_ORG"
ENV_LOG_FORMAT = "CAREFED_LOG_FORMAT"
DEFAULT_STATE_DIR = Path(".carefed")


class LedgerBackend(StrEnum):
    """Where the consortium ledger runs: embedded (SQLite, the default) or a Hyperledger Fabric network."""

    embedded = "embedded"
    fabric = "fabric"


class LedgerRole(StrEnum):
    """Which identity of an organisation signs: its client user, its admin or its node."""

    client = "client"
    admin = "admin"
    node = "node"


class ReportFormat(StrEnum):
    """How a regulator's report is written."""

    markdown = "markdown"
    json = "json"


class QueryKind(StrEnum):
    """What a federated cohort query releases (docs/analytics.md); upper-case names because `count` is a str method."""

    COUNT = "count"
    MEAN = "mean"
    STDDEV = "stddev"
    HISTOGRAM = "histogram"
    QUANTILES = "quantiles"
    TABLE = "table"


class LogFormat(StrEnum):
    """Log lines for people (console) or for a log collector (one JSON object per line)."""

    console = "console"
    json = "json"


StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar=ENV_STATE_DIR,
        help="CareFed state directory: ledger, identities, keys, nodes, registry (git-ignored).",
    ),
]
Backend = Annotated[
    LedgerBackend, typer.Option("--backend", envvar=ENV_LEDGER_BACKEND, help="Where the consortium ledger runs.")
]
Org = Annotated[
    str,
    typer.Option(
        "--org", envvar=ENV_ORG, help="Organisation whose identity reads (and signs): consortium or a hospital."
    ),
]
Role = Annotated[LedgerRole, typer.Option("--role", help="Which identity of the org signs.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts) instead of a table.")]


def read_mrn(hospital: str) -> str:
    """A patient's MRN from stdin (piped, first line) or a hidden prompt — never from argv, where it would land
    in shell history and in `ps` output for every user of the machine."""
    import sys

    if sys.stdin.isatty():
        mrn = str(typer.prompt(f"MRN at {hospital} (not echoed)", hide_input=True))
    else:
        mrn = sys.stdin.readline()
    mrn = mrn.strip()
    if not mrn:
        raise typer.BadParameter("no MRN: pipe it on stdin or type it at the prompt", param_hint="MRN")
    return mrn
