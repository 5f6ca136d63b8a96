"""DP-SGD cost on the demo MLP (30→64→32→1) over the breast-cancer data: epoch time without DP and per Opacus mode.

Each per-sample-gradient mode is also checked for exactness: trained from the same seed with the same noise and
Poisson batches as "hooks" (Opacus' reference implementation), its final weights must agree. The fastest exact mode
is reported as `dp_mode` and should be `privacy.dp.DEFAULT_GRAD_SAMPLE_MODE`.

    python -m bench.dp [--epochs 10] [--rounds 3] [--threads 2] [--json]

The human table comes first; with --json the last line is one JSON object with `plain_epoch_s`, `dp_epoch_s`,
`dp_mode`, `dp_ratio` and per-mode details.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import numpy.typing as npt
import torch
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_breast_cancer
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privacy.budget import PrivacyBudget
from privacy.dp import DEFAULT_GRAD_SAMPLE_MODE, GRAD_SAMPLE_MODES, DPConfig, PrivateTrainer
from privacy.model import demo_mlp, parameters_to_vector

BATCH_SIZE = 64
LEARNING_RATE = 0.05
EXACTNESS_TOLERANCE = 1e-5


def plain_epoch_seconds(features: npt.NDArray[np.float64], labels: npt.NDArray[np.int64], epochs: int) -> list[float]:
    """Non-private training of the same model, loss, optimiser and batch size: the limit DP-SGD is measured against."""
    model = demo_mlp(n_features=features.shape[1], seed=0)
    loader = DataLoader(
        TensorDataset(torch.as_tensor(features, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.float32)),
        batch_size=BATCH_SIZE,
        shuffle=True,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    criterion = nn.BCEWithLogitsLoss()
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        for batch, targets in loader:
            optimizer.zero_grad()
            loss = criterion(model(batch).squeeze(-1), targets)
            loss.backward()
            optimizer.step()
            float(loss.item())
        seconds.append(time.perf_counter() - started)
    return seconds


def dp_run(
    features: npt.NDArray[np.float64], labels: npt.NDArray[np.int64], epochs: int, mode: str
) -> tuple[list[float], npt.NDArray[np.float64]]:
    """Epoch times of one DP run in `mode`, and its final weights (same seed for every mode)."""
    torch.manual_seed(0)
    model = demo_mlp(n_features=features.shape[1], seed=0)
    config = DPConfig(
        target_epsilon=3.0,
        target_delta=1e-5,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        grad_sample_mode=mode,  # type: ignore[arg-type]
    )
    result, _ = PrivateTrainer(model, features, labels, config).train(PrivacyBudget("bench", epsilon_limit=100.0))
    return list(result.epoch_seconds), parameters_to_vector(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (the first is dropped as warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per configuration")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: the tiny MLP gains nothing from more, and 2 threads on a shared 2-core "
        "machine measure spin-wait contention)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # Opacus' per-run notices would bury the table
    torch.set_num_threads(args.threads)
    features, labels = load_breast_cancer(return_X_y=True)
    features = StandardScaler().fit_transform(features)

    # Rounds interleave the configurations so that load from other processes hits them all alike.
    plain_epoch_seconds(features, labels, 2)  # warm-up: allocator, kernels
    plain_seconds: list[float] = []
    mode_seconds: dict[str, list[float]] = {mode: [] for mode in GRAD_SAMPLE_MODES}
    final_weights: dict[str, npt.NDArray[np.float64]] = {}
    for _ in range(args.rounds):
        plain_seconds += plain_epoch_seconds(features, labels, args.epochs)[1:]
        for mode in mode_seconds:
            seconds, final_weights[mode] = dp_run(features, labels, args.epochs, mode)
            mode_seconds[mode] += seconds[1:]
    plain = statistics.median(plain_seconds)
    modes: dict[str, dict[str, float | bool]] = {}
    for mode, seconds in mode_seconds.items():
        deviation = float(np.max(np.abs(final_weights[mode] - final_weights["hooks"])))
        epoch = statistics.median(seconds)
        modes[mode] = {
            "epoch_s": epoch,
            "ratio": epoch / plain,
            "max_weight_deviation_vs_hooks": deviation,
            "exact": deviation <= EXACTNESS_TOLERANCE,
        }
    fastest = min((m for m in modes if modes[m]["exact"]), key=lambda m: modes[m]["epoch_s"])

    table = Table(
        title=f"DP-SGD epoch time, demo MLP, {len(labels)} records, batch {BATCH_SIZE}, {args.threads} threads"
    )
    for column in ("mode", "epoch (ms)", "x non-private", "max |Δw| vs hooks", "exact"):
        table.add_column(column, justify="right")
    table.add_row("non-private", f"{plain * 1e3:.2f}", "1.00", "-", "-")
    for mode, figures in modes.items():
        name = f"{mode} (fastest)" if mode == fastest else mode
        table.add_row(
            name,
            f"{float(figures['epoch_s']) * 1e3:.2f}",
            f"{float(figures['ratio']):.2f}",
            f"{float(figures['max_weight_deviation_vs_hooks']):.1e}",
            "yes" if figures["exact"] else "no",
        )
    console = Console()
    console.print(table)
    console.print(f"default mode in privacy/dp.py: {DEFAULT_GRAD_SAMPLE_MODE}; fastest exact here: {fastest}")
    if args.json:
        print(
            json.dumps(
                {
                    "plain_epoch_s": plain,
                    "dp_epoch_s": modes[fastest]["epoch_s"],
                    "dp_mode": fastest,
                    "dp_ratio": modes[fastest]["ratio"],
                    "default_mode": DEFAULT_GRAD_SAMPLE_MODE,
                    "modes": modes,
                    "epochs": args.epochs,
                    "rounds": args.rounds,
                    "threads": args.threads,
                    "records": len(labels),
                    "batch_size": BATCH_SIZE,
                }
            )
        )


if __name__ == "__main__":
    main()
