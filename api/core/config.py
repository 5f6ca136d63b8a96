"""Settings of the CareFed service, read from `CAREFED_API_*` environment variables (pydantic-settings).

Everything the service writes lives under one state directory (default `.carefed/`, git-ignored) so that
`carefed demo --state-dir D` and `carefed api --state-dir D` see the same ledger and model registry.
"""

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

JWT_SECRET_FILE = "jwt-secret"


class Settings(BaseSettings):
    """The service's configuration; every field can be set as `CAREFED_API_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="CAREFED_API_", extra="ignore", populate_by_name=True)

    state_dir: Path = Field(
        default=Path(".carefed"),
        validation_alias=AliasChoices("CAREFED_API_STATE_DIR", "CAREFED_STATE_DIR"),
        description="Where the service keeps its database and keys (the state dir every command shares).",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the user/node database; SQLite under the state dir when unset, "
        "e.g. postgresql+psycopg://user@host/db for PostgreSQL.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="HMAC key for the JWT access tokens; generated once into <state_dir>/api/jwt-secret when unset.",
    )
    access_token_minutes: int = Field(default=60, ge=1, le=24 * 60, description="Lifetime of an access token.")
    audit_enabled: bool = Field(
        default=True,
        description="Send an audit event for every request to the ledger. Only the API benchmark turns it off, "
        "to measure what auditing costs.",
    )
    audit_delivery: Literal["process", "thread"] = Field(
        default="process",
        description="Deliver the audit outboxes to the ledger from a separate process (the default: delivery "
        "costs CPU the request threads need) or from a thread of the service.",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long a verified token's user is remembered per worker; a deactivation or role change "
        "takes effect within this time (0: read the database on every request).",
    )
    hospital: str | None = Field(
        default=None,
        description="The hospital this service runs for: clinicians' predictions load each model from the "
        "hospital's own registry copy (<state_dir>/nodes/<hospital>/registry, replicated after each run and checked "
        "against the ledger) and the models are read on the ledger as that hospital. Unset: the consortium's "
        "registry (<state_dir>/registry), as on one machine.",
    )
    workers: int = Field(default=1, ge=1, le=64, description="Worker processes (`carefed api --workers`).")
    max_page_size: int = Field(default=100, ge=1, description="Upper bound of `limit` on every list endpoint.")

    @field_validator("hospital")
    @classmethod
    def _hospital_name(cls, hospital: str | None) -> str | None:
        from fabric_network.identities import IdentityError, hospital_names

        if not hospital:
            return None
        try:
            hospital_names([hospital])
        except IdentityError:
            raise ValueError(
                f"CAREFED_API_HOSPITAL: {hospital!r} is not a hospital's org name; name the hospital the service "
                "runs for, e.g. hospital-a, or leave it unset to serve the consortium's registry"
            ) from None
        return hospital

    @property
    def api_dir(self) -> Path:
        """The service's own corner of the state dir."""
        return self.state_dir / "api"

    @property
    def resolved_database_url(self) -> str:
        """The configured database URL, or a SQLite file in the state dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.api_dir / 'carefed-api.sqlite').resolve()}"

    @cached_property
    def jwt_secret(self) -> str:
        """The token-signing key: configured, or created once (0600) so tokens survive a restart."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.api_dir / JWT_SECRET_FILE
        if not path.exists():
            self.api_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        return path.read_text().strip()
