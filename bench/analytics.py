"""Utility and latency of federated queries: the noise's relative error per ε, and a query's wall time via Flower.

Error: for ε per query 0.1 / 0.5 / 1, `--trials` seeded runs of count, mean and histogram over real cohorts —
the three Synthea hospitals (every living patient: 227; adults with a BMI reading: 173) and the breast-cancer
data split across three hospitals as the demo splits it (455 training patients) — through the hospitals' own
code (`hospital_node.analytics`: cohort rules, clipping, strata, noise for the query's ε) and the real HE path
(each hospital encrypts, `privacy.he.aggregate` adds with the public context, a hospital decrypts). Relative
error against the exact pooled statistic: count |ñ − n|/n, mean |m̃ − m|/|m|, histogram Σ|h̃ᵢ − hᵢ| / n.

Latency (unless `--no-latency`): one consortium on this machine (SuperLink, three SuperNodes and workers, the
embedded ledger), started once; then `--queries` count queries through Flower, each registered on the ledger,
three message exchanges, charged, recorded.

    python -m bench.analytics [--trials 100] [--queries 3] [--no-latency] [--json]

With --json the last line is one JSON object: `rel_error_mean_eps1` (the mean query's relative error at ε = 1,
averaged over the cohorts of ≥ 200 patients), `rel_error` (every cohort × query × ε), `query_latency_s_p50`,
`consortium_start_s`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import bench.script_mode  # noqa: F401  (first: `python bench/X.py` must find the packages, not bench/X.py)

# isort: split
from federation.analytics import QuerySpec, phase_noise
from federation.key_transport import ceremony_parameters
from harness.analytics_data import ADULTS_COHORT, ALIVE_COHORT, set_up_synthea_queries, unpack_synthea
from harness.demo_data import build_demo_data
from harness.local_consortium import LocalConsortium
from hospital_node.analytics import build_query, local_counts, local_statistic
from hospital_node.data import DataSchema, PatientRecords, load_records
from privacy.he import aggregate, decrypt, encrypt, generate_secret_context
from privacy.queries import add_noise, from_limbs, to_limbs

EPSILONS = (0.1, 0.5, 1.0)
LARGE_COHORT = 200


@dataclass(frozen=True)
class Cohort:
    name: str
    cohort_file: Path
    column: str
    hospitals: list[PatientRecords]

    @property
    def size(self) -> int:
        return sum(len(h) for h in self.hospitals)


def _cohorts(workdir: Path) -> list[Cohort]:
    synthea = unpack_synthea(workdir / "synthea")
    demo = build_demo_data(workdir / "breast-cancer", ["hospital-a", "hospital-b", "hospital-c"])

    def read(cohort: Path, directories: list[Path]) -> list[PatientRecords]:
        schema = DataSchema.from_toml(cohort)
        return [load_records(d, schema).usable_records(drop_bad_rows=True) for d in directories]

    return [
        Cohort("synthea alive (age)", ALIVE_COHORT, "age", read(ALIVE_COHORT, list(synthea.values()))),
        Cohort("synthea adults (bmi)", ADULTS_COHORT, "bmi", read(ADULTS_COHORT, list(synthea.values()))),
        Cohort(
            "breast cancer (mean_radius)",
            demo.schema,
            "mean_radius",
            read(demo.schema, [h.train_data for h in demo.hospitals]),
        ),
    ]


def _released(spec: QuerySpec, vectors: list[np.ndarray], sigma: float, secret: Any, seed: int) -> np.ndarray:
    """The consortium total as the hospitals would decrypt it: each noises and encrypts, ciphertexts are added."""
    sent = [
        encrypt(secret, to_limbs(add_noise(v, sigma, np.random.default_rng([seed, i])))) for i, v in enumerate(vectors)
    ]
    return from_limbs(decrypt(secret, aggregate(secret.public(), sent)))


def _errors(cohort: Cohort, epsilon: float, trials: int, secret: Any) -> dict[str, float]:
    """Mean relative error of count, mean and histogram over seeded trials."""
    specs = {
        kind: build_query(kind, cohort.cohort_file, column=cohort.column, purpose="HRESCH", epsilon=epsilon)
        for kind in ("count", "mean", "histogram")
    }
    exact_n = float(cohort.size)
    column = list(cohort.hospitals[0].feature_names).index(cohort.column)
    spec = specs["mean"]
    pooled = np.clip(np.concatenate([h.features[:, column] for h in cohort.hospitals]), spec.low, spec.high)
    exact_mean = float(pooled.mean())
    exact_hist = sum(local_statistic(specs["histogram"], h) for h in cohort.hospitals)
    errors: dict[str, list[float]] = {"count": [], "mean": [], "histogram": []}
    for trial in range(trials):
        count_sigma = phase_noise(specs["count"])[0].sigma
        n = _released(specs["count"], [local_counts(specs["count"], h) for h in cohort.hospitals], count_sigma,
                      secret, trial)[0]  # fmt: skip
        errors["count"].append(abs(n - exact_n) / exact_n)
        noise_n, noise_s = phase_noise(spec)
        n_mean = _released(spec, [local_counts(spec, h) for h in cohort.hospitals], noise_n.sigma, secret, trial)[0]
        s = _released(spec, [local_statistic(spec, h) for h in cohort.hospitals], noise_s.sigma, secret, trial + 10**6)
        mean = spec.centre + spec.half_range * s[0] / n_mean
        errors["mean"].append(abs(mean - exact_mean) / abs(exact_mean))
        histogram_spec = specs["histogram"]
        hist = _released(histogram_spec, [local_statistic(histogram_spec, h) for h in cohort.hospitals],
                         phase_noise(histogram_spec)[1].sigma, secret, trial + 2 * 10**6)  # fmt: skip
        errors["histogram"].append(float(np.abs(hist - exact_hist).sum()) / exact_n)
    return {kind: statistics.fmean(values) for kind, values in errors.items()}


def _latency(workdir: Path, queries: int) -> dict[str, Any]:
    state = workdir / "latency-state"
    set_up_synthea_queries(state, workdir / "synthea", epsilon_limit=100.0)
    started = time.perf_counter()
    with LocalConsortium(state, ["hospital-a", "hospital-b", "hospital-c"]) as consortium:
        consortium.start()
        start_s = time.perf_counter() - started
        times = []
        for _ in range(queries):
            spec = build_query("count", ALIVE_COHORT, purpose="HRESCH", epsilon=1.0)
            began = time.perf_counter()
            results = consortium.query(spec)
            times.append(time.perf_counter() - began)
            if results["status"] != "answered":
                raise RuntimeError(f"latency query ended {results['status']}: {results['events']}")
    return {"consortium_start_s": start_s, "query_latency_s": times, "query_latency_s_p50": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    console = Console(stderr=args.json)
    secret = generate_secret_context(ceremony_parameters(3))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cohorts = _cohorts(workdir)
        for cohort in cohorts:
            for epsilon in EPSILONS:
                errors = _errors(cohort, epsilon, args.trials, secret)
                rows.append({"cohort": cohort.name, "patients": cohort.size, "epsilon": epsilon, **errors})
        latency = {} if args.no_latency else _latency(workdir, args.queries)
    table = Table(title=f"relative error vs the exact pooled statistic (mean of {args.trials} seeded runs)")
    for column in ("cohort", "patients", "ε", "count", "mean", "histogram"):
        table.add_column(column, justify="left" if column == "cohort" else "right")
    for row in rows:
        table.add_row(row["cohort"], str(row["patients"]), f"{row['epsilon']:g}",
                      *(f"{row[k]:.3f}" for k in ("count", "mean", "histogram")))  # fmt: skip
    console.print(table)
    large = [r["mean"] for r in rows if r["epsilon"] == 1.0 and r["patients"] >= LARGE_COHORT]
    summary = {
        "rel_error_mean_eps1": statistics.fmean(large),
        "rel_error_mean_eps1_worst": max(large),
        "rel_error": rows,
        "trials": args.trials,
        **latency,
    }
    console.print(
        f"mean query at ε=1, cohorts ≥ {LARGE_COHORT}: relative error {summary['rel_error_mean_eps1']:.4f} "
        f"(worst cohort {summary['rel_error_mean_eps1_worst']:.4f})"
    )
    if latency:
        console.print(
            f"consortium start {latency['consortium_start_s']:.1f} s; query latency p50 "
            f"{latency['query_latency_s_p50']:.1f} s over {args.queries} count queries"
        )
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
