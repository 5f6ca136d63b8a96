"""A run's progress at the consortium, kept on disk after every round so that a crashed aggregator can resume.

What the aggregator needs to continue a run is small: the rounds it completed (what it will still record on the
ledger) and the last encrypted aggregate, which the hospitals decrypt into the global model of the next round.
The aggregate is CKKS ciphertext under the hospitals' key, so keeping it on the consortium's disk reveals nothing
the aggregator did not already hold. Files are replaced atomically (write, fsync, rename), so a kill -9 at any
moment leaves either the previous round's checkpoint or the new one, never a torn file; the aggregate's SHA-256 in
the checkpoint ties the two files together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.files import write_durably

CHECKPOINT_FILE = "checkpoint.json"
AGGREGATE_FILE = "aggregate.bin"


class CheckpointError(ValueError):
    """The checkpoint on disk cannot be trusted to continue the run (the message says what is wrong)."""


def checkpoint_dir(state_dir: Path, run_id: str) -> Path:
    """Where the consortium keeps a run's checkpoint."""
    return state_dir / "consortium" / "runs" / run_id


@dataclass(frozen=True)
class RunCheckpoint:
    """The rounds a run completed (as the aggregator logs them) and the aggregate of the last one."""

    run_id: str
    rounds: tuple[dict[str, Any], ...]
    aggregate: bytes

    @property
    def last_round(self) -> int:
        return int(self.rounds[-1]["round"]) if self.rounds else 0

    def save(self, state_dir: Path) -> None:
        """Aggregate first, then the checkpoint naming its hash: a crash in between leaves the old checkpoint,
        whose hash no longer matches, and `load` says so instead of continuing from the wrong model."""
        directory = checkpoint_dir(state_dir, self.run_id)
        directory.mkdir(parents=True, exist_ok=True)
        write_durably(directory / AGGREGATE_FILE, self.aggregate)
        record = {
            "run_id": self.run_id,
            "round": self.last_round,
            "aggregate_sha256": hashlib.sha256(self.aggregate).hexdigest(),
            "rounds": list(self.rounds),
        }
        write_durably(directory / CHECKPOINT_FILE, json.dumps(record, sort_keys=True).encode())

    @classmethod
    def load(cls, state_dir: Path, run_id: str) -> RunCheckpoint | None:
        """The run's checkpoint, or None if it completed no round yet; CheckpointError if it is damaged."""
        directory = checkpoint_dir(state_dir, run_id)
        path = directory / CHECKPOINT_FILE
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            rounds = tuple(dict(r) for r in record["rounds"])
            expected = str(record["aggregate_sha256"])
            numbers = [int(r["round"]) for r in rounds]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path} is unreadable ({exc})") from exc
        if record.get("run_id") != run_id or numbers != list(range(1, len(numbers) + 1)) or not numbers:
            raise CheckpointError(f"{path} is not a checkpoint of run {run_id} with rounds 1…n")
        try:
            aggregate = (directory / AGGREGATE_FILE).read_bytes()
        except OSError as exc:
            raise CheckpointError(f"the aggregate of round {numbers[-1]} is missing ({exc})") from exc
        if hashlib.sha256(aggregate).hexdigest() != expected or rounds[-1].get("aggregate_sha256") != expected:
            raise CheckpointError(f"the aggregate on disk is not the one round {numbers[-1]} produced (hash differs)")
        return cls(run_id, rounds, aggregate)
