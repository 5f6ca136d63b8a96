"""The `carefed` console command: a thin composition of each package's own CLI.

Every sub-CLI imports its heavy dependencies (torch, tenseal, flwr) inside its commands, so
`carefed --help` and `carefed --version` stay fast.
"""

from typing import Annotated

import typer

from api.cli import api_app
from carefed import __version__
from compliance.cli import audit_app, report_app
from consortium.cli import consortium_app, demo, keys_app
from fabric_network.cli import fabric_app, ledger_app
from hospital_node.cli import node_app

app = typer.Typer(
    name="carefed",
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
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """CareFed: DP training at each hospital, HE aggregation, a consortium ledger."""


app.command("demo")(demo)
app.add_typer(node_app, name="node")
app.add_typer(consortium_app, name="consortium")
app.add_typer(keys_app, name="keys")
app.add_typer(ledger_app, name="ledger")
app.add_typer(fabric_app, name="fabric")
app.add_typer(api_app, name="api")
app.add_typer(audit_app, name="audit")
app.add_typer(report_app, name="report")
