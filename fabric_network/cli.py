"""`carefed ledger …` and `carefed fabric …`: the consortium ledger and the native Fabric network."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fabric_network.fabric_cli import fabric_app as fabric_app  # re-exported: `carefed fabric …`

ledger_app = typer.Typer(help="Consortium ledger: identities, status, verification, history.", no_args_is_help=True)

StateDir = Annotated[Path, typer.Option("--state-dir", help="CareFed state directory (git-ignored).")]
DEFAULT_STATE_DIR = Path(".carefed")
console = Console()


def _fail(message: str) -> None:
    """Print an error naming the problem and exit non-zero."""
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code=1)


@ledger_app.command("init")
def init(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    hospitals: Annotated[
        str, typer.Option("--hospitals", help="A count (3 → hospital-a..c) or comma-separated org names.")
    ] = "3",
) -> None:
    """Create the consortium's CAs and MSP identities (cryptogen layout) for the orderer org and each hospital."""
    from fabric_network.identities import IdentityError, hospital_names, init_identities

    try:
        material = init_identities(state_dir, hospital_names(hospitals))
    except IdentityError as exc:
        _fail(str(exc))
        return
    table = Table(title=f"Consortium identities in {material.crypto_dir}")
    for column in ("org", "MSP id", "node", "admin", "clients"):
        table.add_column(column)
    for org in (material.orderer, *material.hospitals):
        table.add_row(org.name, org.msp_id, org.node.name, org.admin.name, ", ".join(u.name for u in org.users))
    console.print(table)
