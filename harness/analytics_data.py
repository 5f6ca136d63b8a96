"""Consortia for federated queries on one machine: the three Synthea hospitals, whole, with every patient consenting.

Training splits each hospital's patients into training and held-out data; a query asks about a hospital's whole
export, so here every archive is unpacked entire. Each patient alive at the index date
(data/synthea-r4/cohort-alive.toml) consents to research (HRESCH), and every hospital gets a budget limit.
`bench/analytics.py` and the analytics tests use this, and through it the same set-up path as the demo.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from harness.local_consortium import HospitalPlan, set_up_consortium
from harness.synthea_data import SYNTHEA_DIR
from hospital_node.config import DEFAULT_PURPOSE
from hospital_node.data import DataSchema, load_records

ALIVE_COHORT = SYNTHEA_DIR / "cohort-alive.toml"
ADULTS_COHORT = SYNTHEA_DIR / "cohort-adults.toml"
SYNTHEA_HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")


def unpack_synthea(out_dir: Path) -> dict[str, Path]:
    """Each hospital's archive unpacked as published into ``out_dir/<hospital>``; hospital → directory."""
    directories: dict[str, Path] = {}
    for name in SYNTHEA_HOSPITALS:
        directory = out_dir / name
        if not directory.exists():
            with tarfile.open(SYNTHEA_DIR / f"{name}.tar.xz") as tar:
                tar.extractall(directory, filter="data")
        directories[name] = directory
    return directories


def set_up_synthea_queries(state_dir: Path, data_dir: Path, epsilon_limit: float, backend: str = "embedded") -> None:
    """A fresh consortium of the three Synthea hospitals for queries (identities, keys, consents, budgets)."""
    schema = DataSchema.from_toml(ALIVE_COHORT)
    plans = [
        HospitalPlan(
            name,
            directory,
            ALIVE_COHORT,
            load_records(directory, schema).usable_records().mrns,
            epsilon_limit,
        )
        for name, directory in unpack_synthea(data_dir).items()
    ]
    set_up_consortium(state_dir, plans, DEFAULT_PURPOSE, backend)
