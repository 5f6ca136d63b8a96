"""A hospital's copy of the model registry: a replicated artefact is kept only if the ledger registered exactly its
bytes (waiting, bounded, for a record still queued), refused otherwise with nothing stored; `carefed node models`
lists the copies, each verified again (ok / tampered / not registered, and the models of its runs it lacks)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carefed.cli import app
from fabric_network.identities import init_identities
from fabric_network.ledger import open_ledger
from federation.layout import consortium_registry_dir, node_dir_for
from federation.messages import STATUS_DECLINED, STATUS_OK, ModelReplica
from federation.registry import ModelRegistry
from hospital_node.config import NodeConfig
from hospital_node.replicas import node_registry, receive_replica
from tests.api.model_fixture import RegisteredModel, register_model

HOSPITALS = ["hospital-a", "hospital-b"]


@dataclass
class Consortium:
    state: Path
    model: RegisteredModel  # registered for a run of hospital-a
    artifact: bytes  # its bytes, as the aggregator sends them

    def node(self, hospital: str) -> NodeConfig:
        return NodeConfig.load(node_dir_for(self.state, hospital))

    def replica(self, artifact: bytes | None = None, model_id: str | None = None, wait_s: float = 5.0) -> ModelReplica:
        return ModelReplica(model_id or self.model.model_id, artifact or self.artifact, wait_s)


@pytest.fixture
def consortium(tmp_path: Path) -> Consortium:
    state = tmp_path / "state"
    init_identities(state, HOSPITALS)
    for hospital in HOSPITALS:
        NodeConfig(
            hospital=hospital,
            node_dir=node_dir_for(state, hospital),
            data=tmp_path / "data.csv",
            schema_path=tmp_path / "schema.toml",
            ledger_state_dir=state,
        ).save()
    model = register_model(state, "hospital-a")
    artifact = ModelRegistry(consortium_registry_dir(state)).path_of(model.sha256).read_bytes()
    return Consortium(state, model, artifact)


def _stored(node: NodeConfig) -> list[Path]:
    return sorted(node.registry_dir.glob("*")) if node.registry_dir.exists() else []


def test_a_registered_artefact_is_kept_in_the_hospitals_own_copy(consortium: Consortium) -> None:
    node = consortium.node("hospital-a")
    reply = receive_replica(node, consortium.replica())
    assert reply == {
        "hospital": "hospital-a",
        "model-id": consortium.model.model_id,
        "status": STATUS_OK,
        "model-sha256": consortium.model.sha256,
    }
    copy = node.registry_dir / f"{consortium.model.sha256}.model"
    assert _stored(node) == [copy] and node.registry_dir == node.node_dir / "registry"
    assert copy.read_bytes() == consortium.artifact and copy.stat().st_mode & 0o222 == 0
    loaded = node_registry(node).load(consortium.model.model_id, consortium.model.sha256)
    assert loaded.run_id == consortium.model.run_id


def test_a_tampered_artefact_is_refused_and_nothing_stored(consortium: Consortium) -> None:
    node = consortium.node("hospital-a")
    tampered = bytearray(consortium.artifact)
    tampered[-1] ^= 0x01
    reply = receive_replica(node, consortium.replica(bytes(tampered)))
    assert reply["status"] == STATUS_DECLINED
    assert f"the ledger registered {consortium.model.sha256}" in reply["reason"]
    assert "refused and nothing stored" in reply["reason"]
    assert _stored(node) == []


def test_an_unregistered_model_is_refused_after_a_bounded_wait(consortium: Consortium) -> None:
    node = consortium.node("hospital-a")
    started = time.monotonic()
    reply = receive_replica(node, consortium.replica(model_id="run-unknown/model", wait_s=0.5))
    assert 0.5 <= time.monotonic() - started < 10
    assert reply["status"] == STATUS_DECLINED
    assert "'run-unknown/model' is not registered on the ledger after waiting 0.5 s" in reply["reason"]
    assert _stored(node) == []


def test_the_hospital_waits_for_a_registration_still_on_its_way_to_the_ledger(consortium: Consortium) -> None:
    """The aggregator queues `register_model` in its outbox: the record may reach the ledger after the message."""
    later_id = f"{consortium.model.run_id}/model-late"

    def register_later() -> None:
        time.sleep(1.0)
        with open_ledger(state_dir=consortium.state, org="consortium") as ledger:
            record = dict(ledger.evaluate("LineageContract:read_model", consortium.model.model_id))
            fields = {k: record[k] for k in ("run_id", "round", "sha256", "name", "version", "metrics")}
            ledger.submit("LineageContract:register_model", later_id, json.dumps(fields))

    registering = threading.Thread(target=register_later)
    registering.start()
    try:
        reply = receive_replica(consortium.node("hospital-a"), consortium.replica(model_id=later_id, wait_s=30))
    finally:
        registering.join()
    assert reply["status"] == STATUS_OK, reply


def _models(state: Path, hospital: str) -> tuple[int, dict[str, object]]:
    args = ["node", "models", "--hospital", hospital, "--state-dir", str(state), "--json"]
    result = CliRunner().invoke(app, args)
    return result.exit_code, json.loads(result.output)


def test_node_models_lists_the_copies_and_flags_tampering(consortium: Consortium) -> None:
    node = consortium.node("hospital-a")
    exit_code, listing = _models(consortium.state, "hospital-a")
    assert exit_code == 0 and [(m["status"], m["model_ids"]) for m in listing["models"]] == [
        ("missing", [consortium.model.model_id])
    ]
    assert receive_replica(node, consortium.replica())["status"] == STATUS_OK
    exit_code, listing = _models(consortium.state, "hospital-a")
    assert exit_code == 0 and [m["status"] for m in listing["models"]] == ["ok"]
    assert listing["registry"] == str(node.registry_dir.resolve())

    unregistered = node_registry(node).store(consortium.artifact + b"\x00" * 4)  # a file no ledger record vouches for
    copy = node.registry_dir / f"{consortium.model.sha256}.model"
    copy.chmod(0o644)
    copy.write_bytes(consortium.artifact[:-1] + b"\x01")
    exit_code, listing = _models(consortium.state, "hospital-a")
    statuses = {m["sha256"]: m["status"] for m in listing["models"]}
    assert exit_code == 1
    assert statuses == {consortium.model.sha256: "tampered", unregistered: "not registered"}
    args = ["node", "models", "--hospital", "hospital-a", "--state-dir", str(consortium.state)]
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 1 and "tampered" in table.output and "not registered" in table.output

    # hospital-b took no part in the model's run: it lacks nothing and holds nothing
    assert _models(consortium.state, "hospital-b") == (
        0,
        {"hospital": "hospital-b", "registry": str(consortium.node("hospital-b").registry_dir.resolve()), "models": []},
    )


def test_node_models_names_a_bad_hospital_and_the_fix(consortium: Consortium) -> None:
    state = str(consortium.state)
    bad_name = CliRunner().invoke(app, ["node", "models", "--hospital", "Hospital A", "--state-dir", state])
    assert bad_name.exit_code == 2 and "--hospital" in bad_name.output and "e.g. hospital-a" in bad_name.output
    no_node = CliRunner().invoke(app, ["node", "models", "--hospital", "hospital-z", "--state-dir", state])
    assert no_node.exit_code == 1 and "run `carefed node init` first" in no_node.output


def test_the_replica_crosses_a_flower_record_intact() -> None:
    from flwr.app import ConfigRecord

    replica = ModelReplica("run-x/model", b'{"format":"carefed-model/1"}\n\x00\x01', 2.5)
    assert ModelReplica.from_config(ConfigRecord(replica.to_config())) == replica
