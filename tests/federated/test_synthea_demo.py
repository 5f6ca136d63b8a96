"""The Synthea demo's data: three hospitals read their own FHIR Bundles through the consortium's schema.

What `carefed demo --dataset synthea` builds before Flower starts: each hospital's export unpacked from the
repository (data/synthea-r4, as a fresh clone has it), its held-out share, its cohort funnel, the consents, and
the baselines the report compares the federated model with.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from harness.demo import SYNTHEA_TRAINING, _funnel_table, compute_baselines
from harness.synthea_data import build_synthea_data

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]


def test_synthea_hospitals_funnels_consents_and_baselines(tmp_path: Path) -> None:
    data = build_synthea_data(tmp_path, HOSPITALS)
    assert data.funnels is not None and list(data.funnels) == HOSPITALS
    for hospital in data.hospitals:
        funnel = data.funnels[hospital.name]
        assert funnel["patients_read"] == funnel["in_cohort"] + sum(funnel["dropped"].values())
        assert funnel["trained_on"] == len(hospital.mrns) > 25
        assert set(hospital.withdrawing) <= set(hospital.consenting) < set(hospital.mrns)
        assert hospital.train_data.is_dir() and hospital.eval_records > 5
    assert data.spec.feature_names == ("age", "sex_female", "bmi", "systolic_bp", "diastolic_bp")
    assert len(data.train_y) == sum(len(h.mrns) for h in data.hospitals)
    assert 0.0 < data.test_y.mean() < 1.0
    console = Console(record=True, width=120)
    console.print(_funnel_table(data.funnels))
    assert "died before the index date" in console.export_text()
    baselines = compute_baselines(data, 2, SYNTHEA_TRAINING)
    assert 0.5 < baselines.central <= 1.0, "age and BMI carry signal for (pre)diabetes"
    assert set(baselines.alone_dp) == set(HOSPITALS)
