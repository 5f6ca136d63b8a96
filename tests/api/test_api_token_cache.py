"""The per-worker cache of verified tokens: a deactivation takes effect within its time-to-live, never later."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from api.core.db import make_engine, upgrade_to_head
from api.core.security import create_access_token
from api.deps import TokenUsers
from api.models.user import Role, User

SECRET = "test-secret-" + "x" * 40


def _user(engine: Engine, active: bool = True) -> int:
    with Session(engine, expire_on_commit=False) as session:
        user = User(username=f"u{time.monotonic_ns()}", role=Role.clinician, hospital="hospital-a", password_hash="-")
        user.is_active = active
        session.add(user)
        session.commit()
        assert user.id is not None
        return user.id


def _deactivate(engine: Engine, user_id: int) -> None:
    with Session(engine) as session:
        user = session.get(User, user_id)
        assert user is not None
        user.is_active = False
        session.add(user)
        session.commit()


def test_a_deactivated_user_is_refused_once_the_cached_entry_expires(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'api.sqlite'}")
    upgrade_to_head(engine)
    user_id = _user(engine)
    token = create_access_token(user_id, SECRET, timedelta(minutes=5))
    cached, uncached = TokenUsers(engine, SECRET, ttl_s=0.5), TokenUsers(engine, SECRET, ttl_s=0)
    assert (cached.user(token) or User()).id == user_id == (uncached.user(token) or User()).id
    _deactivate(engine, user_id)
    assert uncached.user(token) is None, "without the cache a deactivation applies to the next request"
    assert cached.user(token) is not None, "within its time-to-live the cached user is served from memory"
    time.sleep(0.6)
    assert cached.user(token) is None, "after the time-to-live the database decides again"


def test_invalid_or_expired_tokens_are_never_served(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'api.sqlite'}")
    upgrade_to_head(engine)
    user_id = _user(engine)
    users = TokenUsers(engine, SECRET, ttl_s=60)
    expired = create_access_token(user_id, SECRET, timedelta(seconds=-1))
    foreign = create_access_token(user_id, "another-secret-" + "y" * 40, timedelta(minutes=5))
    assert users.user(expired) is None and users.user(foreign) is None
    short_lived = create_access_token(user_id, SECRET, timedelta(seconds=1))
    assert users.user(short_lived) is not None
    time.sleep(1.1)
    assert users.user(short_lived) is None, "a cached entry never outlives its token"
