"""Fixtures of the API tests: a real service (FastAPI app on a real database and ledger) per test.

Tests that take `any_database` run twice: on SQLite and on a real PostgreSQL server, a throw-away cluster
started by `scripts/postgres-test-server.sh` (Debian's `postgresql` package, installed by
`scripts/test-system-deps.sh` which `make test` runs first).
"""

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.api.api_testing import Service, start_service

REPO = Path(__file__).resolve().parents[2]
POSTGRES_SCRIPT = REPO / "scripts" / "postgres-test-server.sh"


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """The URL of a PostgreSQL server for the tests: `CAREFED_TEST_DATABASE_URL`, or one started here."""
    given = os.environ.get("CAREFED_TEST_DATABASE_URL")
    if given:
        yield given
        return
    started = subprocess.run([str(POSTGRES_SCRIPT), "start"], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        pytest.fail(f"could not start PostgreSQL ({started.stderr.strip()}); run scripts/test-system-deps.sh first")
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    try:
        yield values["CAREFED_TEST_DATABASE_URL"]
    finally:
        subprocess.run([str(POSTGRES_SCRIPT), "stop", values["CAREFED_PG_DIR"]], check=False)


def _fresh_postgres_database(server_url: str) -> tuple[str, str]:
    """A new empty database on the server: (its URL, its name)."""
    name = f"carefed_{uuid.uuid4().hex[:12]}"
    admin = make_url(server_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False), name


def _drop_postgres_database(server_url: str, name: str) -> None:
    admin = make_url(server_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL, once SQLite and once PostgreSQL, fresh for each test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'api.sqlite'}"
        return
    server_url = request.getfixturevalue("postgres_server_url")
    url, name = _fresh_postgres_database(server_url)
    try:
        yield url
    finally:
        _drop_postgres_database(server_url, name)


@pytest.fixture
def service(any_database: str, tmp_path: Path) -> Iterator[Service]:
    """The service on SQLite and on PostgreSQL, fresh for each test."""
    running = start_service(any_database, tmp_path / "state")
    with running.client:
        yield running


@pytest.fixture
def sqlite_service(tmp_path: Path) -> Iterator[Service]:
    """The service on SQLite only, for tests whose subject is not the database."""
    running = start_service(f"sqlite:///{tmp_path / 'api.sqlite'}", tmp_path / "state")
    with running.client:
        yield running
