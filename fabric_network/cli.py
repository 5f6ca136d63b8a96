"""`carefed ledger …` and `carefed fabric …`: the consortium ledger and the native Fabric network."""

from pathlib import Path
from typing import Annotated

import typer

ledger_app = typer.Typer(help="Consortium ledger: identities, status, verification, history.", no_args_is_help=True)
fabric_app = typer.Typer(help="A native Hyperledger Fabric network for the consortium.", no_args_is_help=True)


@fabric_app.command("install")
def fabric_install(
    release_dir: Annotated[
        Path | None,
        typer.Option("--from", help="An unpacked official Fabric release archive to copy instead of building."),
    ] = None,
) -> None:
    """Build (or copy) the Fabric v3.1.5 binaries into the per-version cache; skipped when already there."""
    from rich.console import Console

    from fabric_network.fabric_install import FabricInstallError, default_fabric_home, install

    home = default_fabric_home()
    console = Console(stderr=True)
    try:
        with console.status(f"Installing Hyperledger Fabric into {home.root} (a source build takes minutes)…"):
            installed = install(home, release_dir)
    except FabricInstallError as exc:
        console.print(f"[red]fabric install failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(("Installed" if installed else "Already installed:") + f" Fabric binaries in {home.root}")
