"""`carefed ledger …` and `carefed fabric …`: the consortium ledger and the native Fabric network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from carefed.options import DEFAULT_STATE_DIR, AsJson, Backend, LedgerBackend, Org, StateDir
from fabric_network.fabric.cli import fabric_app as fabric_app  # re-exported: `carefed fabric …`

if TYPE_CHECKING:
    from fabric_network.ledger import Ledger

ledger_app = typer.Typer(help="Consortium ledger: identities, status, verification, history.", no_args_is_help=True)

console = Console()
errors = Console(stderr=True, soft_wrap=True)


def _fail(message: str) -> None:
    """Print an error naming the problem and exit non-zero."""
    errors.print(f"[red]error:[/red] {message}", highlight=False)
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


def _open(state_dir: Path, backend: LedgerBackend, org: str) -> Ledger:
    """Open the ledger for a read-only command, or exit with the reason."""
    from fabric_network.ledger import LedgerError, LedgerSettings, open_ledger

    if not (state_dir / "crypto").exists():
        _fail(f"--state-dir: no consortium in {state_dir}; run `carefed ledger init --state-dir {state_dir}`")
    try:
        return open_ledger(LedgerSettings(state_dir=state_dir, org=org, backend=backend.value))
    except (LedgerError, ValueError) as exc:
        _fail(str(exc))
        raise


@ledger_app.command("status")
def status(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    backend: Backend = LedgerBackend.embedded,
    org: Org = "consortium",
    as_json: AsJson = False,
) -> None:
    """Height, transactions and last block of the ledger, and the consortium's orgs."""
    from fabric_network.identities import load_consortium

    with _open(state_dir, backend, org) as ledger:
        facts: dict[str, Any] = {"backend": backend.value, "state_dir": str(state_dir), "height": ledger.height()}
        details = getattr(ledger, "describe", None)
        facts.update(details() if callable(details) else {})
    consortium = load_consortium(state_dir)
    facts["orgs"] = [o.msp_id for o in (consortium.orderer, *consortium.hospitals)]
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    table = Table(title=f"CareFed ledger ({backend.value}) in {state_dir}", show_header=False)
    table.add_row("height (blocks)", str(facts["height"]))
    for name, value in facts.items():
        if name not in ("backend", "state_dir", "height"):
            table.add_row(name, ", ".join(value) if isinstance(value, list) else str(value))
    console.print(table)


@ledger_app.command("verify")
def verify(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    backend: Backend = LedgerBackend.embedded,
    org: Org = "consortium",
    as_json: AsJson = False,
) -> None:
    """Re-check every block, signature and transaction and the world state; name the first bad block and tx."""
    from dataclasses import asdict

    with _open(state_dir, backend, org) as ledger, Progress(console=errors, transient=True, disable=as_json) as bar:
        task = bar.add_task("verifying blocks", total=None)
        report = ledger.verify(lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        typer.echo(json.dumps({**asdict(report), "summary": report.describe()}, indent=2))
        if not report.ok:
            raise typer.Exit(code=1)
        return
    if not report.ok:
        _fail(report.describe())
    console.print(f"[green]ok[/green] {report.describe()}", highlight=False)


@ledger_app.command("history")
def history(
    key: Annotated[str, typer.Argument(help="State key as type/attr/…, e.g. consent/<pseudonym>/HRESCH.")],
    state_dir: StateDir = DEFAULT_STATE_DIR,
    org: Org = "consortium",
) -> None:
    """Every committed version of one state key (embedded backend), oldest first."""
    from fabric_network.embedded.ledger import EmbeddedLedger, composite_key

    parts = [p for p in key.split("/") if p]
    if not parts:
        _fail("KEY: give the key as type/attr/…, e.g. consent/<pseudonym>/HRESCH")
    with _open(state_dir, LedgerBackend.embedded, org) as ledger:
        assert isinstance(ledger, EmbeddedLedger)
        versions = ledger.key_history(composite_key(parts[0], parts[1:]))
    if not versions:
        _fail(f"KEY: no committed version of {key}")
    table = Table(title=f"History of {key}")
    for column in ("block", "tx", "time", "value"):
        table.add_column(column, overflow="fold")
    for version in versions:
        value = "(deleted)" if version["value"] is None else json.dumps(version["value"], sort_keys=True)
        table.add_row(str(version["block_number"]), version["tx_id"][:16], version["timestamp"], value)
    console.print(table)


@ledger_app.command("events")
def events(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    backend: Backend = LedgerBackend.embedded,
    org: Org = "consortium",
    from_block: Annotated[int, typer.Option("--from-block", min=0, help="First block to read.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", help="Keep waiting for new blocks (Ctrl-C stops).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Contract events from a block on, in commit order."""
    from dataclasses import asdict

    with _open(state_dir, backend, org) as ledger:
        try:
            for event in ledger.events(from_block, follow=follow):
                if as_json:
                    typer.echo(json.dumps(asdict(event), sort_keys=True))
                else:
                    console.print(
                        f"block {event.block_number} {event.timestamp} {event.creator_msp} [bold]{event.name}[/bold] "
                        f"tx {event.tx_id[:16]} {json.dumps(event.payload, sort_keys=True)}",
                        highlight=False,
                    )
        except KeyboardInterrupt:
            pass
