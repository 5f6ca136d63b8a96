"""A small consortium (identities, key ceremony, node configs, consents, budgets) for node-level tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.demo_data import DemoData, build_demo_data
from harness.local_consortium import HospitalPlan, set_up_consortium


@dataclass
class SmallConsortium:
    state: Path
    data: DemoData


@pytest.fixture(scope="module")
def small_consortium(tmp_path_factory: pytest.TempPathFactory) -> SmallConsortium:
    """Three hospitals of the demo split with ledger, keys, consents and ε limits of 10 (no Flower processes)."""
    state = tmp_path_factory.mktemp("consortium")
    data = build_demo_data(state / "hospital-data", ["hospital-a", "hospital-b", "hospital-c"], seed=2)
    plans = [
        HospitalPlan(h.name, h.train_data, data.schema, h.consenting, 10.0, eval_data=h.eval_data)
        for h in data.hospitals
    ]
    set_up_consortium(state, plans)
    return SmallConsortium(state, data)
