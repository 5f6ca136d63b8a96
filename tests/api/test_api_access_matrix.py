"""The role-by-endpoint matrix, exhaustively: every route of the app, as nobody and as every role.

A route the matrix allows must not answer 401/403 (it may still answer 404/409/422 for its own reasons); any
other caller is refused, 401 without credentials and 403 with the wrong role, and the refusal itself is on
the ledger as an `<action>.refused` audit event by that caller.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts

from api.core.access import ACCESS_MATRIX
from api.deps import SESSION_COOKIE
from api.models.consent import EXAMPLE_CONSENT
from api.models.user import Role
from tests.api.api_testing import PASSWORD, ROLE_USERS, Service, start_service
from tests.api.model_fixture import RegisteredModel, register_model

PRINCIPALS: list[Role | None] = [None, *Role]


class Fixture:
    """One service shared by the matrix tests, with a node, a consent and a model of hospital A."""

    def __init__(self, service: Service, model: RegisteredModel, node_id: int, pseudonym: str) -> None:
        self.service = service
        self.model = model
        self.node_id = node_id
        self.pseudonym = pseudonym
        self.routes = {
            context.name: (sorted(context.methods or {"GET"})[0], context.path)
            for context in iter_route_contexts(service.client.app.routes)  # type: ignore[attr-defined]
        }


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    root: Path = tmp_path_factory.mktemp("matrix")
    service = start_service(f"sqlite:///{root / 'api.sqlite'}", root / "state")
    with service.client:
        model = register_model(root / "state")
        headers = service.headers("it-a")
        node = service.client.post("/nodes", headers=headers, json={"name": "node-1", "hospital": "hospital-a"})
        consent = service.client.post("/consents", headers=headers, json=_consent())
        assert node.status_code == 201 and consent.status_code == 201, (node.text, consent.text)
        pseudonym = consent.json()["patient"]["identifier"]["value"]
        yield Fixture(service, model, node.json()["id"], pseudonym)


def _consent() -> dict[str, Any]:
    return {**EXAMPLE_CONSENT, "patient": {"identifier": {"value": f"MRN-{uuid.uuid4().hex[:8]}"}}}


def _request(fixture: Fixture, name: str) -> tuple[str, str, dict[str, Any]]:
    """Method, concrete path and request arguments that make a well-formed call of the route."""
    method, path = fixture.routes[name]
    features = fixture.model.benign_example
    path = (
        path.replace("{node_id}", str(fixture.node_id))
        .replace("{pseudonym}", fixture.pseudonym)
        .replace("{purpose}", "HRESCH")
        .replace("{model_id:path}", fixture.model.model_id)
        .replace("{path:path}", "carefed.css")
        .replace("{query_id}", "query-" + "0" * 32)
    )
    bodies: dict[str, dict[str, Any]] = {
        "login_access_token": {"data": {"username": "admin", "password": PASSWORD}},
        "create_user": {
            "json": {"username": f"u-{uuid.uuid4().hex[:8]}", "role": "compliance_officer", "password": "x" * 12}
        },
        "register_node": {"json": {"name": f"n-{uuid.uuid4().hex[:8]}", "hospital": "hospital-a"}},
        "report_node_heartbeat": {"json": {"state": "idle"}},
        "create_consent": {"json": _consent()},
        "search_patient_consents": {"json": {"mrn": "MRN-unknown"}},
        "predict": {"json": {"features": features}},
        "page_sign_in_submit": {"data": {"username": "admin", "password": PASSWORD}},
        "page_predict_submit": {
            "data": {"model_id": fixture.model.model_id, **{f"feature.{k}": str(v) for k, v in features.items()}}
        },
        "page_consent_create": {
            "data": {
                "mrn": f"MRN-{uuid.uuid4().hex[:8]}",
                "purpose": "HRESCH",
                "scope": "research",
                "start": "2026-01-01",
            }
        },
        "page_consent_search": {"data": {"mrn": "MRN-unknown"}},
        # An unpublished cohort: well-formed, answered 404, so the matrix starts no query process.
        "submit_query": {"json": {"kind": "count", "cohort": "not-published"}},
        "page_query_submit": {"data": {"kind": "count", "cohort": "not-published"}},
    }
    return method, path, bodies.get(name, {})


def _credentials(fixture: Fixture, name: str, role: Role | None) -> dict[str, str]:
    if role is None:
        return {}
    token = fixture.service.token(ROLE_USERS[role])
    if name.startswith("page_"):
        return {"Cookie": f"{SESSION_COOKIE}={token}"}
    return {"Authorization": f"Bearer {token}"}


def _refusals(fixture: Fixture, name: str, actor: str) -> int:
    fixture.service.flush_audit()
    ledger = fixture.service.client.app.state.ledgers.of("consortium")  # type: ignore[attr-defined]
    return len(ledger.evaluate("AuditContract:query_audit", {"action": f"api.{name}.refused", "actor": actor}))


def test_every_route_of_the_app_is_in_the_matrix(matrix: Fixture) -> None:
    assert set(matrix.routes) == set(ACCESS_MATRIX)


@pytest.mark.parametrize("role", PRINCIPALS, ids=lambda role: role.value if role else "anonymous")
@pytest.mark.parametrize("name", sorted(ACCESS_MATRIX))
def test_route_answers_exactly_the_roles_of_the_matrix(matrix: Fixture, name: str, role: Role | None) -> None:
    access = ACCESS_MATRIX[name]
    method, path, arguments = _request(matrix, name)
    headers = _credentials(matrix, name, role)
    allowed = access.public or (role is not None and role in access.roles)
    actor = "anonymous" if role is None else f"user-{matrix.service.users[ROLE_USERS[role]].id}"
    refusals_before = 0 if allowed else _refusals(matrix, name, actor)
    response = matrix.service.client.request(method, path, headers=headers, follow_redirects=False, **arguments)
    if allowed:
        assert response.status_code not in (401, 403), (method, path, response.status_code, response.text[:300])
        assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
        return
    assert response.status_code == (401 if role is None else 403), (method, path, response.text[:300])
    assert _refusals(matrix, name, actor) == refusals_before + 1, "the refusal was not audited"


def test_unparsable_body_is_refused_before_it_is_validated(matrix: Fixture) -> None:
    """FastAPI parses JSON before dependencies run; the access matrix must still answer first."""
    client = matrix.service.client
    broken = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    assert client.post("/consents", **broken).status_code == 401
    clinician = {"Authorization": f"Bearer {matrix.service.token('clinician-a')}", "Content-Type": "application/json"}
    assert client.post("/consents", content=b"{not json", headers=clinician).status_code == 403
    it = {"Authorization": f"Bearer {matrix.service.token('it-a')}", "Content-Type": "application/json"}
    assert client.post("/consents", content=b"{not json", headers=it).status_code == 422


def test_wrong_hospital_is_refused_and_audited(matrix: Fixture) -> None:
    client = matrix.service.client
    created = client.post("/consents", headers=matrix.service.headers("it-a"), json=_consent())
    pseudonym = created.json()["patient"]["identifier"]["value"]
    other_it = matrix.service.headers("it-b")
    actor = f"user-{matrix.service.users['it-b'].id}"
    before = _refusals(matrix, "read_consent", actor) + _refusals(matrix, "read_node", actor)
    consent = client.get(f"/consents/{pseudonym}/HRESCH", headers=other_it)
    node = client.get(f"/nodes/{matrix.node_id}", headers=other_it)
    assert consent.status_code == 403 and node.status_code == 403
    assert "another hospital" in consent.json()["detail"]
    assert _refusals(matrix, "read_consent", actor) + _refusals(matrix, "read_node", actor) == before + 2
    withdraw = client.post(f"/consents/{pseudonym}/HRESCH/withdraw", headers=other_it)
    assert withdraw.status_code == 403
    still = client.get(f"/consents/{pseudonym}/HRESCH", headers=matrix.service.headers("it-a"))
    assert still.json()["status"] == "active"
