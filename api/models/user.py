"""Users of the service, their roles and the hospital each role is bound to."""

from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ValidationInfo, field_validator
from sqlmodel import Field, SQLModel

from api.core.roles import Role as Role  # re-exported: the models speak of roles too

HOSPITAL_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class UserBase(SQLModel):
    username: str = Field(min_length=3, max_length=64, regex=r"^[A-Za-z0-9_.@-]+$", unique=True, index=True)
    role: Role
    hospital: str | None = Field(
        default=None,
        max_length=63,
        regex=HOSPITAL_PATTERN,
        description="The hospital (ledger organisation) the role acts for; required for hospital_it and clinician.",
        schema_extra={"validate_default": True},
    )


class User(UserBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    password_hash: str = Field(max_length=255)
    is_active: bool = True
    created_at: datetime = Field(default_factory=_utcnow)


class UserCreate(UserBase):
    password: str = Field(min_length=12, max_length=256, description="At least 12 characters.")

    @field_validator("hospital")
    @classmethod
    def _hospital_matches_role(cls, hospital: str | None, info: ValidationInfo) -> str | None:
        role = info.data.get("role")
        if role is None:  # the role itself was invalid and is reported on its own
            return hospital
        if role.bound_to_hospital and hospital is None:
            raise ValueError(f"required for role {role.value}: name the hospital the user acts for")
        if not role.bound_to_hospital and hospital is not None:
            raise ValueError(f"role {role.value} is consortium-wide: leave hospital empty")
        return hospital


class UserPublic(UserBase):
    id: int
    is_active: bool
    created_at: datetime


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@dataclass(frozen=True)
class Actor:
    """Who made a request, detached from any database session (the audit trail and pages read it after the
    handler's session is gone)."""

    id: int
    username: str
    role: Role
    hospital: str | None

    @classmethod
    def of(cls, user: User) -> "Actor":
        assert user.id is not None
        return cls(id=user.id, username=user.username, role=user.role, hospital=user.hospital)
