"""The node's heartbeat (hospital_node/heartbeat.py) against the real service: what the nodes page shows."""

from __future__ import annotations

from pydantic import SecretStr

from hospital_node.heartbeat import Heartbeat, HeartbeatSettings
from tests.api.api_testing import PASSWORD, Service


def _node(service: Service) -> int:
    response = service.client.post(
        "/nodes", json={"name": "node-1", "hospital": "hospital-a"}, headers=service.headers("it-a")
    )
    assert response.status_code in (200, 201), response.text
    return int(response.json()["id"])


def _read(service: Service, node_id: int) -> dict[str, object]:
    response = service.client.get(f"/nodes/{node_id}", headers=service.headers("it-a"))
    assert response.status_code == 200
    return dict(response.json())


def test_heartbeats_sign_in_report_and_survive_an_expired_token(sqlite_service: Service) -> None:
    service = sqlite_service
    node_id = _node(service)
    assert _read(service, node_id)["last_heartbeat_at"] is None
    settings = HeartbeatSettings(
        url="http://testserver", node_id=node_id, username="it-a", password=SecretStr(PASSWORD), interval_s=60
    )
    heartbeat = Heartbeat(settings, version="0.1.0", client=service.client)
    assert heartbeat.send("idle")
    seen = _read(service, node_id)
    assert seen["state"] == "idle" and seen["software_version"] == "0.1.0" and seen["last_heartbeat_at"]
    heartbeat._token = "expired-or-forged"  # the service refuses it: the node signs in again, once
    assert heartbeat.send("training")
    assert _read(service, node_id)["state"] == "training"


def test_a_heartbeat_the_service_refuses_is_reported_not_raised(sqlite_service: Service) -> None:
    service = sqlite_service
    node_id = _node(service)
    wrong = HeartbeatSettings(
        url="http://testserver", node_id=node_id, username="it-a", password=SecretStr("not-the-password")
    )
    assert Heartbeat(wrong, version="0.1.0", client=service.client).send("idle") is False
    assert _read(service, node_id)["last_heartbeat_at"] is None
    assert HeartbeatSettings(url="http://x").missing() == [
        "CAREFED_NODE_API_NODE_ID",
        "CAREFED_NODE_API_USERNAME",
        "CAREFED_NODE_API_PASSWORD",
    ]
