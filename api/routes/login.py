"""Sign-in: a user name and password for a JWT access token (OAuth2 password flow, so /docs can sign in)."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from sqlmodel import Session, select

from api.core.config import Settings
from api.core.problems import PROBLEM_RESPONSES, ProblemError
from api.core.security import DUMMY_PASSWORD_HASH, create_access_token, verify_password
from api.deps import SessionDep, SettingsDep
from api.models.user import Actor, Token, User

router = APIRouter(tags=["login"], responses=PROBLEM_RESPONSES)


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this name and password; the hash is checked even for unknown names (timing)."""
    user = session.exec(select(User).where(User.username == username)).first()
    password_ok = verify_password(password, user.password_hash if user else DUMMY_PASSWORD_HASH)
    return user if user is not None and user.is_active and password_ok else None


def issue_token(user: User, settings: Settings) -> Token:
    assert user.id is not None
    lifetime = timedelta(minutes=settings.access_token_minutes)
    return Token(
        access_token=create_access_token(user.id, settings.jwt_secret, lifetime),
        expires_in=int(lifetime.total_seconds()),
    )


@router.post("/login/access-token", name="login_access_token")
def login_access_token(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """Exchange a user name and password for a bearer token."""
    user = authenticate(session, form.username, form.password)
    if user is None:
        raise ProblemError(401, "wrong user name or password", field="password")
    request.state.user = Actor.of(user)
    return issue_token(user, settings)
