"""The pictures people would rather see than tables: AUCs, privacy spent, consent coverage, lineage, audit activity.

Each function takes plain data (what the ledger and a run's results hold) and writes one file; the demo's
`report.md` embeds them and the service's pages show them. Everything is drawn with matplotlib (Agg) and the
lineage graph with networkx's layout of the PROV document (``prov.graph``), so no system package (graphviz)
is needed on a fresh machine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from prov.model import ProvDocument

    from compliance.records import AuditRecord

FEDERATED = "#1f77b4"
CENTRAL = "#7f7f7f"
ALONE_PLAIN = "#ff7f0e"
ALONE_DP = "#2ca02c"
REFUSED = "#d62728"


def _figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Axes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _save(figure: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def auc_bars(
    path: Path,
    federated: float,
    central: float,
    alone_plain: Mapping[str, float],
    alone_dp: Mapping[str, float],
    epsilon: float,
) -> Path:
    """Final AUC of the federated model beside centralised training and each hospital alone (with and without
    DP); a dashed line at the federated AUC shows at a glance whether a hospital alone does better."""
    labels = [f"federated DP (ε={epsilon:g}) + HE", "centralised, non-private"]
    values, colours = [federated, central], [FEDERATED, CENTRAL]
    for hospital in alone_plain:
        labels += [f"{hospital} alone, non-private", f"{hospital} alone, DP (ε={epsilon:g})"]
        values += [alone_plain[hospital], alone_dp[hospital]]
        colours += [ALONE_PLAIN, ALONE_DP]
    figure, axis = _figure(7.5, 0.45 * len(labels) + 1.4)
    positions = list(range(len(labels)))[::-1]
    axis.barh(positions, values, color=colours)
    for y, value in zip(positions, values, strict=True):
        axis.text(value + 0.004, y, f"{value:.3f}", va="center", fontsize=8)
    axis.axvline(federated, color=FEDERATED, linestyle="--", linewidth=1, label="federated model")
    axis.set_yticks(positions, labels, fontsize=8)
    low = min(0.5, min(values) - 0.02)
    axis.set_xlim(low, 1.04)
    axis.set(xlabel=f"test AUC (held-out data; {low:g} at the left edge, 0.5 = chance)", title="Final model AUC")
    axis.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def epsilon_per_round(
    path: Path, rounds: Sequence[Mapping[str, Any]], limits: Mapping[str, float], target: float
) -> Path:
    """ε each hospital has spent in the run after each round, from 0, with the ledger's limit and the target."""
    from matplotlib.ticker import MaxNLocator

    figure, axis = _figure()
    for hospital in limits:
        points = [(r["round"], r["epsilon_run"][hospital]) for r in rounds if hospital in r["epsilon_run"]]
        if points:
            axis.plot([0, *(p[0] for p in points)], [0.0, *(p[1] for p in points)], marker="o", label=hospital)
    for limit in sorted(set(limits.values())):
        holders = ", ".join(h for h, v in limits.items() if v == limit)
        axis.axhline(
            limit, color=REFUSED, linestyle="-", linewidth=1.2, label=f"ledger limit ε = {limit:g} ({holders})"
        )
    axis.axhline(target, color=CENTRAL, linestyle="--", label=f"run target ε = {target:g}")
    axis.set_ylim(0, max([*limits.values(), target]) * 1.1)
    axis.set_xlim(left=0)
    axis.set(xlabel="round", ylabel="ε spent in this run", title="Privacy spent per round")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.legend(fontsize=8)
    return _save(figure, path)


def budget_bars(path: Path, budgets: Mapping[str, Mapping[str, float]]) -> Path:
    """Per hospital: ε spent (all runs) against the limit the consortium set on the ledger."""
    figure, axis = _figure(6.5, 0.6 * len(budgets) + 1.6)
    if not budgets:
        axis.text(0.5, 0.5, "no privacy budget on the ledger yet", ha="center", va="center")
        axis.axis("off")
        return _save(figure, path)
    names = list(budgets)
    positions = list(range(len(names)))[::-1]
    spent = [float(budgets[h]["spent"]) for h in names]
    limits = [float(budgets[h]["limit"]) for h in names]
    axis.barh(positions, limits, color="none", edgecolor=REFUSED, linewidth=1.5, label="limit (ledger)")
    axis.barh(positions, spent, color=FEDERATED, height=0.5, label="spent")
    for y, used, limit in zip(positions, spent, limits, strict=True):
        axis.text(used, y, f" {used:.2f} of {limit:g}", va="center", fontsize=8)
    axis.set_yticks(positions, names)
    axis.set_xlim(0, max(limits) * 1.3)
    axis.set(xlabel="ε", title="Privacy budget per hospital: spent vs limit")
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncols=2, frameon=False)
    return _save(figure, path)


def consent_coverage(path: Path, rows: Sequence[Mapping[str, Any]], run_id: str) -> Path:
    """Per round and hospital of a run: patients eligible (trained on), excluded and withdrawn, stacked."""
    shown = [r for r in rows if not r.get("dropped_out")]
    labels = [f"round {r['round']}\n{r['hospital']}" for r in shown]
    figure, axis = _figure(max(6.0, 0.9 * len(labels) + 1.5), 4.2)
    bottom = [0.0] * len(shown)
    for key, colour in (("eligible", ALONE_DP), ("excluded", CENTRAL), ("withdrawn", REFUSED)):
        values = [float(r[key]) for r in shown]
        axis.bar(labels, values, bottom=bottom, color=colour, label=key)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axis.set(ylabel="patients", title=f"Consent coverage of run {run_id}")
    axis.tick_params(axis="x", labelsize=7)
    axis.legend(fontsize=8)
    return _save(figure, path)


def audit_activity(path: Path, records: Sequence[AuditRecord]) -> Path:
    """Every audit event over time, one row per kind of action, refusals (any outcome but success) marked."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num

    from compliance.records import Outcome

    actions = sorted({r.action for r in records})
    figure, axis = _figure(8.0, 0.28 * len(actions) + 1.8)
    rows = {action: index for index, action in enumerate(actions)}
    for refused, colour, marker in ((False, FEDERATED, "|"), (True, REFUSED, "x")):
        chosen = [r for r in records if (r.outcome != Outcome.SUCCESS) == refused]
        if chosen:
            times = [dt.datetime.fromisoformat(r.time.replace("Z", "+00:00")) for r in chosen]
            axis.scatter(
                date2num(times),  # type: ignore[no-untyped-call]
                [rows[r.action] for r in chosen],
                s=40 if refused else 60,
                color=colour,
                marker=marker,
                label=f"refused or failed ({len(chosen)})" if refused else f"succeeded ({len(chosen)})",
            )
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axis.set_yticks(range(len(actions)), actions, fontsize=7)
    axis.set(xlabel="time (UTC)", title=f"Audit events over time ({len(records)})")
    if records:
        axis.legend(fontsize=8, loc="upper left")
    return _save(figure, path)


def lineage_svg(path: Path, document: ProvDocument) -> Path:
    """A model version's W3C PROV lineage as an SVG graph: entities (data, models), activities (runs, rounds),
    agents (hospitals, the consortium), laid out left to right in dependency order."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # labels stay text: searchable, and no glyph outlines
        return _lineage(path, document)


def _lineage(path: Path, document: ProvDocument) -> Path:
    import networkx as nx
    from prov.graph import prov_to_graph
    from prov.model import ProvActivity, ProvAgent, ProvEntity

    graph = prov_to_graph(document)
    simple = nx.DiGraph((v, u) for u, v in graph.edges())  # PROV points from effect to cause; draw cause → effect
    simple.add_nodes_from(graph.nodes())
    layers = {node: 0 for node in simple}
    if nx.is_directed_acyclic_graph(simple):
        for depth, generation in enumerate(nx.topological_generations(simple)):
            layers.update(dict.fromkeys(generation, depth))
    nx.set_node_attributes(simple, layers, "layer")
    positions = nx.multipartite_layout(simple, subset_key="layer")
    depth = max(layers.values(), default=0) + 1
    widest = max(list(layers.values()).count(d) for d in set(layers.values())) if layers else 1
    figure, axis = _figure(max(8.0, 1.45 * depth), max(4.0, 0.85 * widest + 1.2))
    nx.draw_networkx_edges(simple, positions, ax=axis, arrows=True, arrowsize=8, edge_color="#aaaaaa", width=0.7)
    edge_labels = {(v, u): type(d["relation"]).__name__.removeprefix("Prov") for u, v, d in graph.edges(data=True)}
    nx.draw_networkx_edge_labels(
        simple, positions, edge_labels=edge_labels, ax=axis, font_size=5, font_color="#666666", rotate=False
    )
    kinds = ((ProvEntity, "#fff2cc", "o"), (ProvActivity, "#dae8fc", "s"), (ProvAgent, "#ffe6cc", "h"))
    for kind, colour, shape in kinds:
        nx.draw_networkx_nodes(
            simple,
            positions,
            nodelist=[n for n in simple if isinstance(n, kind)],
            node_color=colour,
            node_shape=shape,
            ax=axis,
            node_size=500,
            edgecolors="#555555",
            label=kind.__name__.removeprefix("Prov"),
        )
    below = {node: (x, y - 0.045) for node, (x, y) in positions.items()}
    names = {n: _short(str(n.identifier.localpart)) for n in simple}
    nx.draw_networkx_labels(simple, below, names, ax=axis, font_size=6, verticalalignment="top")
    axis.set_title("Model lineage (W3C PROV)")
    axis.legend(fontsize=7, loc="lower left", markerscale=0.4)
    axis.axis("off")
    return _save(figure, path)


def _short(name: str, keep: int = 30) -> str:
    return name if len(name) <= keep else f"{name[: keep - 1]}…"
