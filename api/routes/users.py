"""Users: who am I, and (consortium admin) list and create users."""

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from api.core.problems import PROBLEM_RESPONSES, ProblemError
from api.core.security import hash_password
from api.deps import CurrentUser, PageDep, SessionDep
from api.models.common import Page
from api.models.user import User, UserCreate, UserPublic

router = APIRouter(prefix="/users", tags=["users"], responses=PROBLEM_RESPONSES)


@router.get("/me", name="read_current_user")
def read_current_user(user: CurrentUser) -> UserPublic:
    """The signed-in user, with role and hospital."""
    return UserPublic.model_validate(user)


@router.get("", name="list_users")
def list_users(session: SessionDep, page: PageDep) -> Page[UserPublic]:
    """Every user, by id."""
    total = session.exec(select(func.count()).select_from(User)).one()
    users = session.exec(select(User).order_by(col(User.id)).offset(page.offset).limit(page.limit)).all()
    return Page(items=[UserPublic.model_validate(u) for u in users], total=total, offset=page.offset, limit=page.limit)


def add_user(session: Session, user_in: UserCreate) -> User:
    """Store a new user with an argon2 hash of the password; a taken user name is a 409 naming the field."""
    user = User.model_validate(user_in, update={"password_hash": hash_password(user_in.password)})
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ProblemError(409, f"user name {user_in.username!r} is taken", field="username") from None
    session.refresh(user)
    return user


@router.post("", name="create_user", status_code=201)
def create_user(session: SessionDep, user_in: UserCreate) -> UserPublic:
    """Create a user with a role (and the hospital it acts for, where the role has one)."""
    return UserPublic.model_validate(add_user(session, user_in))
