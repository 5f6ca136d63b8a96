"""Contributor credit of a model: what each hospital gave to it, computed from the ledger's lineage alone.

Per hospital: the rounds it took part in, the examples it trained on (its consent snapshots' sizes, already on
the ledger), the ε it spent (the sum of its per-round charges), and two contribution scores that reveal nothing
the protocol has not already revealed:

- **data share** — the hospital's share of all training examples over the model's rounds. It is the Shapley
  value of the aggregation game itself: the HE weighted average gives each hospital's update the weight
  n_i / Σ n, so the value each hospital adds to the sum is additive and its Shapley value is its weight.
  Reveals: only the snapshot sizes, which are on the ledger already.
- **gain share** — each round's improvement of the global model (the consortium-wide held-out AUC recorded with
  the round, minus the previous round's, 0.5 — a chance-level model — before round 1) split among that round's
  participants by data share, summed over rounds. A Shapley-style estimate over the only aggregates the protocol
  publishes (per-round global AUC, per-hospital example counts): it cannot tell a useful hospital from a noisy
  one of the same size, which is the price of revealing nothing new.
- **own improvement** — the change of the global model's AUC on the hospital's *own* held-out data between the
  first and the last round it reported it (``record_update`` metrics ``global_auc``), as reported by that
  hospital. Reveals: the hospital's own AUC figures, which it chose to put on the ledger.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path
from typing import Any

CHANCE_AUC = 0.5
WHAT_IT_REVEALS = {
    "data_share": "only the consent-snapshot sizes already on the ledger (Shapley value of the weighted average)",
    "gain_share": "only the per-round global AUC and example counts already on the ledger",
    "own_improvement": "the hospital's own held-out AUC figures, which it published with its updates",
}


def credit(lineage: dict[str, Any]) -> list[dict[str, Any]]:
    """Per hospital of a model's lineage (`LineageContract:get_model_lineage`): rounds, examples, ε and scores."""
    rounds = sorted(lineage["rounds"], key=lambda r: r["round"])
    rows: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"rounds": 0, "examples": 0, "example_rounds": 0, "epsilon": 0.0, "gain_share": 0.0}
    )
    previous_auc = CHANCE_AUC
    total_examples = 0
    for record in rounds:
        participants = record["participants"]
        in_round = sum(int(p.get("num_examples", 0)) for p in participants)
        auc = record.get("metrics", {}).get("auc")
        gain = (auc - previous_auc) if auc is not None else 0.0
        for p in participants:
            row = rows[p["hospital"]]
            n = int(p.get("num_examples", 0))
            row["rounds"] += 1
            row["examples"] = max(row["examples"], n)
            row["example_rounds"] += n
            row["epsilon"] += float(p["epsilon_spent"])
            row["gain_share"] += gain * (n / in_round if in_round else 1 / len(participants))
        total_examples += in_round
        if auc is not None:
            previous_auc = auc
    reported: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for update in lineage.get("updates", []):
        if "global_auc" in update.get("metrics", {}):
            reported[update["hospital"]].append((update["round"], float(update["metrics"]["global_auc"])))
    result = []
    for hospital in sorted(rows):
        row = rows[hospital]
        own = sorted(reported.get(hospital, []))
        result.append(
            {
                "hospital": hospital,
                **row,
                "data_share": row["example_rounds"] / total_examples if total_examples else 0.0,
                "own_improvement": own[-1][1] - own[0][1] if len(own) >= 2 else None,
            }
        )
    return result


def credit_report(lineage: dict[str, Any], ledger_height: int) -> dict[str, Any]:
    """The credit of one model as a report (JSON-able; `to_markdown` in compliance.reports renders it)."""
    model = lineage["model"]
    return {
        "report": "credit",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ledger_height": ledger_height,
        "model_id": model["model_id"],
        "run_id": model["run_id"],
        "purpose": lineage["run"]["purpose"],
        "rounds": model["round"],
        "contributors": credit(lineage),
        "what_it_reveals": WHAT_IT_REVEALS,
    }


def plot_credit(report: dict[str, Any], path: Path) -> Path:
    """A bar chart per hospital: data share, gain share and ε spent (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["contributors"]
    names = [r["hospital"] for r in rows]
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    panels = (
        ("data share", [r["data_share"] for r in rows]),
        ("gain share (Δ AUC)", [r["gain_share"] for r in rows]),
        ("ε spent", [r["epsilon"] for r in rows]),
    )
    for axis, (title, values) in zip(axes, panels, strict=True):
        axis.bar(names, values, color="#4c72b0")
        axis.set_title(title)
        axis.tick_params(axis="x", labelrotation=20)
    figure.suptitle(f"Contributor credit of {report['model_id']}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
