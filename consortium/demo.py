"""`carefed demo`: a whole consortium on one machine, end to end, with the figures that matter printed.

Hospitals with skewed shares of the breast-cancer data, synthetic MRNs, a few patients without consent and a
few who withdraw after round 1; identities, the key ceremony, consents and budgets on the ledger; a SuperLink
and one SuperNode per hospital as real processes (TLS); a federated run with DP at each hospital and HE
aggregation, then a short run of the same rounds without HE to time the difference. It prints the AUC per
round, the final AUC beside centralised training and each hospital alone, ε per hospital, round times with and
without HE, the ledger summary and its verification, and writes `runs/<run-id>/` (model, report, plots).
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consortium.demo_data import DemoData, build_demo_data
from consortium.federation import (
    HospitalPlan,
    LocalConsortium,
    RunReport,
    RunRequest,
    set_up_consortium,
    withdraw_consents,
)
from consortium.registry import ModelRegistry
from fabric_network.contracts.common import opaque_id
from fabric_network.identities import hospital_names, msp_id_for
from fabric_network.ledger import open_ledger
from hospital_node.config import DEFAULT_PURPOSE, node_dir_for
from hospital_node.pseudonyms import PseudonymTable

TARGET_EPSILON = 3.0
DELTA = 1e-5
# Tuned on the demo split (see bench/round.py): logistic regression, 2 local epochs per round, Adam at 0.2.
TRAINING = {"local-epochs": 2, "learning-rate": 0.2, "batch-size": 32, "delta": DELTA}


@dataclass(frozen=True)
class Baselines:
    central: float
    alone_plain: dict[str, float]
    alone_dp: dict[str, float]


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def compute_baselines(data: DemoData, rounds: int) -> Baselines:
    """Centralised non-private training, and each hospital alone (non-private, and under the same DP)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from privacy.budget import PrivacyBudget
    from privacy.dp import DPConfig, PrivateTrainer
    from privacy.model import predict_proba

    def plain(x: np.ndarray, y: np.ndarray) -> float:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x, y)
        return _auc(data.test_y, model.predict_proba(data.test_x)[:, 1])

    central = plain(data.train_x, data.train_y)
    alone_plain: dict[str, float] = {}
    alone_dp: dict[str, float] = {}
    for hospital, part in zip(data.hospitals, data.parts, strict=True):
        x, y = data.train_x[part], data.train_y[part]
        alone_plain[hospital.name] = plain(x, y)
        config = DPConfig(
            TARGET_EPSILON,
            DELTA,
            epochs=int(TRAINING["local-epochs"]) * rounds,
            batch_size=int(TRAINING["batch-size"]),
            learning_rate=float(TRAINING["learning-rate"]),
        )
        model = data.spec.build()
        PrivateTrainer(model, data.spec.scale(x), y, config).train(PrivacyBudget(hospital.name, TARGET_EPSILON))
        alone_dp[hospital.name] = _auc(data.test_y, predict_proba(model, data.spec.scale(data.test_x)))
    return Baselines(central, alone_plain, alone_dp)


def _run_with_progress(
    console: Console, consortium: LocalConsortium, request: RunRequest, label: str, on_hold: Any = None
) -> RunReport:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("round {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(label, total=request.rounds, note="")

        def on_progress(results: dict[str, Any]) -> None:
            done = results["rounds"]
            note = (
                f"AUC {done[-2]['auc']:.3f} after round {done[-2]['round']}"
                if len(done) > 1 and done[-2]["auc"]
                else ""
            )
            progress.update(task, completed=len(done), note=note)
            if str(results.get("status", "")).startswith("holding") and on_hold is not None:
                on_hold()

        report = consortium.run(request, on_progress)
        progress.update(task, completed=len(report.results["rounds"]))
    return report


def _finish_plot(figure: Any, axis: Any, ylabel: str, title: str, path: Path) -> Path:
    """Label a per-round plot (integer round ticks), save it as PNG and release it."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    axis.set(xlabel="round", ylabel=ylabel, title=title)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _plots(run_dir: Path, he: RunReport, hospitals: list[str], central: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = he.results["rounds"]
    numbers = [r["round"] for r in rounds if r["auc"] is not None]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(numbers, [r["auc"] for r in rounds if r["auc"] is not None], marker="o", label="federated DP + HE")
    axis.axhline(central, color="grey", linestyle="--", label="centralised, non-private (pooled test set)")
    auc_png = _finish_plot(
        figure, axis, "test AUC (hospitals' held-out data)", "AUC per round", run_dir / "auc_per_round.png"
    )
    figure, axis = plt.subplots(figsize=(6, 4))
    for hospital in hospitals:
        points = [(r["round"], r["epsilon_run"][hospital]) for r in rounds if hospital in r["epsilon_run"]]
        if points:
            axis.plot(*zip(*points, strict=True), marker="o", label=hospital)
    axis.axhline(TARGET_EPSILON, color="grey", linestyle="--", label=f"target ε = {TARGET_EPSILON:g}")
    eps_png = _finish_plot(
        figure, axis, "ε spent in this run", "Privacy spent per round", run_dir / "epsilon_per_round.png"
    )
    return [auc_png, eps_png]


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def run_demo(
    hospitals: str = "3",
    rounds: int = 3,
    state_dir: Path = Path(".carefed"),
    out: Path = Path("runs"),
    backend: str = "embedded",
    console: Console | None = None,
) -> Path:
    """Run the whole demo; returns the run directory."""
    console = console or Console()
    started = time.monotonic()
    if rounds < 2:
        raise ValueError("--rounds: the demo needs at least 2 rounds (patients withdraw after round 1)")
    names = hospital_names(hospitals)
    run_id = opaque_id("run")
    demo_state = (state_dir / "demo" / run_id).resolve()
    run_dir = (out / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    console.rule(f"[bold]CareFed demo · {len(names)} hospitals · {rounds} rounds · {backend} ledger · {run_id}")
    data = build_demo_data(demo_state / "hospital-data", names)
    table = Table(title="Hospitals (skewed split of the Wisconsin breast-cancer data)")
    for column in ("hospital", "patients", "malignant", "no consent", "withdraw after round 1", "held-out"):
        table.add_column(column, justify="right" if column != "hospital" else "left")
    for hospital in data.hospitals:
        table.add_row(
            hospital.name,
            str(len(hospital.mrns)),
            f"{hospital.malignant_share:.0%}",
            str(len(hospital.mrns) - len(hospital.consenting)),
            str(len(hospital.withdrawing)),
            str(sum(1 for _ in hospital.eval_csv.open()) - 1),
        )
    console.print(table)
    plans = [
        HospitalPlan(h.name, h.train_csv, data.schema, h.consenting, 2 * TARGET_EPSILON + 0.5, eval_data=h.eval_csv)
        for h in data.hospitals
    ]
    with console.status("ledger identities, key ceremony, consents and budgets…"):
        set_up_consortium(demo_state, plans, DEFAULT_PURPOSE, backend)
    console.print(f"[green]✓[/] consortium set up in {demo_state}")

    def withdraw() -> None:
        for hospital in data.hospitals:
            with (
                open_ledger(backend=backend, state_dir=demo_state, org=hospital.name) as ledger,
                PseudonymTable(node_dir_for(demo_state, hospital.name) / "pseudonyms.sqlite") as table,
            ):
                withdraw_consents(ledger, table, hospital.withdrawing, DEFAULT_PURPOSE)
        console.print(f"  {sum(len(h.withdrawing) for h in data.hospitals)} patients withdrew their consent")

    with LocalConsortium(demo_state, names, tls=True, backend=backend) as consortium:
        with console.status("starting SuperLink, SuperNodes and node workers (TLS)…"):
            consortium.start()
        console.print("[green]✓[/] SuperLink and SuperNodes running")
        common = {"spec": data.spec, "epsilon": TARGET_EPSILON, "min_participants": max(1, len(names) - 1)}
        he_run = _run_with_progress(
            console,
            consortium,
            RunRequest(run_id, rounds=rounds, he=True, hold_after_round=1, extra=TRAINING, **common),  # type: ignore[arg-type]
            "federated DP + HE",
            on_hold=withdraw,
        )
        plain_rounds = min(2, rounds)
        plain_run = _run_with_progress(
            console,
            consortium,
            RunRequest(f"{run_id}-plain", rounds=plain_rounds, he=False, extra=TRAINING, **common),  # type: ignore[arg-type]
            "same rounds without HE (timing)",
        )
    with console.status("baselines: centralised and each hospital alone…"):
        baselines = compute_baselines(data, rounds)
    with open_ledger(backend=backend, state_dir=demo_state, org="consortium") as ledger:
        model_id = he_run.results["final"].get("model_id")
        if not model_id:
            raise RuntimeError(
                f"the federated run published no model: {he_run.results['status']}; {he_run.results['events']}"
            )
        artifact = ModelRegistry(demo_state / "registry").load(ledger, model_id)
        federated_auc = _auc(data.test_y, artifact.predict_proba(data.test_x))
        budgets = {
            h: ledger.evaluate("PrivacyBudgetContract:read_budget", msp_id_for(h), DEFAULT_PURPOSE) for h in names
        }
        events = Counter(event.name for event in ledger.events(0))
        verify = ledger.verify()
        height = ledger.height()
    shutil.copyfile(ModelRegistry(demo_state / "registry").path_of(artifact.sha256), run_dir / "model.carefed")

    rounds_table = Table(title="Federated DP + HE: test AUC per round (mean of hospitals' held-out data)")
    for column in ("round", "hospitals", "declined / dropped", "AUC", "round s", "ε this round (max)"):
        rounds_table.add_column(column)
    for r in he_run.results["rounds"]:
        rounds_table.add_row(
            str(r["round"]),
            ", ".join(r["participants"]),
            ", ".join([*r["declined"], *r["dropped"]]) or "-",
            f"{r['auc']:.4f}" if r["auc"] is not None else "-",
            f"{r['round_s']:.1f}",
            f"{max(r['epsilon_round'].values()):.3f}",
        )
    console.print(rounds_table)
    final = Table(title="Final model AUC on the consortium's held-out test set")
    final.add_column("model")
    final.add_column("AUC", justify="right")
    final.add_row("[bold]federated, DP (ε=3) + HE[/]", f"[bold]{federated_auc:.4f}[/]")
    final.add_row("centralised, non-private", f"{baselines.central:.4f}")
    for name in names:
        final.add_row(f"{name} alone, non-private", f"{baselines.alone_plain[name]:.4f}")
        final.add_row(f"{name} alone, DP (ε=3)", f"{baselines.alone_dp[name]:.4f}")
    console.print(final)
    console.print(f"gap to centralised non-private: {baselines.central - federated_auc:+.4f} AUC")
    eps_table = Table(title="Privacy budget per hospital (ledger)")
    for column in ("hospital", "ε HE run", "ε timing run", "ledger spent", "ledger limit"):
        eps_table.add_column(column, justify="right" if column != "hospital" else "left")
    for name in names:
        he_eps = max((r["epsilon_run"].get(name, 0.0) for r in he_run.results["rounds"]), default=0.0)
        plain_eps = max((r["epsilon_run"].get(name, 0.0) for r in plain_run.results["rounds"]), default=0.0)
        eps_table.add_row(
            name, f"{he_eps:.3f}", f"{plain_eps:.3f}", f"{budgets[name]['spent']:.3f}", f"{budgets[name]['limit']:.3f}"
        )
    console.print(eps_table)
    he_rounds, plain_rounds_list = he_run.results["rounds"], plain_run.results["rounds"]
    he_round_s = _mean([r["round_s"] for r in he_rounds[:plain_rounds]])
    plain_round_s = _mean([r["round_s"] for r in plain_rounds_list])
    timing = Table(
        title=f"Round time, first {plain_rounds} rounds (Flower polls every 3 s; the in-round HE cost below)"
    )
    for column in ("", "with HE", "without HE"):
        timing.add_column(column, justify="right")
    timing.add_row("round wall time (s)", f"{he_round_s:.2f}", f"{plain_round_s:.2f}")
    timing.add_row("ratio", f"{he_round_s / plain_round_s:.2f}x", "1.00x")
    timing.add_row(
        "encrypt per hospital (ms)",
        f"{1000 * _mean([v for r in he_rounds for v in r['encrypt_s'].values()]):.1f}",
        f"{1000 * _mean([v for r in plain_rounds_list for v in r['encrypt_s'].values()]):.2f}",
    )
    timing.add_row(
        "aggregate (ms)",
        f"{1000 * _mean([r['aggregate_s'] for r in he_rounds]):.1f}",
        f"{1000 * _mean([r['aggregate_s'] for r in plain_rounds_list]):.2f}",
    )
    timing.add_row(
        "update size (bytes)", f"{he_rounds[0]['update_bytes']:,}", f"{plain_rounds_list[0]['update_bytes']:,}"
    )
    console.print(timing)
    ledger_table = Table(title=f"Ledger: {height} blocks")
    ledger_table.add_column("event")
    ledger_table.add_column("count", justify="right")
    for name, count in sorted(events.items()):
        ledger_table.add_row(name, str(count))
    console.print(ledger_table)
    console.print(("[green]" if verify.ok else "[red]") + verify.describe())
    roots = {name: [r["consent_roots"].get(name, "-")[:12] for r in he_rounds] for name in names}
    summary = {
        "run_id": run_id,
        "hospitals": names,
        "rounds": he_rounds,
        "plain_rounds": plain_rounds_list,
        "auc_federated_dp_he": federated_auc,
        "auc_central": baselines.central,
        "auc_alone_plain": baselines.alone_plain,
        "auc_alone_dp": baselines.alone_dp,
        "model_sha256": artifact.sha256,
        "model_id": model_id,
        "budgets": budgets,
        "ledger_events": dict(events),
        "ledger_verify": verify.describe(),
        "round_s_he": he_round_s,
        "round_s_plain": plain_round_s,
        "consent_roots": roots,
        "events": he_run.results["events"],
        "elapsed_s": time.monotonic() - started,
    }
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    plots = _plots(run_dir, he_run, names, baselines.central)
    _write_report(run_dir, summary, plots)
    console.print(
        f"[bold]wrote[/] {run_dir} (model.carefed, report.md, {', '.join(p.name for p in plots)}) "
        f"in {summary['elapsed_s']:.0f} s"
    )
    return run_dir


def _write_report(run_dir: Path, s: dict[str, Any], plots: list[Path]) -> None:
    lines = [
        f"# CareFed federated run {s['run_id']}",
        "",
        f"Hospitals: {', '.join(s['hospitals'])}. Model: logistic regression, DP-SGD at each hospital "
        f"(target ε = {TARGET_EPSILON:g}, δ = {DELTA:g}), CKKS aggregation (the aggregator holds no secret key).",
        "",
        "## Test AUC",
        "",
        "| model | AUC |",
        "|---|---|",
        f"| federated, DP + HE | {s['auc_federated_dp_he']:.4f} |",
        f"| centralised, non-private | {s['auc_central']:.4f} |",
        *[f"| {h} alone, non-private | {s['auc_alone_plain'][h]:.4f} |" for h in s["hospitals"]],
        *[f"| {h} alone, DP | {s['auc_alone_dp'][h]:.4f} |" for h in s["hospitals"]],
        "",
        "## Rounds",
        "",
        "| round | hospitals | declined / dropped | AUC | round s |",
        "|---|---|---|---|---|",
        *[
            f"| {r['round']} | {', '.join(r['participants'])} | {', '.join([*r['declined'], *r['dropped']]) or '-'} | "
            f"{r['auc'] if r['auc'] is None else round(r['auc'], 4)} | {r['round_s']:.1f} |"
            for r in s["rounds"]
        ],
        "",
        f"Round time with HE {s['round_s_he']:.2f} s, without HE {s['round_s_plain']:.2f} s "
        f"(ratio {s['round_s_he'] / s['round_s_plain']:.2f}).",
        "",
        "## Privacy budget (ledger)",
        "",
        "| hospital | spent | limit |",
        "|---|---|---|",
        *[f"| {h} | {b['spent']:.3f} | {b['limit']:.3f} |" for h, b in s["budgets"].items()],
        "",
        "## Ledger",
        "",
        f"{s['ledger_verify']}. Model {s['model_id']} registered with SHA-256 `{s['model_sha256']}`.",
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
    ]
    (run_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
