"""Helpers of the API tests: a running service with one user per role (see conftest.py for the fixtures)."""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session

from api.core.config import Settings
from api.core.security import create_access_token, hash_password
from api.main import create_app
from api.models.user import Role, User
from fabric_network.identities import init_identities

PASSWORD = "correct-horse-battery-staple"
PASSWORD_HASH = hash_password(PASSWORD)


@dataclass
class Service:
    """A running app (in-process ASGI) with one user per role, and bearer headers for each."""

    client: TestClient
    settings: Settings
    users: dict[str, User]

    def token(self, username: str) -> str:
        user = self.users[username]
        assert user.id is not None
        return create_access_token(user.id, self.settings.jwt_secret, timedelta(minutes=5))

    def flush_audit(self) -> None:
        """Deliver the audit events the outboxes hold, so the ledger shows every request made so far.

        In a thread of its own: the embedded ledger runs its contracts on an event loop, which cannot start in
        a thread that already runs one (as Playwright's sync API does in the browser tests).
        """
        hub = self.client.app.state.ledgers  # type: ignore[attr-defined]
        with ThreadPoolExecutor(max_workers=1) as worker:
            assert worker.submit(hub.flush_outboxes).result(), "the audit outbox did not drain"

    def headers(self, username: str | None) -> dict[str, str]:
        return {} if username is None else {"Authorization": f"Bearer {self.token(username)}"}


# One user per role at hospital-a (consortium-wide roles have none), and a second hospital's staff.
TEST_USERS: dict[str, tuple[Role, str | None]] = {
    "it-a": (Role.hospital_it, "hospital-a"),
    "clinician-a": (Role.clinician, "hospital-a"),
    "compliance": (Role.compliance_officer, None),
    "admin": (Role.consortium_admin, None),
    "it-b": (Role.hospital_it, "hospital-b"),
    "clinician-b": (Role.clinician, "hospital-b"),
    "researcher": (Role.researcher, None),
}
# The user who plays each role in role-by-route tests.
ROLE_USERS: dict[Role, str] = {
    Role.hospital_it: "it-a",
    Role.clinician: "clinician-a",
    Role.compliance_officer: "compliance",
    Role.consortium_admin: "admin",
    Role.researcher: "researcher",
}


HOSPITALS = ("hospital-a", "hospital-b")


def start_service(database_url: str, state_dir: Path, hospital: str | None = None) -> Service:
    """The app on a fresh consortium (identities for two hospitals, an empty embedded ledger); `hospital`: the
    service runs for that hospital (models from its own registry copy)."""
    init_identities(state_dir, HOSPITALS)
    settings = Settings(state_dir=state_dir, database_url=database_url, audit_delivery="thread", hospital=hospital)
    app = create_app(settings)
    users = {}
    with Session(app.state.engine, expire_on_commit=False) as session:
        for username, (role, hospital) in TEST_USERS.items():
            user = User(username=username, role=role, hospital=hospital, password_hash=PASSWORD_HASH)
            session.add(user)
            session.commit()
            session.refresh(user)
            users[username] = user
    return Service(client=TestClient(app), settings=settings, users=users)
