"""The Synthea demo's hospitals: the published FHIR R4 patients in data/synthea-r4, one archive per hospital.

Each hospital's archive is unpacked as it was published (one transaction Bundle per patient); a quarter of its
patients (by a hash of the file name, so every run splits alike) is moved aside as the hospital's held-out
data. Every hospital reads its own directory of Bundles through the consortium's schema
(data/synthea-r4/diabetes.toml: age, sex, BMI and blood pressure → prevalent (pre)diabetes at 2018-01-01), as a
real node would; the cohort funnel each one reports is what the demo prints. As in the breast-cancer demo a few
patients never consented and a few withdraw after round 1.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from federation.model_artifact import FeatureRange, ModelSpec
from harness.demo_data import DemoData, DemoHospital, consent_split
from hospital_node.data import DataSchema, load_records

SYNTHEA_DIR = Path(__file__).resolve().parents[1] / "data" / "synthea-r4"
SCHEMA = SYNTHEA_DIR / "diabetes.toml"
HOLDOUT_SHARE = 0.25


def _held_out(name: str, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HOLDOUT_SHARE


def _unpack(archive: Path, train_dir: Path, eval_dir: Path, seed: int) -> None:
    staging = train_dir.parent / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    for directory in (train_dir, eval_dir):
        directory.mkdir(parents=True, exist_ok=True)
    for bundle in sorted(staging.rglob("*.json")):
        shutil.move(bundle, (eval_dir if _held_out(bundle.name, seed) else train_dir) / bundle.name)
    shutil.rmtree(staging)


def spec_for(schema: DataSchema, hidden: tuple[int, ...] = ()) -> ModelSpec:
    """The consortium's model: the schema's columns scaled by their declared ranges; logistic regression, or an
    MLP with `hidden` layers."""
    units = [rule.unit for rule in schema.features for _ in rule.columns]
    ranges = schema.column_ranges()
    return ModelSpec(
        tuple(
            FeatureRange(name, low, high, unit)
            for name, (low, high), unit in zip(schema.feature_names, ranges, units, strict=True)
        ),
        hidden,
    )


def build_synthea_data(out_dir: Path, hospitals: list[str], seed: int = 0, hidden: tuple[int, ...] = ()) -> DemoData:
    """Unpack each hospital's patients under `out_dir`, read them through the schema; what the demo needs
    (`hidden`: the model's hidden layer sizes, () = logistic regression)."""
    archives = sorted(SYNTHEA_DIR.glob("hospital-*.tar.xz"))
    if len(hospitals) > len(archives):
        raise ValueError(
            f"--hospitals: the Synthea data has {len(archives)} hospitals ({', '.join(a.name for a in archives)}); "
            f"asked for {len(hospitals)}"
        )
    schema = DataSchema.from_toml(SCHEMA)
    rng = np.random.default_rng(seed)
    result: list[DemoHospital] = []
    train_x: list[np.ndarray] = []
    train_y: list[np.ndarray] = []
    test_x: list[np.ndarray] = []
    test_y: list[np.ndarray] = []
    funnels: dict[str, dict[str, Any]] = {}
    for name, archive in zip(hospitals, archives, strict=False):
        train_dir, eval_dir = out_dir / name / "bundles", out_dir / name / "holdout"
        _unpack(archive, train_dir, eval_dir, seed)
        report = load_records(train_dir, schema)
        records = report.usable_records()
        held_out = load_records(eval_dir, schema).usable_records()
        assert report.ehr is not None
        funnels[name] = report.ehr.to_json()["funnel"] | {"positive": report.ehr.positives}
        consenting, withdrawing = consent_split(list(records.mrns), rng)
        result.append(
            DemoHospital(
                name=name,
                train_data=train_dir,
                eval_data=eval_dir,
                eval_records=len(held_out),
                mrns=records.mrns,
                consenting=tuple(consenting),
                withdrawing=tuple(withdrawing),
                positive_share=float(records.labels.mean()),
            )
        )
        train_x.append(records.features.astype(np.float64))
        train_y.append(records.labels.astype(np.float64))
        test_x.append(held_out.features.astype(np.float64))
        test_y.append(held_out.labels.astype(np.float64))
    bounds = np.cumsum([0, *(len(y) for y in train_y)])
    return DemoData(
        schema=SCHEMA,
        spec=spec_for(schema, hidden),
        hospitals=tuple(result),
        train_x=np.concatenate(train_x),
        train_y=np.concatenate(train_y),
        test_x=np.concatenate(test_x),
        test_y=np.concatenate(test_y),
        parts=tuple(np.arange(lo, hi) for lo, hi in itertools.pairwise(bounds)),
        title="Hospitals (Synthea FHIR R4 patients; cohort funnel of each hospital's own export)",
        label="(pre)diabetes",
        funnels=funnels,
    )
