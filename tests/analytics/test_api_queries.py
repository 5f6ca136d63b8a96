"""A researcher asks a query through the service: 202 at once, the query runs at the consortium as `carefed query`,
and the researcher reads the released result back, with the ledger naming them (their opaque id) as requester."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.core.config import Settings
from api.core.security import create_access_token, hash_password
from api.deps import SESSION_COOKIE
from api.main import create_app
from api.models.user import Role, User
from fabric_network.ledger import open_ledger
from harness.analytics_data import ALIVE_COHORT
from tests.analytics.conftest import QueryConsortium

pytestmark = pytest.mark.timeout(900)


def test_a_researcher_asks_through_the_service_and_reads_the_released_result_back(
    synthea_queries: QueryConsortium, tmp_path: Path
) -> None:
    state = synthea_queries.state
    (state / "cohorts").mkdir(exist_ok=True)
    shutil.copy(ALIVE_COHORT, state / "cohorts" / "alive.toml")
    settings = Settings(state_dir=state, database_url=f"sqlite:///{tmp_path / 'api.sqlite'}", audit_delivery="thread")
    app = create_app(settings)
    with Session(app.state.engine, expire_on_commit=False) as session:
        researcher = User(username="res-1", role=Role.researcher, password_hash=hash_password("x" * 12))
        clinician = User(username="dr-1", role=Role.clinician, hospital="hospital-a", password_hash="x")
        session.add_all([researcher, clinician])
        session.commit()
    token = create_access_token(researcher.id, settings.jwt_secret, dt.timedelta(minutes=30))
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        assert client.get("/queries/cohorts", headers=headers).json() == ["alive"]
        refused = client.post("/queries", headers=headers, json={"kind": "mean", "cohort": "alive", "column": "bmi"})
        assert refused.status_code == 422 and "bmi" in refused.json()["detail"], refused.text
        missing = client.post("/queries", headers=headers, json={"kind": "count", "cohort": "everyone"})
        assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "cohort"
        clinician_token = create_access_token(clinician.id, settings.jwt_secret, dt.timedelta(minutes=5))
        as_clinician = client.post(
            "/queries",
            headers={"Authorization": f"Bearer {clinician_token}"},
            json={"kind": "count", "cohort": "alive"},
        )
        assert as_clinician.status_code == 403
        asked = client.post(
            "/queries",
            headers=headers,
            json={"kind": "histogram", "cohort": "alive", "column": "age", "bins": "0,18,65,110", "epsilon": 1.0},
        )
        assert asked.status_code == 202, asked.text
        query_id = asked.json()["query_id"]
        deadline = time.monotonic() + 600
        status = asked.json()
        while status["status"] in ("queued", "registered") and time.monotonic() < deadline:
            time.sleep(3)
            status = client.get(f"/queries/{query_id}", headers=headers).json()
        assert status["status"] == "answered", status
        bins = status["result"]["strata"][0]["histogram"]
        assert [b["bin"] for b in bins] == ["[0, 18)", "[18, 65)", "[65, 110]"]
        assert status["result_sha256"] and set(status["epsilon_charged"]) == set(synthea_queries.hospitals)
        client.cookies.set(SESSION_COOKIE, token)
        page = client.get(f"/ui/queries?query_id={query_id}")
        assert page.status_code == 200 and "[18, 65)" in page.text and status["result_sha256"] in page.text
        listed = client.get("/queries", headers=headers).json()
        assert query_id in {q["query_id"] for q in listed}
    with open_ledger(state_dir=state, org="consortium") as ledger:
        record = ledger.evaluate("AnalyticsContract:read_query", query_id)
    assert (record["requester"], record["role"]) == (f"user-{researcher.id}", "researcher")
