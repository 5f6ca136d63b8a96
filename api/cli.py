"""`carefed api …`: start the CareFed service and manage its users."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from api.core.roles import Role
from carefed.options import DEFAULT_STATE_DIR, ENV_STATE_DIR

#: the service's own variable (CAREFED_API_STATE_DIR) wins over the one every command reads.
StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar=["CAREFED_API_STATE_DIR", ENV_STATE_DIR],
        help="State directory shared with the ledger and the model registry.",
    ),
]

api_app = typer.Typer(help="The CareFed web service.", invoke_without_command=True)
console = Console(stderr=True)


@api_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 keeps it off the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    ssl_certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM) to serve HTTPS.")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM) of that certificate.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes (default CAREFED_API_WORKERS or 1); about one per core. They share the "
            "database, the ledger and the audit outboxes; one of them delivers the outboxes at a time.",
        ),
    ] = None,
    hospital: Annotated[
        str | None,
        typer.Option(
            "--hospital",
            envvar="CAREFED_API_HOSPITAL",
            help="Run the service for this hospital: predictions load models from its own registry copy "
            "(<state-dir>/nodes/HOSPITAL/registry). Unset: the consortium's registry.",
        ),
    ] = None,
) -> None:
    """Start the service (uvicorn); `carefed api create-user` makes its first administrator."""
    if ctx.invoked_subcommand is not None:
        return
    import os

    import uvicorn
    from pydantic import ValidationError

    from api.core.config import Settings
    from api.core.db import make_engine, upgrade_to_head

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise typer.BadParameter("give both --ssl-certfile and --ssl-keyfile, or neither", param_hint="--ssl-keyfile")
    if ssl_certfile is None and host not in {"127.0.0.1", "localhost", "::1"}:
        console.print(f"[yellow]warning:[/] serving plain HTTP on {host}; give --ssl-certfile/--ssl-keyfile for TLS")
    # Worker processes build the app from the environment (`create_app()` reads CAREFED_API_*). What must happen
    # once happens here first: the migration and the token-signing key, which concurrent workers would race for.
    os.environ["CAREFED_API_STATE_DIR"] = str(state_dir)
    if hospital:
        os.environ["CAREFED_API_HOSPITAL"] = hospital
    try:
        settings = Settings()
    except ValidationError as exc:
        wrong = [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors() if e["loc"] == ("hospital",)]
        if wrong:
            raise typer.BadParameter(wrong[0], param_hint="--hospital") from None
        raise
    engine = make_engine(settings.resolved_database_url)
    upgrade_to_head(engine)
    engine.dispose()
    _ = settings.jwt_secret
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        workers=workers or settings.workers,
        # uvicorn restarts a worker that does not answer its supervisor's ping in time, dropping the requests it
        # holds; on a loaded machine (or while a worker imports torch at start) 5 s, the default, is not enough.
        timeout_worker_healthcheck=60,
        host=host,
        port=port,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        access_log=False,  # the audit trail records every request; uvicorn's log would repeat URLs
    )


@api_app.command("create-user")
def create_user(
    username: Annotated[str, typer.Option(prompt=True, help="Sign-in name.")],
    role: Annotated[Role, typer.Option(help="What the user does; decides which endpoints they may call.")] = (
        Role.consortium_admin
    ),
    hospital: Annotated[str | None, typer.Option(help="Hospital the role acts for (hospital_it, clinician).")] = None,
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="CAREFED_API_NEW_PASSWORD",
            help="At least 12 characters; prompted for when not given.",
        ),
    ] = "",
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create a user (by default the consortium's first administrator)."""
    from pydantic import ValidationError
    from sqlmodel import Session

    from api.core.config import Settings
    from api.core.db import make_engine, upgrade_to_head
    from api.core.problems import ProblemError, field_errors
    from api.models.user import UserCreate
    from api.routes.users import add_user

    try:
        user_in = UserCreate(username=username, role=role, hospital=hospital, password=password)
    except ValidationError as error:
        for problem in field_errors(error.errors(), location="option"):
            console.print(f"[red]--{problem.field}[/]: {problem.message}")
        raise typer.Exit(2) from None
    engine = make_engine(Settings(state_dir=state_dir).resolved_database_url)
    upgrade_to_head(engine)
    try:
        with Session(engine) as session:
            user = add_user(session, user_in)
    except ProblemError as error:
        console.print(f"[red]--{error.errors[0].field if error.errors else 'username'}[/]: {error.detail}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    bound_to = f", {user.hospital}" if user.hospital else ""
    console.print(f"created user [bold]{user.username}[/] ({user.role.value}{bound_to})")
