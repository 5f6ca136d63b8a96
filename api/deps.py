"""FastAPI dependencies: settings, database sessions, and the authorisation every route goes through.

Dependencies that only read app state are `async`: FastAPI runs every sync dependency in its threadpool, one
thread hop each, which a prediction answered in a few milliseconds would otherwise pay several times. The
authorisation is `async` too: a token seen in the last `auth_cache_seconds` is answered from memory
(`TokenUsers`), and only a new token costs its HMAC check and one database lookup.
"""

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import OAuth2PasswordBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import Engine
from sqlmodel import Session

from api.core.access import ACCESS_MATRIX
from api.core.catalog import ModelCatalog
from api.core.config import Settings
from api.core.ledger import LedgerHub
from api.core.problems import ProblemError
from api.core.security import verified_token
from api.models.user import Actor, User

SESSION_COOKIE = "carefed_session"
PAGE_TAG = "pages"

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/login/access-token", auto_error=False)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


class TokenUsers:
    """Verified tokens and their (active) users, remembered for `ttl_s` seconds and never past the token's expiry.

    Each worker process keeps its own; a deactivated user or a changed role therefore takes effect within
    `ttl_s` everywhere (0 turns the cache off: every request verifies and reads the database).
    """

    MAX_ENTRIES = 10_000  # a flood of distinct tokens empties the cache rather than growing it

    def __init__(self, engine: Engine, secret: str, ttl_s: float) -> None:
        self._engine, self._secret, self._ttl_s = engine, secret, ttl_s
        self._entries: dict[str, tuple[User | None, float]] = {}
        self._lock = threading.Lock()

    def user(self, token: str) -> User | None:
        """The active user a valid token names, or None (invalid, expired, unknown or deactivated)."""
        now = time.time()
        with self._lock:
            cached = self._entries.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        verified = verified_token(token, self._secret)
        if verified is None:
            return None
        user_id, expires_at = verified
        # A session of its own, closed at once: no pooled connection is held while the request runs.
        with Session(self._engine, expire_on_commit=False) as session:
            user = session.get(User, user_id)
        if user is not None and not user.is_active:
            user = None
        if self._ttl_s > 0:
            with self._lock:
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
                self._entries[token] = (user, min(now + self._ttl_s, expires_at))
        return user


class SignInRequired(ProblemError):
    """No valid credentials: API routes answer 401, pages answer 401 with the sign-in form."""

    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": "Bearer"})


def is_page(request: Request) -> bool:
    """Is this request for a web page (signed in by cookie, errors rendered as HTML)?"""
    return PAGE_TAG in getattr(request.scope.get("route"), "tags", [])


def _credentials(request: Request, bearer: str | None) -> str | None:
    """The bearer token for API routes; pages (forms in a browser) use the session cookie instead."""
    if bearer:
        return bearer
    if is_page(request):
        return request.cookies.get(SESSION_COOKIE)
    return None


def resolve_access(request: Request, bearer: str | None) -> User | None:
    """Apply the access matrix to this request: the signed-in user, None on a public route, else refuse.

    The user is left on `request.state` for the audit middleware, so a refused request is audited with
    whoever tried it.
    """
    request.state.access_checked = True
    route_name = getattr(request.scope.get("route"), "name", None)
    access = ACCESS_MATRIX.get(route_name or "")
    token = _credentials(request, bearer)
    user = None
    if token:
        token_users: TokenUsers = request.app.state.token_users
        user = token_users.user(token)
        request.state.user = Actor.of(user) if user is not None else None
    if access is None:
        raise ProblemError(403, f"route {route_name!r} is not in the access matrix; it is refused to everyone")
    if access.public:
        return user
    if user is None:
        raise SignInRequired("invalid or expired token" if token else "sign in first: send a valid bearer token")
    if user.role not in access.roles:
        allowed = ", ".join(sorted(role.value for role in access.roles))
        raise ProblemError(403, f"role {user.role.value} may not call {route_name}; allowed: {allowed}")
    return user


async def authorize(request: Request, bearer: Annotated[str | None, Depends(oauth2_scheme)]) -> User | None:
    """The app-wide dependency: every route passes the access matrix before its handler runs."""
    return resolve_access(request, bearer)


def check_access_before_validation(request: Request) -> None:
    """The access check for a request whose input failed validation before `authorize` could run."""
    if getattr(request.state, "access_checked", False):
        return
    scheme, bearer = get_authorization_scheme_param(request.headers.get("Authorization"))
    resolve_access(request, bearer if scheme.lower() == "bearer" else None)


async def require_user(user: Annotated[User | None, Depends(authorize)]) -> User:
    """The signed-in user of a non-public route (authorize has already refused everyone else)."""
    if user is None:  # only reachable if a public route asks for a user
        raise SignInRequired("sign in first")
    return user


CurrentUser = Annotated[User, Depends(require_user)]
OptionalUser = Annotated[User | None, Depends(authorize)]


@dataclass(frozen=True)
class PageParams:
    offset: int
    limit: int


async def page_params(
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="How many items to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="How many items to return (at most max_page_size).")] = 50,
) -> PageParams:
    if limit > settings.max_page_size:
        raise ProblemError(422, f"at most {settings.max_page_size}", field="limit", location="query")
    return PageParams(offset=offset, limit=limit)


PageDep = Annotated[PageParams, Depends(page_params)]


async def get_ledger_hub(request: Request) -> LedgerHub:
    hub: LedgerHub = request.app.state.ledgers
    return hub


LedgerHubDep = Annotated[LedgerHub, Depends(get_ledger_hub)]


def purpose_of_use(code: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency stating the purpose of use (v3 ActReason) under which a router's requests are audited."""

    async def state_purpose(request: Request) -> None:
        request.state.audit_purpose = code

    return state_purpose


async def get_catalog(request: Request) -> ModelCatalog:
    catalog: ModelCatalog = request.app.state.catalog
    return catalog


CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
