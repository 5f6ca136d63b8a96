"""Users, sign-in and tokens, on SQLite and PostgreSQL."""

from sqlmodel import Session, select

from api.models.user import User
from tests.api.api_testing import PASSWORD, TEST_USERS, Service


def test_sign_in_gives_a_token_that_identifies_the_user(service: Service) -> None:
    response = service.client.post("/login/access-token", data={"username": "clinician-a", "password": PASSWORD})
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    me = service.client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["username"] == "clinician-a"
    assert me.json()["role"] == "clinician"
    assert me.json()["hospital"] == "hospital-a"


def test_wrong_password_is_refused_naming_the_field(service: Service) -> None:
    response = service.client.post("/login/access-token", data={"username": "admin", "password": "not-the-password"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "password"


def test_tampered_or_foreign_token_is_refused(service: Service) -> None:
    token = service.token("admin")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (tampered, "not-a-jwt"):
        response = service.client.get("/users/me", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401
        assert response.json()["detail"] == "invalid or expired token"


def test_admin_creates_user_with_argon2_hash_and_role_rules(service: Service) -> None:
    headers = service.headers("admin")
    created = service.client.post(
        "/users",
        headers=headers,
        json={"username": "dr-new", "role": "clinician", "hospital": "hospital-b", "password": "a-long-password-1"},
    )
    assert created.status_code == 201, created.text
    assert "password" not in created.text
    with Session(service.client.app.state.engine) as session:  # type: ignore[attr-defined]
        stored = session.exec(select(User).where(User.username == "dr-new")).one()
    assert stored.password_hash.startswith("$argon2id$")
    signed_in = service.client.post("/login/access-token", data={"username": "dr-new", "password": "a-long-password-1"})
    assert signed_in.status_code == 200


def test_bad_user_input_names_the_field_and_stores_nothing(service: Service) -> None:
    headers = service.headers("admin")
    cases = {
        "hospital": {"username": "dr-x", "role": "clinician", "password": "a-long-password-1"},
        "password": {"username": "dr-x", "role": "clinician", "hospital": "hospital-a", "password": "short"},
        "role": {"username": "dr-x", "role": "surgeon", "hospital": "hospital-a", "password": "a-long-password-1"},
    }
    for field, body in cases.items():
        response = service.client.post("/users", headers=headers, json=body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert [error["field"] for error in response.json()["errors"]] == [field]
    taken = service.client.post(
        "/users", headers=headers, json={"username": "it-a", "role": "compliance_officer", "password": "x" * 12}
    )
    assert taken.status_code == 409
    assert taken.json()["errors"][0]["field"] == "username"
    listing = service.client.get("/users", headers=headers, params={"limit": 100})
    assert {user["username"] for user in listing.json()["items"]} == {
        "it-a",
        "clinician-a",
        "compliance",
        "admin",
        "it-b",
        "clinician-b",
        "researcher",
    }


def test_user_list_is_paginated(service: Service) -> None:
    headers = service.headers("admin")
    first = service.client.get("/users", headers=headers, params={"offset": 0, "limit": 4}).json()
    second = service.client.get("/users", headers=headers, params={"offset": 4, "limit": 4}).json()
    assert first["total"] == second["total"] == len(TEST_USERS) == 7
    assert len(first["items"]) == 4 and len(second["items"]) == 3
    assert {u["id"] for u in first["items"]}.isdisjoint({u["id"] for u in second["items"]})
    too_many = service.client.get("/users", headers=headers, params={"limit": 1000})
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0] == {"field": "limit", "location": "query", "message": "at most 100"}
