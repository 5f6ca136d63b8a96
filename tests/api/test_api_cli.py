"""`carefed api create-user`: the first administrator, and option errors that name the option."""

from pathlib import Path

from sqlmodel import Session, select
from typer.testing import CliRunner

from api.core.config import Settings
from api.core.db import make_engine
from api.core.security import verify_password
from api.models.user import Role, User
from carefed.cli import app

runner = CliRunner()


def test_create_user_makes_the_first_admin_and_names_bad_options(tmp_path: Path) -> None:
    created = runner.invoke(
        app,
        ["api", "create-user", "--username", "root-admin", "--state-dir", str(tmp_path)],
        input="a-long-password\n" * 2,
    )
    assert created.exit_code == 0, created.output
    engine = make_engine(Settings(state_dir=tmp_path).resolved_database_url)
    with Session(engine) as session:
        admin = session.exec(select(User)).one()
    engine.dispose()
    assert admin.role is Role.consortium_admin and admin.hospital is None
    assert verify_password("a-long-password", admin.password_hash)

    base = ["api", "create-user", "--state-dir", str(tmp_path), "--password", "a-long-password"]
    missing_hospital = runner.invoke(app, [*base, "--username", "dr-x", "--role", "clinician"])
    assert missing_hospital.exit_code == 2 and "--hospital" in missing_hospital.output
    taken = runner.invoke(app, [*base, "--username", "root-admin"])
    assert taken.exit_code == 1 and "--username" in taken.output
