"""The `carefed` console command: a thin composition of each package's own CLI.

Every sub-CLI imports its heavy dependencies (torch, tenseal, flwr) inside its commands, so
`carefed --help` and `carefed --version` stay fast. The top-level group sets up logging for every command
(``-v``, ``-q``, ``--log-format``) and turns a user's mistake (a missing or unreadable file, a refused
argument, a ledger that is not there) into one ``error:`` line and exit code 1 instead of a traceback;
``-v`` shows the traceback for a bug report.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from api.cli import api_app
from carefed import __version__
from carefed.logs import configure_logging, level_for
from carefed.options import DEFAULT_STATE_DIR, ENV_LOG_FORMAT, LogFormat, StateDir
from compliance.cli import audit_app, report_app
from consortium.cli import consortium_app, keys_app
from fabric_network.cli import fabric_app, ledger_app
from harness.cli import demo, keys_ceremony, resume
from harness.query_cli import query
from hospital_node.cli import node_app
from hospital_node.models_cli import models_app


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that describe a user's mistake (their messages name the file, field or fix), not a bug."""
    from fabric_network.ledger import LedgerError

    return (OSError, ValueError, LedgerError)


class CareFedGroup(TyperGroup):
    """The `carefed` group: a user error anywhere below it ends in one line on stderr, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if not isinstance(exc, _user_error_types()) or ctx.meta.get("carefed.verbose", 0) >= 2:
                raise
            line = Text("error: ", style="red").append(str(exc) or type(exc).__name__, style="")
            Console(stderr=True, soft_wrap=True).print(line, highlight=False)
            raise typer.Exit(code=1) from None


app = typer.Typer(
    name="carefed",
    cls=CareFedGroup,
    help="Privacy-preserving federated analytics for hospital consortia.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"carefed {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output: -v info, -vv debug and tracebacks.")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log errors only.")] = False,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", envvar=ENV_LOG_FORMAT, help="Log lines for people or as JSON.")
    ] = LogFormat.console,
) -> None:
    """CareFed: DP training at each hospital, HE aggregation, a consortium ledger."""
    ctx.meta["carefed.verbose"] = verbose
    configure_logging(level_for(verbose, quiet), log_format)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (systemd's stop, `kill`) ends a command the way Ctrl-C does: through its cleanup, so a node or a
    SuperLink stops the processes it started instead of leaving them orphaned."""
    raise KeyboardInterrupt


org_app = typer.Typer(help="An organisation's own identities and keys (across hosts).", no_args_is_help=True)


@org_app.command("init")
def org_init(
    org: Annotated[str, typer.Option("--org", help="consortium, or the hospital's name (e.g. hospital-a).")],
    host: Annotated[str, typer.Option(help="The address other organisations dial here (named in TLS certificates).")],
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="A hospital's Fabric peer port [7051] (the consortium's ports: `up`)."),
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create this organisation's keys on this machine (once); a hospital also writes its public org bundle.

    Composed here because it is either side's command: the consortium's (consortium.site) or a hospital's
    (hospital_node.site). No private key is ever written for another organisation.
    """
    from fabric_network.identities import CONSORTIUM_ORG, IdentityError, hospital_names

    state = state_dir.resolve()
    if org == CONSORTIUM_ORG:
        from consortium.site import init_consortium

        init_consortium(state, host)
        typer.echo(f"consortium identities in {state / 'crypto'}; next: `carefed consortium add-hospital BUNDLE`")
        return
    from hospital_node.site import DEFAULT_PEER_PORT, init_hospital

    try:
        hospital_names([org])
    except IdentityError as exc:
        raise typer.BadParameter(str(exc).replace("--hospitals", "--org"), param_hint="--org") from None
    bundle = init_hospital(state, org, host, port or DEFAULT_PEER_PORT)
    typer.echo(f"{org}'s keys in {state} (private, mode 0700/0600); send the consortium its org bundle {bundle}")


app.command("demo")(demo)
app.command("query")(query)
app.add_typer(org_app, name="org")
node_app.add_typer(models_app, name="models")
app.add_typer(node_app, name="node")
consortium_app.command("resume")(resume)
app.add_typer(consortium_app, name="consortium")
keys_app.command("ceremony")(keys_ceremony)
app.add_typer(keys_app, name="keys")
app.add_typer(ledger_app, name="ledger")
app.add_typer(fabric_app, name="fabric")
app.add_typer(api_app, name="api")
app.add_typer(audit_app, name="audit")
app.add_typer(report_app, name="report")
