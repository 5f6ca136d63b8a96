"""`carefed query count|mean|stddev|histogram|quantiles|table`: federated cohort statistics under DP and HE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from carefed.options import DEFAULT_STATE_DIR, Backend, LedgerBackend, QueryKind, StateDir

DEFAULT_BINS = {QueryKind.HISTOGRAM: "10", QueryKind.QUANTILES: "20", QueryKind.TABLE: "5"}


def query(
    kind: Annotated[QueryKind, typer.Argument(help="count, mean, stddev, histogram, quantiles or table.")],
    cohort: Annotated[
        Path, typer.Option("--cohort", exists=True, dir_okay=False, help="The cohort's schema TOML (docs/ehr.md).")
    ],
    column: Annotated[
        str, typer.Argument(help="The variable (not for count): a column of the cohort; its declared range bounds it.")
    ] = "",
    bins: Annotated[
        str, typer.Option("--bins", help="Equal-width bins over the range (a number) or edges a,b,c.")
    ] = "",
    by: Annotated[
        str, typer.Option("--by", help="Stratify: COLUMN (0/1 columns split in two) or COLUMN:edge,edge,… (bands).")
    ] = "",
    q: Annotated[str, typer.Option("--q", help="quantiles: which, read off the noisy histogram.")] = "0.25,0.5,0.75",
    epsilon: Annotated[float, typer.Option("--epsilon", min=0.0, help="ε each hospital spends on it.")] = 1.0,
    min_count: Annotated[int, typer.Option("--min-count", min=0, help="Suppress noisy counts below this.")] = 10,
    purpose: Annotated[str, typer.Option("--purpose", help="Purpose of use (FHIR v3 ActReason); its budget pays.")] = (
        "HRESCH"
    ),
    state_dir: StateDir = DEFAULT_STATE_DIR,
    backend: Backend = LedgerBackend.embedded,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON instead of a table.")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Where to draw the PNG (default queries/<id>.png).")
    ] = None,
    query_id: Annotated[str, typer.Option("--query-id", hidden=True, help="Set by the API: the query's id.")] = "",
    requester: Annotated[
        str, typer.Option("--requester", help="Who asks (an opaque user id, recorded on the ledger).")
    ] = "researcher",
    role: Annotated[str, typer.Option("--role", help="The requester's role, recorded on the ledger.")] = "researcher",
) -> None:
    """Federated cohort statistics: noisy at each hospital (DP), summed encrypted (HE), charged on the ledger.

    Example: carefed query histogram age --cohort data/synthea-r4/cohort-alive.toml --by sex_female --epsilon 1
    """
    from rich.console import Console

    from harness.query import plot_result, result_table, run_query
    from hospital_node.analytics import build_query

    if kind != QueryKind.COUNT and not column:
        raise typer.BadParameter(f"a {kind.value} query needs COLUMN, a column of the cohort", param_hint="COLUMN")
    spec = build_query(
        kind.value,
        cohort,
        column=column if kind != QueryKind.COUNT else "",
        bins=bins or DEFAULT_BINS.get(kind, "10"),
        by=by,
        epsilon=epsilon,
        min_count=min_count,
        purpose=purpose,
        quantiles=tuple(float(value) for value in q.split(",")),
        requester=requester,
        role=role,
    )
    if query_id:
        spec = spec.with_id(query_id)
    console = Console()
    with console.status(f"query {spec.query_id}: starting the consortium and asking every hospital…"):
        results = run_query(state_dir, spec, backend.value)
    picture = plot_result(results, plot or Path("queries") / f"{spec.query_id}.png")
    if as_json:
        typer.echo(json.dumps({**results, "plot": str(picture) if picture else None}, indent=2))
    else:
        console.print(result_table(results))
        charged = ", ".join(f"{h} ε={e:.3f}" for h, e in sorted(results["epsilon_charged"].items()))
        console.print(f"charged: {charged or 'nothing'}; on the ledger: query {spec.query_id} {results['status']}")
        for event in results["events"]:
            console.print(f"[yellow]•[/] {event}")
        if picture:
            console.print(f"plot: {picture}")
    if results["status"] == "failed":
        raise typer.Exit(code=1)
