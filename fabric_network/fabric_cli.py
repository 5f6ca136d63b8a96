"""`carefed fabric …`: install, start, inspect and stop a native Hyperledger Fabric network.

Kept apart from the ledger commands so the native network's CLI can grow without touching them; heavy
imports stay inside the commands so `carefed --help` stays fast.
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

fabric_app = typer.Typer(help="A native Hyperledger Fabric network for the consortium.", no_args_is_help=True)
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code=1)


@fabric_app.command("install")
def fabric_install(
    release_dir: Annotated[
        Path | None,
        typer.Option("--from", help="An unpacked official Fabric release archive to copy instead of building."),
    ] = None,
) -> None:
    """Build (or copy) the Fabric v3.1.5 binaries into the per-version cache; skipped when already there."""
    from fabric_network.fabric_install import FabricInstallError, default_fabric_home, install

    home = default_fabric_home()
    try:
        with err_console.status(f"Installing Hyperledger Fabric into {home.root} (a source build takes minutes)…"):
            installed = install(home, release_dir)
    except FabricInstallError as exc:
        _fail(f"fabric install: {exc}")
    err_console.print(("Installed" if installed else "Already installed:") + f" Fabric binaries in {home.root}")
