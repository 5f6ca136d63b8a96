"""Property-based fuzzing of every API operation from the OpenAPI schema (schemathesis): no input makes a 5xx.

Each operation is called as a user whose role the access matrix allows for it, so the generated inputs reach
the handlers instead of stopping at 401/403. The example count is bounded to keep the run short.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from api.core.access import ACCESS_MATRIX
from tests.api.api_testing import ROLE_USERS, Service, start_service
from tests.api.model_fixture import register_model

# Every operation fuzzed against a live service.
pytestmark = pytest.mark.timeout(900)

MAX_EXAMPLES = 10
# Routes outside the OpenAPI schema: the schema documents themselves, static files and the web pages.
NOT_IN_SCHEMA = ("openapi", "swagger_ui", "redoc", "static", "page_", "picture_")


@pytest.fixture(scope="module")
def fuzzed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root: Path = tmp_path_factory.mktemp("schemathesis")
    service = start_service(f"sqlite:///{root / 'api.sqlite'}", root / "state")
    with service.client:
        register_model(root / "state")
        # The first use of a model imports torch and checks the artefact (seconds): not what is fuzzed here.
        assert service.client.get("/models", headers=service.headers("clinician-a")).status_code == 200
        yield service


def fuzz(operation: Any, headers: dict[str, str], failures: list[str]) -> None:
    """Call one operation with generated inputs; server errors are collected, other errors must be problems."""

    @given(case=operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def call(case: schemathesis.Case) -> None:
        response = case.call(headers={**(case.headers or {}), **headers})
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")
        elif response.status_code >= 400:
            assert response.headers["content-type"] == ["application/problem+json"], case.formatted_path

    call()


def test_no_input_makes_a_server_error(fuzzed_service: Service) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_service.client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(1 for name in ACCESS_MATRIX if not name.startswith(NOT_IN_SCHEMA))
    failures: list[str] = []
    for operation in operations:
        access = ACCESS_MATRIX[operation.definition.raw["operationId"]]
        role = min(access.roles, key=lambda r: r.value)
        fuzz(operation, {} if access.public else fuzzed_service.headers(ROLE_USERS[role]), failures)
    assert not failures, "\n".join(failures)
