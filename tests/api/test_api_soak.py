"""A short soak of the real service: two worker processes, auditing on, the bench's open-loop client.

What it proves: under concurrent load spread over several workers (which share the audit outboxes and elect one
deliverer between them) every prediction is answered and every one of them is on the ledger exactly once — a
lost event or one delivered twice by two deliverers would make the counts differ. `python -m bench.api --soak
--duration 600` is the long version; figures belong there, not here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.api import WARM_UP_REQUESTS, WARM_UP_S, prepare, soak

# Two service workers start (each imports torch and loads the model) on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(900)

RPS = 20
DURATION_S = 3.0


def test_a_short_soak_answers_everything_and_audits_each_request_once(tmp_path: Path) -> None:
    model_id, features, user_id = prepare(tmp_path)
    results = soak(tmp_path, model_id, features, user_id, rps=RPS, duration_s=DURATION_S, workers=2)
    assert results["soak_requests"] == WARM_UP_REQUESTS + int((WARM_UP_S + DURATION_S) * RPS)
    assert results["soak_errors"] == 0, results
    assert results["soak_audit_events"] == results["soak_requests"], results
