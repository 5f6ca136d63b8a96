"""One federated round with HE vs the same round without it, and the utility of federated DP vs central training.

Timing runs the real deployment: a SuperLink, one SuperNode and worker per hospital, TLS, the embedded ledger;
`--timing-rounds` rounds with CKKS aggregation, then the same rounds with a plaintext sum, on the demo's skewed
3-hospital split. Round time = ServerApp's wall time from sending the round to holding the new aggregate.

Utility drives the very same hospital code (`hospital_node.training.train_round`: consent filter, DP-SGD with
the run's accountant, ledger budget charges, CKKS encryption) and `privacy.he.aggregate` in-process, round by
round, for ε = 1, 3, 8 (`--repeats` runs each, DP noise differs per run), and compares the final model's test
AUC with centralised non-private logistic regression on the pooled training data.

    python -m bench.round [--rounds 3] [--timing-rounds 3] [--repeats 3] [--json]

With --json the last line is one JSON object: `round_s_he`, `round_s_plain`, `he_round_ratio`, `auc_central`,
`auc_federated_dp_eps3`, `auc_gap_eps3` and more.

    python -m bench.round --namespaces [--timing-rounds 3] [--json]     (root, Fabric binaries installed)

Across hosts vs one host: the same DP+HE run on the Fabric ledger, once with every organisation on its own
"machine" (a network namespace each, deployed with docs/deployment.md's commands: harness.deployment), once
with all of them on this machine (`carefed fabric up` + the local harness); prints `round_s_namespaces`,
`round_s_one_host` and `namespaces_round_ratio`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import bench.script_mode  # noqa: F401  (first: `python bench/X.py` must find the packages, not bench/X.py)

# isort: split
from consortium.keys import public_context_path
from fabric_network.contracts.common import opaque_id
from federation.layout import node_dir_for
from federation.messages import RoundRequest
from federation.model_artifact import ModelArtifact
from harness.demo import TRAINING, compute_baselines
from harness.demo_data import DemoData, build_demo_data
from harness.local_consortium import HospitalPlan, LocalConsortium, RunRequest, propose_run, set_up_consortium
from hospital_node.config import NodeConfig
from hospital_node.training import evaluate_final, train_round

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]
EPSILONS = (1.0, 3.0, 8.0)


def federated_auc(state: Path, data: DemoData, epsilon: float, rounds: int) -> float:
    """Train a federated DP + HE model in-process with the hospitals' own round code; its pooled test AUC."""
    from privacy.he import PublicContext, aggregate

    public = PublicContext.deserialize(public_context_path(state).read_bytes())
    nodes = [NodeConfig.load(node_dir_for(state, h)) for h in HOSPITALS]
    run_id = opaque_id("bench")
    run_config = {
        "hospitals": ",".join(HOSPITALS),
        "num-rounds": rounds,
        "epsilon": epsilon,
        "spec": data.spec.to_json(),
        "results-path": str(state / "bench-results.json"),
        **TRAINING,
    }
    propose_run(state, HOSPITALS, run_id, run_config, start=True)  # every hospital approves the bench's run
    summed = b""
    for round_number in range(1, rounds + 1):
        request = RoundRequest(
            run_id=run_id,
            round=round_number,
            rounds=rounds,
            purpose="HRESCH",
            spec=data.spec,
            he=True,
            epsilon=epsilon,
            delta=float(TRAINING["delta"]),
            max_grad_norm=1.0,
            local_epochs=int(TRAINING["local-epochs"]),
            batch_size=int(TRAINING["batch-size"]),
            learning_rate=float(TRAINING["learning-rate"]),
            record_unit=1000.0,
            aggregate=summed,
        )
        summed = aggregate(public, [bytes(train_round(node, request)["update"]) for node in nodes])
    final = evaluate_final(nodes[0], replace(request, aggregate=summed))
    artifact = ModelArtifact.from_bytes(bytes(final["artifact"]))
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(data.test_y, artifact.predict_proba(data.test_x)))


def time_rounds(state: Path, data: DemoData, rounds: int) -> dict[str, Any]:
    """Mean round time over `rounds` rounds through Flower, with HE and with a plaintext sum."""
    figures: dict[str, Any] = {}
    with LocalConsortium(state, HOSPITALS) as consortium:
        consortium.start()
        for he in (True, False):
            request = RunRequest(opaque_id("timing"), data.spec, rounds=rounds, he=he, extra=dict(TRAINING))
            report = consortium.run(request)
            measured = report.results["rounds"]
            if len(measured) != rounds:
                raise RuntimeError(f"timing run ended early: {report.results['status']} {report.results['events']}")
            key = "he" if he else "plain"
            figures[f"round_s_{key}"] = statistics.mean(r["round_s"] for r in measured)
            figures[f"update_bytes_{key}"] = measured[0]["update_bytes"]
            figures[f"encrypt_ms_{key}"] = 1000 * statistics.mean(v for r in measured for v in r["encrypt_s"].values())
            figures[f"aggregate_ms_{key}"] = 1000 * statistics.mean(r["aggregate_s"] for r in measured)
            figures[f"train_s_{key}"] = statistics.mean(v for r in measured for v in r["train_s"].values())
    figures["he_round_ratio"] = figures["round_s_he"] / figures["round_s_plain"]
    return figures


def time_namespaces(rounds: int, seed: int = 7) -> dict[str, Any]:
    """Mean round time of one DP+HE run on Fabric across namespaces, and of the same run on one host."""
    from harness.deployment import EPSILON_LIMIT, NamespaceConsortium
    from harness.local_consortium import stop_fabric_network

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="carefed-bench-namespaces-") as tmp:
        across = NamespaceConsortium(Path(tmp) / "across", seed=seed)
        try:
            across.deploy()
            run_id = opaque_id("timing")
            across.propose(run_id, rounds)
            across.run(run_id)
            measured = across.results(run_id)["rounds"]
        finally:
            across.stop()
            across.destroy()
        figures["round_s_namespaces"] = statistics.mean(r["round_s"] for r in measured)
        state = Path(tmp) / "one-host"
        data = build_demo_data(state / "hospital-data", HOSPITALS, seed=seed)
        plans = [
            HospitalPlan(h.name, h.train_data, data.schema, h.consenting, EPSILON_LIMIT, h.eval_data)
            for h in data.hospitals
        ]
        set_up_consortium(state, plans, backend="fabric")
        try:
            with LocalConsortium(state, HOSPITALS, backend="fabric") as consortium:
                consortium.start()
                report = consortium.run(RunRequest(opaque_id("timing"), data.spec, rounds=rounds))
        finally:
            stop_fabric_network(state)
        figures["round_s_one_host"] = statistics.mean(r["round_s"] for r in report.results["rounds"])
    figures["namespaces_round_ratio"] = figures["round_s_namespaces"] / figures["round_s_one_host"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each utility run (the demo's default)")
    parser.add_argument("--timing-rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="utility runs per ε (DP noise differs per run)")
    parser.add_argument("--skip-timing", action="store_true", help="utility table only (no Flower processes)")
    parser.add_argument("--skip-utility", action="store_true", help="timing table only")
    parser.add_argument("--namespaces", action="store_true", help="across hosts (network namespaces) vs one host")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    console = Console()
    if args.namespaces:
        figures = time_namespaces(args.timing_rounds)
        table = Table(title=f"One DP+HE round on Fabric, {len(HOSPITALS)} hospitals (mean of {args.timing_rounds})")
        for column in ("across namespaces (s)", "one host (s)", "ratio"):
            table.add_column(column, justify="right")
        table.add_row(
            f"{figures['round_s_namespaces']:.2f}", f"{figures['round_s_one_host']:.2f}",
            f"{figures['namespaces_round_ratio']:.2f}",
        )  # fmt: skip
        console.print(table)
        if args.json:
            print(json.dumps(figures))
        return
    with tempfile.TemporaryDirectory(prefix="carefed-bench-round-") as tmp:
        state = Path(tmp)
        data = build_demo_data(state / "hospital-data", HOSPITALS)
        set_up_consortium(
            state, [HospitalPlan(h.name, h.train_data, data.schema, h.consenting, 100.0) for h in data.hospitals]
        )
        started = time.perf_counter()
        results: dict[str, Any] = {} if args.skip_timing else time_rounds(state, data, args.timing_rounds)
        baselines = compute_baselines(data, args.rounds)
        results["auc_central"] = baselines.central
        for epsilon in () if args.skip_utility else EPSILONS:
            aucs = [federated_auc(state, data, epsilon, args.rounds) for _ in range(args.repeats)]
            label = f"eps{epsilon:g}"
            results[f"auc_federated_dp_{label}"] = float(np.mean(aucs))
            results[f"auc_federated_dp_{label}_sd"] = float(np.std(aucs))
            results[f"auc_gap_{label}"] = baselines.central - float(np.mean(aucs))
        results["auc_alone_dp_eps3"] = baselines.alone_dp
        results.update(rounds=args.rounds, repeats=args.repeats, bench_s=time.perf_counter() - started)
    if "round_s_he" in results:
        timing = Table(title=f"One round, {len(HOSPITALS)} hospitals through Flower (mean of {args.timing_rounds})")
        for column in ("", "with HE", "without HE", "ratio"):
            timing.add_column(column, justify="right")
        timing.add_row(
            "round wall time (s)",
            f"{results['round_s_he']:.2f}",
            f"{results['round_s_plain']:.2f}",
            f"{results['he_round_ratio']:.2f}",
        )
        for name, unit in (("encrypt_ms", "ms"), ("aggregate_ms", "ms"), ("update_bytes", "B"), ("train_s", "s")):
            he, plain = results[f"{name}_he"], results[f"{name}_plain"]
            timing.add_row(f"{name.split('_')[0]} ({unit})", f"{he:,.2f}", f"{plain:,.2f}", f"{he / plain:.1f}")
        console.print(timing)
    if args.skip_utility:
        if args.json:
            print(json.dumps(results))
        return
    utility = Table(title=f"Test AUC after {args.rounds} rounds (mean ± sd of {args.repeats} runs)")
    for column in ("model", "AUC", "gap to central"):
        utility.add_column(column, justify="right")
    utility.add_row("centralised, non-private", f"{results['auc_central']:.4f}", "")
    for epsilon in EPSILONS:
        label = f"eps{epsilon:g}"
        utility.add_row(
            f"federated DP ε={epsilon:g} + HE",
            f"{results[f'auc_federated_dp_{label}']:.4f} ± {results[f'auc_federated_dp_{label}_sd']:.4f}",
            f"{results[f'auc_gap_{label}']:+.4f}",
        )
    console.print(utility)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
