"""Proposing a training run or registering a cohort query on the ledger: the consortium's part of approval.

The consortium registers the run as the hospitals are asked to approve it (`run_proposal` of the ServerApp's
settings); each hospital then votes with its own identity (`carefed node approve|reject`), and the ServerApp
starts only a run the contract says a majority approved.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from consortium.server_app import RunSettings, run_proposal
from fabric_network.identities import msp_id_for
from fabric_network.ledger import open_ledger
from federation.analytics import QuerySpec

PROJECT_DIR = Path(__file__).resolve().parent.parent


def run_settings(config: dict[str, Any]) -> RunSettings:
    """The ServerApp's settings for run-config overrides, over the app's defaults (`[tool.flwr.app.config]`)."""
    defaults = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    return RunSettings.from_run_config({**defaults["tool"]["flwr"]["app"]["config"], **config})


def register_run(state_dir: Path, run_id: str, config: dict[str, Any], *, backend: str = "embedded") -> None:
    """Register the run that run-config overrides `config` describe, as the consortium (idempotent per run id)."""
    settings = run_settings({"run-id": run_id, "state-dir": str(state_dir), **config})
    with open_ledger(backend=backend, state_dir=state_dir, org="consortium") as consortium:
        consortium.submit(
            "LineageContract:register_run", run_id, run_proposal(settings), idempotency_key=f"propose:{run_id}"
        )


def register_query(state_dir: Path, spec: QuerySpec, hospitals: list[str], *, backend: str = "embedded") -> None:
    """Register a cohort query as the consortium before it is sent (hospitals answer only a registered query)."""
    with open_ledger(backend=backend, state_dir=state_dir, org="consortium") as consortium:
        consortium.submit(
            "AnalyticsContract:register_query",
            spec.query_id,
            spec.ledger_record([msp_id_for(h) for h in hospitals]),
            idempotency_key=f"query:{spec.query_id}",
        )
