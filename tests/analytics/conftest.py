"""A consortium of the three Synthea hospitals (whole exports, every living patient consenting) for query tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.analytics_data import SYNTHEA_HOSPITALS, set_up_synthea_queries

EPSILON_LIMIT = 50.0


@dataclass(frozen=True)
class QueryConsortium:
    state: Path
    data: Path
    hospitals: tuple[str, ...] = SYNTHEA_HOSPITALS


@pytest.fixture(scope="session")
def synthea_queries(tmp_path_factory: pytest.TempPathFactory) -> QueryConsortium:
    root = tmp_path_factory.mktemp("synthea-queries")
    set_up_synthea_queries(root / "state", root / "data", EPSILON_LIMIT)
    return QueryConsortium(root / "state", root / "data")
