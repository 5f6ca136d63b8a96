"""The demo's hospitals: scikit-learn's Wisconsin breast-cancer data split with a realistic skew.

Hospitals differ in size and case mix (the first is large and mostly benign, the last small and mostly
malignant), patients get synthetic MRNs, a few never consented and a few withdraw after the first round. A
stratified 20% is held out as the consortium's test set; each hospital also keeps a share of it (with its own
case mix) as local evaluation data. The schema declares each feature's plausible range, from which the model
scales its inputs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from federation.model_artifact import FeatureRange, ModelSpec

MRN_COLUMN = "mrn"
LABEL_COLUMN = "malignant"


@dataclass(frozen=True)
class DemoHospital:
    name: str
    train_data: Path  # what the node trains on: a CSV, or a directory of FHIR Bundles (Synthea)
    eval_data: Path  # its held-out data, in the same form
    eval_records: int
    mrns: tuple[str, ...]
    consenting: tuple[str, ...]
    withdrawing: tuple[str, ...]  # consent withdrawn after round 1
    positive_share: float


@dataclass(frozen=True)
class DemoData:
    schema: Path
    spec: ModelSpec
    hospitals: tuple[DemoHospital, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    parts: tuple[np.ndarray, ...]  # indices into train_x per hospital
    title: str = "Hospitals (skewed split of the Wisconsin breast-cancer data)"
    label: str = "malignant"
    funnels: dict[str, dict[str, Any]] | None = None  # FHIR input: each hospital's cohort funnel (node check)


def consent_split(
    mrns: list[str], rng: np.random.Generator, no_consent_share: float = 0.05, withdraw_share: float = 0.04
) -> tuple[list[str], list[str]]:
    """(consenting, withdrawing after round 1): a few patients never consented, a few withdraw (at least one each)."""
    order = rng.permutation(len(mrns))
    no_consent = max(1, round(no_consent_share * len(mrns)))
    withdraw = max(1, round(withdraw_share * len(mrns)))
    consenting = [mrns[i] for i in order[no_consent:]]
    withdrawing = [mrns[i] for i in order[no_consent : no_consent + withdraw]]
    return consenting, withdrawing


def _shares(count: int, rising: bool) -> np.ndarray:
    weights = np.arange(1, count + 1, dtype=float)
    weights = weights if rising else weights[::-1]
    shares: np.ndarray = weights / weights.sum()
    return shares


def _split(indices: np.ndarray, shares: np.ndarray) -> list[np.ndarray]:
    bounds = np.round(np.cumsum(shares) * len(indices)).astype(int)
    return np.split(indices, bounds[:-1])


def _skewed_parts(labels: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Malignant cases concentrate in later hospitals, benign ones in earlier (larger) hospitals."""
    malignant = rng.permutation(np.flatnonzero(labels == 1))
    benign = rng.permutation(np.flatnonzero(labels == 0))
    pieces = zip(_split(malignant, _shares(count, True)), _split(benign, _shares(count, False)), strict=True)
    return [np.sort(np.concatenate(pair)) for pair in pieces]


def _write_csv(path: Path, names: list[str], mrns: list[str], x: np.ndarray, y: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([MRN_COLUMN, LABEL_COLUMN, *names])
        for mrn, row, label in zip(mrns, x, y, strict=True):
            writer.writerow([mrn, int(label), *(f"{v:.6g}" for v in row)])


def build_demo_data(
    out_dir: Path,
    hospitals: list[str],
    seed: int = 0,
    no_consent_share: float = 0.05,
    withdraw_share: float = 0.04,
    hidden: tuple[int, ...] = (),
) -> DemoData:
    """Write the hospitals' CSVs and the shared schema under `out_dir`; return what the demo needs to know.

    `hidden`: the model's hidden layer sizes (() = logistic regression), carried by the spec the run proposes.
    """
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    bunch = load_breast_cancer()
    names = [n.replace(" ", "_") for n in bunch.feature_names]
    x = np.asarray(bunch.data, dtype=np.float64)
    y = (bunch.target == 0).astype(np.float64)  # sklearn: 0 = malignant; CareFed: 1 = malignant
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    # Declared plausible ranges: a margin around what this population shows (the consortium's published schema).
    lows = np.floor(x.min(axis=0) * 0.8 * 1000) / 1000
    highs = np.ceil(x.max(axis=0) * 1.25 * 1000) / 1000
    spec = ModelSpec(
        tuple(FeatureRange(n, float(lo), float(hi)) for n, lo, hi in zip(names, lows, highs, strict=True)), hidden
    )
    schema = {
        "mrn_column": MRN_COLUMN,
        "label_column": LABEL_COLUMN,
        "features": [{"name": f.name, "type": "float", "min": f.min, "max": f.max} for f in spec.features],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    schema_path = out_dir / "schema.toml"
    schema_path.write_text(tomli_w.dumps(schema), encoding="utf-8")
    rng = np.random.default_rng(seed)
    train_parts = _skewed_parts(train_y, len(hospitals), rng)
    test_parts = _skewed_parts(test_y, len(hospitals), rng)
    result = []
    for number, (name, part, test_part) in enumerate(zip(hospitals, train_parts, test_parts, strict=True)):
        prefix = chr(ord("A") + number % 26)
        serials = rng.choice(900_000, size=len(part) + len(test_part), replace=False) + 100_000
        mrns = [f"{prefix}{s}" for s in serials[: len(part)]]
        eval_mrns = [f"{prefix}{s}" for s in serials[len(part) :]]
        consenting, withdrawing = consent_split(mrns, rng, no_consent_share, withdraw_share)
        train_csv = out_dir / name / "patients.csv"
        eval_csv = out_dir / name / "holdout.csv"
        _write_csv(train_csv, names, mrns, train_x[part], train_y[part])
        _write_csv(eval_csv, names, eval_mrns, test_x[test_part], test_y[test_part])
        result.append(
            DemoHospital(
                name=name,
                train_data=train_csv,
                eval_data=eval_csv,
                eval_records=len(test_part),
                mrns=tuple(mrns),
                consenting=tuple(consenting),
                withdrawing=tuple(withdrawing),
                positive_share=float(train_y[part].mean()),
            )
        )
    return DemoData(schema_path, spec, tuple(result), train_x, train_y, test_x, test_y, tuple(train_parts))
