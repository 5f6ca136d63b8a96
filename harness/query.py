"""`carefed query`: run a federated cohort query on the one-machine consortium and show its result.

The consortium registers the query on the ledger, starts its SuperLink and the hospitals' SuperNodes and
workers (as `carefed demo` does), and runs the query as a Flower run of the same ServerApp (`task = "query"`).
What comes back is the aggregator's results file: the released statistic per stratum with its 95 % noise
interval, or "suppressed", the ε each hospital was charged, and what the aggregator's key guard saw. It is shown
as a rich table and drawn as a PNG (histograms and tables with error bars from the noise scale).
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

from rich.table import Table

from federation.analytics import QuerySpec, result_rows
from federation.layout import node_dir_for
from harness.local_consortium import LocalConsortium


def consortium_hospitals(state_dir: Path) -> list[str]:
    """The hospitals with a node under `state_dir` (the one-machine consortium `carefed demo` set up)."""
    nodes = node_dir_for(state_dir, "x").parent
    hospitals = sorted(p.name for p in nodes.iterdir() if (p / "node.toml").exists()) if nodes.exists() else []
    if not hospitals:
        raise ValueError(
            f"--state-dir: no hospital nodes under {nodes}; run `carefed demo` first or name the state dir"
        )
    return hospitals


def run_query(state_dir: Path, spec: QuerySpec, backend: str = "embedded") -> dict[str, Any]:
    """Register and run one query across every hospital of the consortium; the aggregator's results.

    One query at a time per state dir (a lock file): a second waits rather than starting a second runtime.
    """
    state_dir = state_dir.resolve()
    hospitals = consortium_hospitals(state_dir)
    lock_path = state_dir / "queries" / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with LocalConsortium(state_dir, hospitals, backend=backend) as consortium:
            consortium.start()
            return consortium.query(spec)


def result_table(results: dict[str, Any]) -> Table:
    """One row per stratum (and per bin for histograms and tables), with each value's 95 % interval."""
    result = results.get("result") or {}
    table = Table(title=f"{result.get('kind', 'query')} {result.get('column') or ''} — {results['status']}")
    for column in ("stratum", "statistic", "value", "± 95 %"):
        table.add_column(column, justify="left" if column in ("stratum", "statistic") else "right")
    for row in result_rows(result):
        table.add_row(*row)
    return table


def plot_result(results: dict[str, Any], path: Path) -> Path | None:
    """Bars per stratum (bins, table cells, or the count/mean) with 95 % error bars; None when all is suppressed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = results.get("result") or {}
    strata = [s for s in result.get("strata", []) if not s["suppressed"]]
    if not strata:
        return None
    figure, axis = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(strata)
    for index, stratum in enumerate(strata):
        labels, values, errors = _bars(stratum)
        positions = [i + index * width for i in range(len(values))]
        axis.bar(positions, values, width, yerr=errors, capsize=3, label=stratum["stratum"])
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(values))], labels, rotation=30, ha="right")
    axis.set_title(f"{result['kind']} {result.get('column') or ''} (ε={result['epsilon']:g}, 95 % noise intervals)")
    if len(strata) > 1:
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _bars(stratum: dict[str, Any]) -> tuple[list[str], list[float], list[float]]:
    if "histogram" in stratum:
        rows = stratum["histogram"]
        return [r["bin"] for r in rows], [r["count"] for r in rows], [stratum["bin_ci95"]] * len(rows)
    if "table" in stratum:
        cells = [(f"{r['bin']} {label[-1]}", r[label]) for r in stratum["table"] for label in ("label_0", "label_1")]
        return [c[0] for c in cells], [c[1] for c in cells], [stratum["cell_ci95"]] * len(cells)
    if "mean" in stratum:
        return ["mean"], [stratum["mean"]], [stratum["mean_ci95"]]
    return ["count"], [stratum["count"]], [stratum["count_ci95"]]
