"""`carefed fabric …`: install, start, inspect and stop a native Hyperledger Fabric network.

Kept apart from the ledger commands so the native network's CLI can grow without touching them; heavy
imports stay inside the commands so `carefed --help` stays fast.
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from carefed.options import DEFAULT_STATE_DIR, AsJson, StateDir

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
    from fabric_network.fabric.install import FabricInstallError, default_fabric_home, install

    home = default_fabric_home()
    try:
        with err_console.status(f"Installing Hyperledger Fabric into {home.root} (a source build takes minutes)…"):
            installed = install(home, release_dir)
    except FabricInstallError as exc:
        _fail(f"fabric install: {exc}")
    err_console.print(("Installed" if installed else "Already installed:") + f" Fabric binaries in {home.root}")


@fabric_app.command("up")
def fabric_up(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    hospitals: Annotated[
        int | None, typer.Option("--hospitals", help="Number of hospitals (must match `carefed ledger init`).")
    ] = None,
    base_port: Annotated[
        int | None, typer.Option("--base-port", help="First port of the network's block (default 17050).")
    ] = None,
) -> None:
    """Start the network (create it the first time; restart it on its ledgers afterwards)."""
    from fabric_network.fabric.install import FabricInstallError, default_fabric_home
    from fabric_network.fabric.network import NetworkError, up
    from fabric_network.identities import IdentityError

    try:
        with err_console.status("Starting the Fabric network (orderer, peers, chaincode servers)…"):
            manifest = up(state_dir, default_fabric_home(), hospitals, base_port)
    except (FabricInstallError, IdentityError, NetworkError, RuntimeError, TimeoutError) as exc:
        _fail(str(exc))
    err_console.print(f"Fabric network up: {len(manifest.hospitals)} hospitals, chaincode {manifest.package_id}")
    fabric_status(state_dir, as_json=False)


@fabric_app.command("status")
def fabric_status(state_dir: StateDir = DEFAULT_STATE_DIR, as_json: AsJson = False) -> None:
    """Every process of the network: pid, port and health (/healthz for peers and orderer); exit 1 if one is not."""
    import dataclasses
    import json

    from rich.table import Table

    from fabric_network.fabric.network import status

    processes = status(state_dir)
    if not processes:
        _fail(f"no Fabric network in {state_dir}; start one with `carefed fabric up --state-dir {state_dir}`")
    if as_json:
        typer.echo(json.dumps({"state_dir": str(state_dir), "processes": [dataclasses.asdict(p) for p in processes]}))
        raise typer.Exit(0 if all(p.serving for p in processes) else 1)
    table = Table(title=f"Fabric network in {state_dir}")
    for column in ("process", "pid", "port", "state"):
        table.add_column(column)
    for p in processes:
        state = (
            "[green]serving[/green]" if p.serving else "[yellow]running[/yellow]" if p.running else "[red]down[/red]"
        )
        table.add_row(p.name, str(p.pid), str(p.port), state)
    Console().print(table)
    if not all(p.serving for p in processes):
        raise typer.Exit(1)


@fabric_app.command("down")
def fabric_down(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the network's ledgers and config.")] = False,
) -> None:
    """Stop exactly the processes `up` started; `--purge` also removes the network's state."""
    from fabric_network.fabric.network import down

    if not state_dir.is_dir():
        _fail(f"--state-dir: {state_dir} does not exist, so no network of it can be running")
    stopped = down(state_dir, purge)
    err_console.print(f"Stopped {len(stopped)} processes" + (" and removed the network's state" if purge else ""))
