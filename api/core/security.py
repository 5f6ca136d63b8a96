"""Password hashing (argon2id) and JWT access tokens (HS256).

Tokens carry only the user id; the role and hospital are read from the database, not the token, so a
deactivated user or a changed role takes effect within `auth_cache_seconds` (the service caches a verified
token's user that long: the HMAC check and the database lookup are most of a prediction's cost otherwise) instead
of when the token expires.
"""

from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

JWT_ALGORITHM = "HS256"
_password_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash with a fresh salt, in PHC string format."""
    return _password_hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """True when the password matches; a malformed stored hash counts as a mismatch."""
    try:
        return _password_hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# Verifying against this hash when the user does not exist keeps sign-in time independent of whether the
# user name is known (no user enumeration by timing).
DUMMY_PASSWORD_HASH = hash_password("carefed-no-such-user")


def create_access_token(user_id: int, secret: str, lifetime: timedelta) -> str:
    """A signed token naming the user, valid for `lifetime`."""
    now = datetime.now(UTC)
    claims = {"sub": str(user_id), "iat": now, "exp": now + lifetime}
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def verified_token(token: str, secret: str) -> tuple[int, float] | None:
    """The user id and expiry (POSIX seconds) of a valid, unexpired token; None for anything else."""
    try:
        claims = jwt.decode(token, secret, algorithms=[JWT_ALGORITHM], options={"require": ["sub", "exp"]})
        return int(claims["sub"]), float(claims["exp"])
    except (jwt.PyJWTError, ValueError):
        return None
