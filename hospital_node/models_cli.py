"""`carefed node models --hospital H`: the hospital's copies of the consortium's models, each checked on the ledger.

The consortium replicates each final model to the hospitals connected when its run ends (hospital_node/replicas.py);
this lists what the hospital holds in `<node>/registry/`, each file verified again: `ok`, `tampered` (its bytes no
longer hash to its name) or `not registered` (the ledger registered no model with that hash), and the models of
the hospital's runs it has no copy of (`missing`). Exit code 1 when a copy is tampered or not registered.

There is no `models pull`: Flower messages go from the aggregator to the hospitals only, and the hospital has no
other channel to the consortium's registry, so a hospital that missed a replication gets no copy of that model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from carefed.options import DEFAULT_STATE_DIR, ENV_ORG, AsJson, StateDir

if TYPE_CHECKING:
    from hospital_node.replicas import ModelCopy

models_app = typer.Typer(
    help="The hospital's copies of the consortium's models, each verified against the ledger.",
    invoke_without_command=True,
)

STYLES = {"ok": "green", "tampered": "red", "not registered": "red", "missing": "yellow"}


@models_app.callback()
def models(
    hospital: Annotated[
        str,
        typer.Option("--hospital", envvar=ENV_ORG, help="The hospital's org name, e.g. hospital-a.", show_envvar=True),
    ],
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: AsJson = False,
) -> None:
    """List the models replicated to the hospital (`<node>/registry/`), each verified against the ledger."""
    from fabric_network.identities import IdentityError, hospital_names
    from fabric_network.ledger import LedgerError
    from federation.layout import node_dir_for
    from hospital_node.config import NodeConfig, open_node_ledger
    from hospital_node.replicas import node_registry, verify_copies

    try:
        hospital_names([hospital])
    except IdentityError:
        raise typer.BadParameter(
            f"{hospital!r} is not a hospital's org name; name the hospital whose copies to list, e.g. hospital-a",
            param_hint="--hospital",
        ) from None
    node = NodeConfig.load(node_dir_for(state_dir, hospital).resolve())
    try:
        with open_node_ledger(node) as ledger:
            copies = verify_copies(ledger, node_registry(node))
    except LedgerError as exc:
        raise LedgerError(
            f"cannot verify {hospital}'s copies: the ledger is unreadable ({exc}); check `carefed node check "
            f"--hospital {hospital}`"
        ) from exc
    failed = [c for c in copies if c.status in {"tampered", "not registered"}]
    if as_json:
        typer.echo(
            json.dumps(
                {"hospital": hospital, "registry": str(node.registry_dir), "models": [c.to_json() for c in copies]},
                indent=2,
            )
        )
    else:
        _print(hospital, node.registry_dir, copies)
    if failed:
        raise typer.Exit(code=1)


def _print(hospital: str, registry: Path, copies: list[ModelCopy]) -> None:
    console = Console(soft_wrap=True)
    if not copies:
        console.print(f"{hospital} holds no model copies in {registry} and none of its runs registered a model")
        return
    table = Table(title=f"Model copies of {hospital} ({registry})")
    for column in ("model", "sha256", "status", "detail"):
        table.add_column(column)
    for copy in copies:
        style = STYLES[copy.status]
        table.add_row(
            ", ".join(copy.model_ids) or "—", copy.sha256[:16], f"[{style}]{copy.status}[/{style}]", copy.detail
        )
    console.print(table)
