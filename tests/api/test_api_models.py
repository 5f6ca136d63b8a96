"""Registered models through the API: the model card from the ledger's lineage, predictions with provenance,
bad features named by field, and the prediction's audit event carrying the model hash but no feature."""

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.core.config import Settings
from fabric_network.ledger import open_ledger
from federation.layout import consortium_registry_dir, node_dir_for, node_registry_dir
from federation.messages import ModelReplica
from federation.registry import ModelRegistry
from hospital_node.replicas import accept_replica
from tests.api.api_testing import Service, start_service
from tests.api.model_fixture import register_model


def test_model_card_is_built_from_the_ledger_lineage(service: Service) -> None:
    model = register_model(service.settings.state_dir)
    listed = service.client.get("/models", headers=service.headers("clinician-a"))
    assert listed.status_code == 200, listed.text
    assert [card["model_id"] for card in listed.json()["items"]] == [model.model_id]
    card = service.client.get(f"/models/{model.model_id}", headers=service.headers("compliance")).json()
    assert card["sha256"] == model.sha256
    assert card["run_id"] == model.run_id and card["round"] == 1 and card["purpose"] == "HRESCH"
    assert card["data_sites"] == ["HospitalAMSP"]
    assert card["consent_snapshots"][0]["root"] == model.snapshot_root
    assert card["privacy"]["epsilon"] == 3.0 and card["privacy"]["delta"] == 1e-5
    assert card["privacy"]["epsilon_spent"] == {"HospitalAMSP": 1.25}
    (credit,) = card["credit"]
    assert (credit["hospital"], credit["rounds"], credit["epsilon"], credit["data_share"]) == (
        "HospitalAMSP",
        1,
        1.25,
        1.0,
    )
    assert credit["gain_share"] == pytest.approx(0.95 - 0.5), "round 1's AUC over chance, all of it hers"
    assert card["homomorphic_encryption"]["scheme"] == "ckks"
    assert card["metrics"] == {"auc": 0.95}
    assert [f["name"] for f in card["features"]] == list(model.feature_names)
    assert [f["unit"] for f in card["features"]] == ["px", "grey level", "px", "px²", None]
    assert all(f["min"] < f["max"] for f in card["features"])


def test_predict_scores_with_version_hash_and_privacy_guarantee(service: Service) -> None:
    model = register_model(service.settings.state_dir)
    headers = service.headers("clinician-a")
    benign = service.client.post(
        f"/models/{model.model_id}/predict", headers=headers, json={"features": model.benign_example}
    )
    malignant = service.client.post(
        f"/models/{model.model_id}/predict", headers=headers, json={"features": model.malignant_example}
    )
    assert benign.status_code == 200, benign.text
    assert benign.json()["risk_score"] < 0.2 < 0.8 < malignant.json()["risk_score"]
    answer = benign.json()
    assert answer["model_sha256"] == model.sha256 and answer["model_version"] == "r1"
    assert answer["privacy"]["epsilon"] == 3.0 and answer["data_sites"] == ["HospitalAMSP"]

    service.flush_audit()
    with open_ledger(state_dir=service.settings.state_dir, org="consortium") as ledger:
        events = ledger.evaluate("AuditContract:query_audit", {"action": "api.predict"})
    assert len(events) == 2
    assert {e["object"] for e in events} == {f"model:{model.model_id}/sha256:{model.sha256}"}
    assert {e["purpose"] for e in events} == {"TREAT"}
    assert {e["actor"] for e in events} == {f"user-{service.users['clinician-a'].id}"}
    assert events[0]["organisation"] == "HospitalAMSP"
    stored = json.dumps(events)
    for value in (*model.benign_example.values(), *model.malignant_example.values()):
        assert repr(value) not in stored and str(value) not in stored


def test_bad_features_and_unknown_model_are_named(service: Service) -> None:
    model = register_model(service.settings.state_dir)
    headers = service.headers("clinician-a")
    url = f"/models/{model.model_id}/predict"
    names = list(model.feature_names)
    missing = {k: v for k, v in model.benign_example.items() if k != names[0]}
    out_of_range = {**model.benign_example, names[1]: 1e6}
    unknown = {**model.benign_example, "shoe_size": 42.0}
    cases = {
        f"features.{names[0]}": missing,
        f"features.{names[1]}": out_of_range,
        "features.shoe_size": unknown,
    }
    for field, features in cases.items():
        response = service.client.post(url, headers=headers, json={"features": features})
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == [field]
        assert response.headers["content-type"] == "application/problem+json"
    not_a_number = service.client.post(
        url, headers=headers, json={"features": {**model.benign_example, names[2]: "big"}}
    )
    assert not_a_number.status_code == 422
    assert not_a_number.json()["errors"][0]["field"] == f"features.{names[2]}"
    no_model = service.client.post(
        "/models/model-nope/predict", headers=headers, json={"features": model.benign_example}
    )
    assert no_model.status_code == 404 and no_model.json()["errors"][0]["field"] == "model_id"


def test_tampered_artefact_is_refused(service: Service) -> None:
    model = register_model(service.settings.state_dir)
    path = service.settings.state_dir / "registry" / f"{model.sha256}.model"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    assert hashlib.sha256(data).hexdigest() != model.sha256
    response = service.client.post(
        f"/models/{model.model_id}/predict",
        headers=service.headers("clinician-a"),
        json={"features": model.benign_example},
    )
    assert response.status_code == 409
    assert "refused" in response.json()["detail"]


def test_a_hospital_service_predicts_from_the_hospitals_own_copy(tmp_path: Path) -> None:
    """CAREFED_API_HOSPITAL: the service loads models from the hospital's registry copy, never the consortium's."""
    running = start_service(f"sqlite:///{tmp_path / 'api.sqlite'}", tmp_path / "state", hospital="hospital-a")
    state = running.settings.state_dir
    with running.client:
        model = register_model(state)
        url, headers = f"/models/{model.model_id}/predict", running.headers("clinician-a")
        no_copy = running.client.post(url, headers=headers, json={"features": model.benign_example})
        assert no_copy.status_code == 409, no_copy.text
        assert "hospital-a holds no copy of this model" in no_copy.json()["detail"]
        assert no_copy.json()["errors"][0]["field"] == "model_id"

        consortium_copy = ModelRegistry(consortium_registry_dir(state)).path_of(model.sha256)
        replica = ModelReplica(model.model_id, consortium_copy.read_bytes(), ledger_wait_s=5.0)
        hospital_copy = ModelRegistry(node_registry_dir(node_dir_for(state, "hospital-a")))
        with open_ledger(state_dir=state, org="hospital-a") as ledger:
            assert accept_replica(ledger, hospital_copy, replica) == model.sha256
        consortium_copy.unlink()  # what the hospital's service serves is its own copy
        answer = running.client.post(url, headers=headers, json={"features": model.benign_example})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_sha256"] == model.sha256 and answer.json()["risk_score"] < 0.2


def test_a_service_for_an_invalid_hospital_name_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"CAREFED_API_HOSPITAL: 'Hospital A' is not a hospital's org name"):
        Settings(state_dir=tmp_path, hospital="Hospital A")
    assert Settings(state_dir=tmp_path, hospital="").hospital is None
