"""Where things live in a CareFed state directory: the one place both sides take the paths they share from.

A hospital's node keeps its state (configuration, pseudonym table, its CKKS secret context) under
``<state-dir>/nodes/<hospital>``; on one machine the harness and the consortium's key ceremony write there, across
hosts only the hospital does.
"""

from __future__ import annotations

from pathlib import Path


def node_dir_for(state_dir: Path, hospital: str) -> Path:
    """Where a hospital's node keeps its state under a CareFed state directory."""
    return state_dir / "nodes" / hospital
