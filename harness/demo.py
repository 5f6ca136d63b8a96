"""`carefed demo`: a whole consortium on one machine, end to end, with the figures that matter printed.

Hospitals with skewed shares of the breast-cancer data, synthetic MRNs, a few patients without consent and a
few who withdraw after round 1; identities, the key ceremony, consents and budgets on the ledger; a SuperLink
and one SuperNode per hospital as real processes (TLS); a federated run with DP at each hospital and HE
aggregation, then a short run of the same rounds without HE to time the difference. It prints the AUC per
round, the final AUC beside centralised training and each hospital alone, ε per hospital, round times with and
without HE, the ledger summary and its verification, the run's approvals, each hospital's credit for the model
and every privacy charge recomputed from the ledger, and writes `runs/<run-id>/` (model, report, plots).

The model is logistic regression, or with `--model mlp` an MLP of `--hidden` ReLU layers; the run proposal, every
hospital, the artefact and the baselines it is compared with all use that one network (`ModelSpec.hidden`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from compliance.credit import plot_credit
from compliance.reports import credit_of_model, privacy_budget_report
from consortium.runs import RunReport
from fabric_network.contracts.common import opaque_id
from fabric_network.identities import hospital_names, msp_id_for
from fabric_network.ledger import LedgerError, open_ledger
from federation.layout import consortium_registry_dir, node_dir_for
from federation.registry import ModelRegistry
from harness.demo_data import DemoData, build_demo_data
from harness.local_consortium import (
    HospitalPlan,
    LocalConsortium,
    RunRequest,
    set_up_consortium,
    stop_fabric_network,
    withdraw_consents,
)
from harness.standardisation import agree_standardisation
from hospital_node.config import DEFAULT_PURPOSE
from hospital_node.pseudonyms import PseudonymTable

TARGET_EPSILON = 3.0
DELTA = 1e-5
# Tuned on the demo split (see bench/round.py): logistic regression, 2 local epochs per round, Adam at 0.2.
TRAINING = {"local-epochs": 2, "learning-rate": 0.2, "batch-size": 32, "delta": DELTA}
# Synthea: ~40 patients per hospital in the cohort, so smaller batches, more epochs and a larger step.
SYNTHEA_TRAINING = {"local-epochs": 3, "learning-rate": 0.5, "batch-size": 16, "delta": DELTA}
DATASETS = ("breast-cancer", "synthea")
MODELS = ("logistic", "mlp")
#: `--model mlp` without `--hidden`: one hidden layer of 16 ReLU units.
DEFAULT_MLP_HIDDEN = (16,)
#: The MLP's Adam step at most (docs/federated.md, "The model"): under DP noise Adam moves every weight by about its
#: step. At 0.2 a two-round 30→32→16→1 demo came out inverted (AUC 0.16); over 20 two-round runs each its AUC was
#: 0.58-0.99 (mean 0.88) at 0.2 and 0.78-0.99 (mean 0.94) at 0.1; at 3 rounds, and for 30→16→1, the two are alike.
MLP_LEARNING_RATE = 0.1
_HIDDEN_FIX = "give comma-separated positive integers, e.g. --hidden 32,16"


#: report.md's caption of each picture the demo writes.
CAPTIONS = {
    "auc_per_round.png": "Test AUC per round",
    "auc_final.png": "Final AUC: federated vs centralised vs each hospital alone (with and without DP)",
    "epsilon_vs_limit.png": "ε spent per round, from 0, with the ledger's limit",
    "budget_per_hospital.png": "Privacy budget per hospital: spent (all runs) vs limit",
    "consent_coverage.png": "Consent coverage per round and hospital: eligible, excluded, withdrawn",
    "lineage.svg": "The model's lineage (W3C PROV)",
    "audit_activity.png": "Audit events over time, refusals marked",
}


@dataclass(frozen=True)
class Baselines:
    central: float
    alone_plain: dict[str, float]
    alone_dp: dict[str, float]


def hidden_layers(model: str, hidden: str | None = None) -> tuple[int, ...]:
    """The hidden layer sizes `--model` and `--hidden` ask for: () is logistic regression.

    `hidden` is the option's text ("32,16", input side first); None means not given (the MLP then has
    DEFAULT_MLP_HIDDEN). A value that names no valid network is refused with the option and the fix.
    """
    if model not in MODELS:
        raise ValueError(f"--model: {model!r} is not one of {', '.join(MODELS)}")
    if model == "logistic":
        if hidden is not None:
            raise ValueError(
                f"--hidden: logistic regression has no hidden layers; add --model mlp to train an MLP with "
                f"--hidden {hidden}, or drop --hidden"
            )
        return ()
    if hidden is None:
        return DEFAULT_MLP_HIDDEN
    if not hidden.strip():
        raise ValueError(
            f"--hidden: no layer sizes given for --model mlp; {_HIDDEN_FIX} (or leave --hidden out for one layer of 16)"
        )
    sizes = []
    for item in hidden.split(","):
        try:
            size = int(item.strip())
        except ValueError:
            what = "an empty layer size" if not item.strip() else f"{item.strip()!r} is not an integer"
            raise ValueError(f"--hidden: {what} in {hidden!r}; {_HIDDEN_FIX}") from None
        if size < 1:
            raise ValueError(f"--hidden: layer size {size} in {hidden!r} is not positive; {_HIDDEN_FIX}")
        sizes.append(size)
    return tuple(sizes)


def training_settings(dataset: str, hidden: Sequence[int]) -> dict[str, float]:
    """The run's local training settings: the dataset's tuned ones, an MLP's Adam step capped at MLP_LEARNING_RATE."""
    training = SYNTHEA_TRAINING if dataset == "synthea" else TRAINING
    if hidden:
        training = {**training, "learning-rate": min(training["learning-rate"], MLP_LEARNING_RATE)}
    return training


def describe_model(n_features: int, hidden: Sequence[int]) -> str:
    """The network in words, for the console and the report: "logistic regression" or "MLP 30→16→1 (ReLU)"."""
    if not hidden:
        return "logistic regression"
    return f"MLP {'→'.join(str(width) for width in (n_features, *hidden, 1))} (ReLU)"


def plain_model(hidden: Sequence[int]) -> Any:
    """The non-private baseline of the spec's network: standardised logistic regression, or an MLP with the same
    hidden layers (ReLU, one logistic output), both from scikit-learn."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not hidden:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=tuple(hidden), activation="relu", max_iter=5000, random_state=0),
    )


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def compute_baselines(data: DemoData, rounds: int, training: dict[str, float] = TRAINING) -> Baselines:
    """Centralised non-private training, and each hospital alone (non-private, and under the same DP), all of the
    network `data.spec` describes (logistic regression or the MLP the federated run trains)."""
    from privacy.budget import PrivacyBudget
    from privacy.dp import DPConfig, PrivateTrainer
    from privacy.model import predict_proba

    def plain(x: np.ndarray, y: np.ndarray) -> float:
        model = plain_model(data.spec.hidden).fit(x, y)
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
            epochs=int(training["local-epochs"]) * rounds,
            batch_size=int(training["batch-size"]),
            learning_rate=float(training["learning-rate"]),
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


def _plots(run_dir: Path, he: RunReport, central: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = he.results["rounds"]
    numbers = [r["round"] for r in rounds if r["auc"] is not None]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(numbers, [r["auc"] for r in rounds if r["auc"] is not None], marker="o", label="federated DP + HE")
    axis.axhline(central, color="grey", linestyle="--", label="centralised, non-private (pooled test set)")
    return [
        _finish_plot(
            figure, axis, "test AUC (hospitals' held-out data)", "AUC per round", run_dir / "auc_per_round.png"
        )
    ]


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def run_demo(
    hospitals: str = "3",
    rounds: int = 3,
    state_dir: Path = Path(".carefed"),
    out: Path = Path("runs"),
    backend: str = "embedded",
    console: Console | None = None,
    dataset: str = "breast-cancer",
    model: str = "logistic",
    hidden: str | None = None,
    standardise: float = 0.0,
) -> Path:
    """Run the whole demo on `dataset` ("breast-cancer" or "synthea") with `model` ("logistic" or "mlp" with the
    `hidden` layer sizes, "32,16"; see `hidden_layers`); returns the run directory."""
    console = console or Console()
    started = time.monotonic()
    if rounds < 2:
        raise ValueError("--rounds: the demo needs at least 2 rounds (patients withdraw after round 1)")
    if dataset not in DATASETS:
        raise ValueError(f"--dataset: {dataset!r} is not one of {', '.join(DATASETS)}")
    layers = hidden_layers(model, hidden)
    names = hospital_names(hospitals)
    refuse_second_demo(state_dir)
    run_id = opaque_id("run")
    demo_state = state_dir.resolve()  # the consortium stays here: `carefed ledger …`, `report …`, `api` find it
    run_dir = (out / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    console.rule(
        f"[bold]CareFed demo · {dataset} · {len(names)} hospitals · {rounds} rounds · {backend} ledger · {run_id}"
    )
    training = training_settings(dataset, layers)
    if dataset == "synthea":
        from harness.synthea_data import build_synthea_data

        with console.status("unpacking the Synthea patients and reading each hospital's FHIR Bundles…"):
            data = build_synthea_data(demo_state / "hospital-data", names, hidden=layers)
    else:
        data = build_demo_data(demo_state / "hospital-data", names, hidden=layers)
    network = describe_model(len(data.spec.features), data.spec.hidden)
    console.print(
        f"model: {network}, the same at every hospital and in the baselines; {training['local-epochs']:g} local "
        f"epochs per round, Adam at {training['learning-rate']:g}, batches of {training['batch-size']:g}"
    )
    if data.funnels:
        console.print(_funnel_table(data.funnels))
    table = Table(title=data.title)
    for column in ("hospital", "patients", data.label, "no consent", "withdraw after round 1", "held-out"):
        table.add_column(column, justify="right" if column != "hospital" else "left")
    for hospital in data.hospitals:
        table.add_row(
            hospital.name,
            str(len(hospital.mrns)),
            f"{hospital.positive_share:.0%}",
            str(len(hospital.mrns) - len(hospital.consenting)),
            str(len(hospital.withdrawing)),
            str(hospital.eval_records),
        )
    console.print(table)
    plans = [
        HospitalPlan(
            h.name,
            h.train_data,
            data.schema,
            h.consenting,
            2 * TARGET_EPSILON + 0.5 + standardise,
            eval_data=h.eval_data,
        )
        for h in data.hospitals
    ]
    try:
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
            if standardise > 0:
                with console.status(
                    f"agreeing on feature standardisation (a federated moments query, ε={standardise})…"
                ):
                    spec, agreed = agree_standardisation(
                        consortium, data.schema, data.spec, standardise, DEFAULT_PURPOSE
                    )
                data = replace(data, spec=spec)
                console.print(
                    f"[green]✓[/] features standardised by the consortium's DP means and stds "
                    f"(query {agreed['query_id']}, ε={standardise:g} per hospital)"
                )
            common = {"spec": data.spec, "epsilon": TARGET_EPSILON, "min_participants": max(1, len(names) - 1)}
            he_run = _run_with_progress(
                console,
                consortium,
                RunRequest(run_id, rounds=rounds, he=True, hold_after_round=1, extra=training, **common),  # type: ignore[arg-type]
                "federated DP + HE",
                on_hold=withdraw,
            )
            plain_rounds = min(2, rounds)
            plain_run = _run_with_progress(
                console,
                consortium,
                RunRequest(f"{run_id}-plain", rounds=plain_rounds, he=False, extra=training, **common),  # type: ignore[arg-type]
                "same rounds without HE (timing)",
            )
        with console.status("baselines: centralised and each hospital alone…"):
            baselines = compute_baselines(data, rounds, training)
        with open_ledger(backend=backend, state_dir=demo_state, org="consortium") as ledger:
            model_id = he_run.results["final"].get("model_id")
            if not model_id:
                raise RuntimeError(
                    f"the federated run published no model: {he_run.results['status']}; {he_run.results['events']}"
                )
            registered = ledger.evaluate("LineageContract:read_model", model_id)["sha256"]
            artifact = ModelRegistry(consortium_registry_dir(demo_state)).load(model_id, registered)
            federated_auc = _auc(data.test_y, artifact.predict_proba(data.test_x))
            budgets = {
                h: ledger.evaluate("PrivacyBudgetContract:read_budget", msp_id_for(h), DEFAULT_PURPOSE) for h in names
            }
            events = Counter(event.name for event in ledger.events(0))
            verify = ledger.verify()
            height = ledger.height()
            governance = _governance(ledger, run_id, model_id)
            with console.status("pictures: AUCs, ε, budgets, consent coverage, lineage, audit activity…"):
                pictures = draw_run_pictures(
                    ledger, run_dir, run_id, he_run, model_id, budgets, baselines, federated_auc
                )
    finally:
        if backend == "fabric":
            stop_fabric_network(demo_state)
            console.print(f"Fabric network stopped; its ledgers stay in {demo_state}")
    published = ModelRegistry(consortium_registry_dir(demo_state)).path_of(artifact.sha256)
    shutil.copyfile(published, run_dir / "model.carefed")

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
    _print_governance(console, governance)
    roots = {name: [r["consent_roots"].get(name, "-")[:12] for r in he_rounds] for name in names}
    summary = {
        "run_id": run_id,
        "dataset": dataset,
        "model": network,
        "hidden": list(data.spec.hidden),
        "funnels": data.funnels,
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
        "governance": governance,
        "elapsed_s": time.monotonic() - started,
    }
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    plots = [*_plots(run_dir, he_run, baselines.central), *pictures]
    plots.append(plot_credit(governance["credit"], run_dir / "credit.png"))
    _write_report(run_dir, summary, plots)
    console.print(
        f"[bold]wrote[/] {run_dir} (model.carefed, report.md, {', '.join(p.name for p in plots)}) "
        f"in {summary['elapsed_s']:.0f} s"
    )
    if not verify.ok:  # the report above keeps the evidence; the exit code must not call the run a success
        raise LedgerError(f"the demo's ledger failed verification: {verify.describe()} (report: {run_dir})")
    console.print(next_steps(state_dir, backend, run_id))
    return run_dir


def next_steps(state_dir: Path, backend: str, run_id: str) -> str:
    """The commands to look at what the demo left, written for the backend it ran on (every one must work as
    printed: on Fabric the network was stopped, so it comes first, and the API serves the embedded ledger only)."""
    flag = "" if state_dir == Path(".carefed") else f" --state-dir {state_dir}"
    if backend == "fabric":
        flag += " --backend fabric"
    commands = [
        f"carefed ledger verify{flag}",
        f"carefed report privacy-budget{flag}",
        f"carefed report consent-coverage {run_id}{flag}",
        f"carefed audit export --format fhir --out audit-export{flag}",
    ]
    if backend == "fabric":
        start = f"carefed fabric up --state-dir {state_dir}"
        return f"The consortium stays in {state_dir}: start its network with `{start}`, then try " + ", ".join(
            f"`{command}`" for command in commands
        )
    commands.append(f"carefed api{flag}")
    return f"The consortium stays in {state_dir}: try " + ", ".join(f"`{c}`" for c in commands) + " (README.md)."


def _funnel_table(funnels: dict[str, dict[str, Any]]) -> Table:
    """The cohort funnel of each hospital's own FHIR export, side by side (what `carefed node check` prints)."""
    hospitals = list(funnels)
    table = Table(title="Cohort funnel (each hospital's training export through the consortium's schema)")
    table.add_column("step")
    for hospital in hospitals:
        table.add_column(hospital, justify="right")
    for step, count in _funnel_rows(funnels):
        table.add_row(step, *(str(count(h)) for h in hospitals))
    return table


def _funnel_rows(funnels: dict[str, dict[str, Any]]) -> list[tuple[str, Any]]:
    reasons = list(dict.fromkeys(r for f in funnels.values() for r in f["dropped"]))
    return [
        ("patients read", lambda h: funnels[h]["patients_read"]),
        *[(f"- {reason}", lambda h, r=reason: funnels[h]["dropped"].get(r, 0)) for reason in reasons],
        ("in cohort", lambda h: funnels[h]["in_cohort"]),
        ("trained on", lambda h: funnels[h]["trained_on"]),
        ("positive", lambda h: funnels[h]["positive"]),
    ]


def _governance(ledger: Any, run_id: str, model_id: str) -> dict[str, Any]:
    """Who approved the run, each hospital's credit for the model, and every charge recomputed from the ledger."""
    budget = privacy_budget_report(ledger, recompute=True)
    return {
        "approval": ledger.evaluate("LineageContract:run_approval", run_id),
        "credit": credit_of_model(ledger, model_id),
        "recomputed": [r for r in budget["recomputed"] if r["run_id"] == run_id],
        "recompute_summary": budget["recompute_summary"],
    }


def _print_governance(console: Console, governance: dict[str, Any]) -> None:
    approval = governance["approval"]
    console.print(
        f"run approval on the ledger: approved by {', '.join(approval['approved']) or 'nobody'}"
        + (f"; rejected by {', '.join(approval['rejected'])}" if approval["rejected"] else "")
        + f" ({len(approval['approved'])} approvals, {approval['needed']} needed; status {approval['status']})"
    )
    credit = Table(title="Contributor credit of the model (ledger; docs/governance.md says what each reveals)")
    for column in ("hospital", "rounds", "examples", "ε spent", "data share", "gain share (ΔAUC)", "own ΔAUC"):
        credit.add_column(column, justify="right" if column != "hospital" else "left")
    for row in governance["credit"]["contributors"]:
        credit.add_row(
            row["hospital"],
            str(row["rounds"]),
            str(row["examples"]),
            f"{row['epsilon']:.3f}",
            f"{row['data_share']:.3f}",
            f"{row['gain_share']:+.4f}",
            _signed(row["own_improvement"]),
        )
    console.print(credit)
    summary = governance["recompute_summary"]
    console.print(
        ("[green]" if summary["agree_to_1e-6"] else "[red]")
        + f"privacy budget recomputed from the ledger alone: {summary['charges']} charges, largest difference "
        f"{summary['max_abs_difference']:.2g} ({'all agree to 1e-6' if summary['agree_to_1e-6'] else 'DISAGREE'})"
    )


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _governance_lines(g: dict[str, Any]) -> list[str]:
    approval, summary = g["approval"], g["recompute_summary"]
    return [
        "## Governance",
        "",
        f"Run approved on the ledger by {', '.join(approval['approved'])}"
        + (f", rejected by {', '.join(approval['rejected'])}" if approval["rejected"] else "")
        + f" ({approval['needed']} approvals needed).",
        "",
        "Contributor credit of the model:",
        "",
        "| hospital | rounds | examples | ε spent | data share | gain share (ΔAUC) | own ΔAUC |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r['hospital']} | {r['rounds']} | {r['examples']} | {r['epsilon']:.3f} | {r['data_share']:.3f} | "
            f"{r['gain_share']:+.4f} | {_signed(r['own_improvement'])} |"
            for r in g["credit"]["contributors"]
        ],
        "",
        f"Privacy budget recomputed from the ledger alone ({summary['accountant']}): {summary['charges']} charges "
        f"in all runs, largest |charged - recomputed| = {summary['max_abs_difference']:.2g}; "
        + ("all agree to 1e-6." if summary["agree_to_1e-6"] else "**some disagree by more than 1e-6**."),
        "",
        "| hospital | round | charged ε | recomputed ε |",
        "|---|---|---|---|",
        *[f"| {r['hospital']} | {r['round']} | {r['charged']:.6f} | {r['recomputed']:.6f} |" for r in g["recomputed"]],
        "",
    ]


def refuse_second_demo(state_dir: Path) -> None:
    """The demo sets up a consortium of synthetic patients; a second one cannot join an existing consortium.

    Its fixed data would meet patients who already withdrew (a withdrawal cannot be repeated) and budgets
    already spent, so rather than mixing, it stops and says what to do.
    """
    from fabric_network.identities import MANIFEST_NAME, crypto_dir_of

    if (crypto_dir_of(state_dir) / MANIFEST_NAME).exists():
        runs = sorted(p.stem for p in (state_dir / "runs").glob("*.json") if not p.stem.endswith("-plain"))
        earlier = f" (run {', '.join(runs)})" if runs else ""
        raise DemoRefused(
            f"--state-dir: {state_dir} already holds a consortium{earlier}. The demo sets up a new consortium of "
            "synthetic patients and does not add them to an existing one (its patients who withdrew cannot "
            f"withdraw again, its budgets are spent). Every README command works on the consortium in {state_dir} "
            f"as it is; for a fresh demo remove {state_dir} or give --state-dir NEW."
        )


class DemoRefused(ValueError):
    """The demo will not run in this state directory; the message says why and what to do."""


def draw_run_pictures(
    ledger: Any,
    run_dir: Path,
    run_id: str,
    he_run: RunReport,
    model_id: str,
    budgets: dict[str, dict[str, Any]],
    baselines: Baselines,
    federated_auc: float,
) -> list[Path]:
    """The run's pictures from the ledger and its results: what report.md embeds and the service shows."""
    from compliance import figures
    from compliance.lineage import lineage_prov
    from compliance.reports import consent_coverage_report
    from compliance.trail import audit_trail

    limits = {h: float(b["limit"]) for h, b in budgets.items()}
    records, _ = audit_trail(ledger)
    return [
        figures.auc_bars(
            run_dir / "auc_final.png",
            federated_auc,
            baselines.central,
            baselines.alone_plain,
            baselines.alone_dp,
            TARGET_EPSILON,
        ),
        figures.epsilon_per_round(run_dir / "epsilon_vs_limit.png", he_run.results["rounds"], limits, TARGET_EPSILON),
        figures.budget_bars(run_dir / "budget_per_hospital.png", budgets),
        figures.consent_coverage(
            run_dir / "consent_coverage.png", consent_coverage_report(ledger, run_id)["rounds"], run_id
        ),
        figures.lineage_svg(
            run_dir / "lineage.svg", lineage_prov(ledger.evaluate("LineageContract:get_model_lineage", model_id))
        ),
        figures.audit_activity(run_dir / "audit_activity.png", records),
    ]


def _write_report(run_dir: Path, s: dict[str, Any], plots: list[Path]) -> None:
    funnels = s.get("funnels") or {}
    funnel_lines = [
        "## Cohort funnel",
        "",
        f"| step | {' | '.join(funnels)} |",
        f"|---|{'---|' * len(funnels)}",
        *[f"| {step} | {' | '.join(str(count(h)) for h in funnels)} |" for step, count in _funnel_rows(funnels)],
        "",
    ]
    lines = [
        f"# CareFed federated run {s['run_id']} ({s['dataset']})",
        "",
        f"Hospitals: {', '.join(s['hospitals'])}. Model: {s['model']}, DP-SGD at each hospital "
        f"(target ε = {TARGET_EPSILON:g}, δ = {DELTA:g}), CKKS aggregation (the aggregator holds no secret key).",
        "",
        *(funnel_lines if funnels else []),
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
        *_governance_lines(s["governance"]),
        "## Ledger",
        "",
        f"{s['ledger_verify']}. Model {s['model_id']} registered with SHA-256 `{s['model_sha256']}`.",
        "",
        "## Pictures",
        "",
        *[f"### {CAPTIONS.get(p.name, p.stem)}\n\n![{CAPTIONS.get(p.name, p.stem)}]({p.name})\n" for p in plots],
    ]
    (run_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
