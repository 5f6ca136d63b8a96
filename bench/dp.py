"""DP-SGD cost per Opacus mode against non-private training, on two models.

- **demo**: the demo MLP (30→64→32→1, 4,097 parameters) over the breast-cancer data (569 records), batch 64.
- **mlp**: an MLP worth measuring (30→256→256→128→1, 106,753 parameters) at batch 256 over 8,192 synthetic
  records of 30 features (sklearn `make_classification`, fixed seed): per-sample gradients of 100k parameters
  cost what a small model hides.

The modes are `privacy.dp.GRAD_SAMPLE_MODES`: Opacus' four and CareFed's book-keeping ghost clipping ("ghost-bk",
`privacy/bookkeeping.py`), each wrapped by `privacy.dp.make_private` as training does. Each is also checked for
exactness: on one fixed batch without noise, the clipped and averaged gradient it hands the optimiser must equal
that of "hooks" (Opacus' reference implementation) to float32 precision (relative 1e-5). (Comparing final weights
after training does not work for the larger model: Adam divides by the gradient's running magnitude, so rounding
differences of near-zero gradients grow to 1e-2 over 100 steps.)
The fastest exact mode per model is reported (`dp_mode`, `mlp_dp_mode`); for the demo model it should be
`privacy.dp.DEFAULT_GRAD_SAMPLE_MODE`.

Both wall time and this process's CPU time are measured per epoch. On a machine shared with other work, wall time
grows with the load (reported as `load_average`) while CPU time of a single-threaded run barely does, so the
`*_cpu_ratio` figures are the ones to compare across loads.

    python -m bench.dp [--epochs 6] [--rounds 3] [--threads 1] [--only demo|mlp] [--json]

The human tables come first; with --json the last line is one JSON object: `plain_epoch_s`, `dp_epoch_s`,
`dp_mode`, `dp_ratio`, `dp_cpu_ratio` (demo model), the same with an `mlp_` prefix plus `mlp_params`, and
per-mode details under `modes` / `mlp_modes`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from opacus import PrivacyEngine
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bench.script_mode  # noqa: F401  (first: `python bench/X.py` must find the packages, not bench/X.py)

# isort: split
from privacy.budget import PrivacyBudget
from privacy.dp import (
    DEFAULT_GRAD_SAMPLE_MODE,
    GRAD_SAMPLE_MODES,
    DPConfig,
    GradSampleMode,
    PrivateTrainer,
    make_private,
)
from privacy.model import demo_mlp

LEARNING_RATE = 0.05
EXACTNESS_TOLERANCE = 1e-5  # relative to the largest gradient entry


@dataclass(frozen=True)
class Workload:
    """A model (built from a seed) with its data and batch size."""

    name: str
    build: Callable[[], nn.Module]
    features: npt.NDArray[np.float64]
    labels: npt.NDArray[np.int64]
    batch_size: int

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.build().parameters())


def workloads() -> dict[str, Workload]:
    cancer, cancer_labels = load_breast_cancer(return_X_y=True)
    synthetic, synthetic_labels = make_classification(n_samples=8192, n_features=30, n_informative=12, random_state=0)
    return {
        "demo": Workload(
            "demo MLP 30→64→32→1",
            lambda: demo_mlp(n_features=30, seed=0),
            StandardScaler().fit_transform(cancer),
            cancer_labels,
            64,
        ),
        "mlp": Workload(
            "MLP 30→256→256→128→1",
            lambda: demo_mlp(n_features=30, hidden=(256, 256, 128), seed=0),
            StandardScaler().fit_transform(synthetic),
            synthetic_labels,
            256,
        ),
    }


def plain_epochs(workload: Workload, epochs: int) -> list[tuple[float, float]]:
    """Non-private training of the same model, loss, optimiser and batch size: (wall, CPU) seconds per epoch."""
    model = workload.build()
    loader = DataLoader(
        TensorDataset(
            torch.as_tensor(workload.features, dtype=torch.float32),
            torch.as_tensor(workload.labels, dtype=torch.float32),
        ),
        batch_size=workload.batch_size,
        shuffle=True,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    criterion = nn.BCEWithLogitsLoss()
    seconds = []
    for _ in range(epochs):
        started, started_cpu = time.perf_counter(), time.process_time()
        for batch, targets in loader:
            optimizer.zero_grad()
            loss = criterion(model(batch).squeeze(-1), targets)
            loss.backward()
            optimizer.step()
            float(loss.item())
        seconds.append((time.perf_counter() - started, time.process_time() - started_cpu))
    return seconds


def dp_epochs(workload: Workload, epochs: int, mode: GradSampleMode) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per epoch of one DP run in `mode` (same seed for every mode)."""
    torch.manual_seed(0)
    model = workload.build()
    config = DPConfig(
        target_epsilon=3.0,
        target_delta=1e-5,
        epochs=epochs,
        batch_size=workload.batch_size,
        learning_rate=LEARNING_RATE,
        grad_sample_mode=mode,
    )
    trainer = PrivateTrainer(model, workload.features, workload.labels, config)
    result, _ = trainer.train(PrivacyBudget("bench", epsilon_limit=100.0))
    return list(zip(result.epoch_seconds, result.epoch_cpu_seconds, strict=True))


def clipped_gradient(workload: Workload, mode: GradSampleMode) -> npt.NDArray[np.float64]:
    """The clipped mean gradient of one fixed batch, without noise, as `mode` computes it (weights unchanged)."""
    model = workload.build()
    features = torch.as_tensor(workload.features[: workload.batch_size], dtype=torch.float32)
    labels = torch.as_tensor(workload.labels[: workload.batch_size], dtype=torch.float32)
    private = make_private(
        PrivacyEngine(),
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        nn.BCEWithLogitsLoss(),
        DataLoader(TensorDataset(features, labels), batch_size=workload.batch_size),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        grad_sample_mode=mode,
        poisson_sampling=False,
    )
    private.optimizer.zero_grad()
    private.criterion(private.module(features).squeeze(-1), labels).backward()
    private.optimizer.step()  # clips, averages and "adds" zero noise into .grad; lr 0 leaves the weights as they were
    gradient = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    private.cleanup()
    return gradient.detach().numpy().astype(np.float64)


def measure(workload: Workload, epochs: int, rounds: int) -> dict[str, Any]:
    """Interleaved rounds (so that load from other processes hits every configuration alike); first epoch dropped."""
    plain_epochs(workload, 2)  # warm-up: allocator, kernels
    plain: list[tuple[float, float]] = []
    per_mode: dict[GradSampleMode, list[tuple[float, float]]] = {mode: [] for mode in GRAD_SAMPLE_MODES}
    for _ in range(rounds):
        plain += plain_epochs(workload, epochs)[1:]
        for mode in per_mode:
            per_mode[mode] += dp_epochs(workload, epochs, mode)[1:]
    gradients = {mode: clipped_gradient(workload, mode) for mode in per_mode}
    scale = float(np.max(np.abs(gradients["hooks"])))
    plain_wall = statistics.median(wall for wall, _ in plain)
    plain_cpu = statistics.median(cpu for _, cpu in plain)
    modes: dict[str, dict[str, float | bool]] = {}
    for mode, seconds in per_mode.items():
        deviation = float(np.max(np.abs(gradients[mode] - gradients["hooks"]))) / scale
        wall = statistics.median(w for w, _ in seconds)
        cpu = statistics.median(c for _, c in seconds)
        modes[mode] = {
            "epoch_s": wall,
            "epoch_cpu_s": cpu,
            "ratio": wall / plain_wall,
            "cpu_ratio": cpu / plain_cpu,
            "gradient_deviation_vs_hooks": deviation,
            "exact": deviation <= EXACTNESS_TOLERANCE,
        }
    fastest = min((m for m in modes if modes[m]["exact"]), key=lambda m: modes[m]["epoch_cpu_s"])
    return {
        "plain_epoch_s": plain_wall,
        "plain_epoch_cpu_s": plain_cpu,
        "dp_epoch_s": modes[fastest]["epoch_s"],
        "dp_epoch_cpu_s": modes[fastest]["epoch_cpu_s"],
        "dp_mode": fastest,
        "dp_ratio": modes[fastest]["ratio"],
        "dp_cpu_ratio": modes[fastest]["cpu_ratio"],
        "modes": modes,
        "params": workload.parameters,
        "records": len(workload.labels),
        "batch_size": workload.batch_size,
    }


def print_table(console: Console, workload: Workload, figures: dict[str, Any], threads: int) -> None:
    table = Table(
        title=f"DP-SGD epoch, {workload.name} ({figures['params']:,} parameters), {figures['records']} records, "
        f"batch {figures['batch_size']}, {threads} thread(s)"
    )
    for column in ("mode", "epoch (ms)", "CPU (ms)", "x non-private", "x CPU", "|Δgrad| vs hooks", "exact"):
        table.add_column(column, justify="right")
    table.add_row(
        "non-private", f"{figures['plain_epoch_s'] * 1e3:.1f}", f"{figures['plain_epoch_cpu_s'] * 1e3:.1f}", "1.00"
    )
    for mode, row in figures["modes"].items():
        table.add_row(
            f"{mode} (fastest)" if mode == figures["dp_mode"] else mode,
            f"{row['epoch_s'] * 1e3:.1f}",
            f"{row['epoch_cpu_s'] * 1e3:.1f}",
            f"{row['ratio']:.2f}",
            f"{row['cpu_ratio']:.2f}",
            f"{row['gradient_deviation_vs_hooks']:.1e}",
            "yes" if row["exact"] else "no",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (the first is dropped as warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per configuration")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: the demo MLP gains nothing from more, and 2 threads on a shared 2-core "
        "machine measure spin-wait contention)",
    )
    parser.add_argument("--only", choices=["demo", "mlp"], help="measure one model only")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # Opacus' per-run notices would bury the table
    torch.set_num_threads(args.threads)
    console = Console()
    load_before = os.getloadavg()
    results: dict[str, Any] = {
        "epochs": args.epochs,
        "rounds": args.rounds,
        "threads": args.threads,
        "default_mode": DEFAULT_GRAD_SAMPLE_MODE,
    }
    for key, workload in workloads().items():
        if args.only not in (None, key):
            continue
        figures = measure(workload, args.epochs, args.rounds)
        print_table(console, workload, figures, args.threads)
        prefix = "" if key == "demo" else "mlp_"
        results.update({f"{prefix}{name}": value for name, value in figures.items()})
    results["load_average"] = [round(max(a, b), 2) for a, b in zip(load_before, os.getloadavg(), strict=True)]
    console.print(
        f"default mode in privacy/dp.py: {DEFAULT_GRAD_SAMPLE_MODE}; load average (1, 5, 15 min, the higher of "
        f"start and end): {results['load_average']} on {os.cpu_count()} CPUs"
    )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
