"""The compliance officer's audit query: every request is on the ledger, filterable and paginated."""

from tests.api.api_testing import Service


def test_every_request_is_audited_and_queryable(service: Service) -> None:
    client = service.client
    client.get("/users/me", headers=service.headers("clinician-a"))
    client.get("/users", headers=service.headers("clinician-a"))  # refused: not an admin
    client.get("/users/me")  # refused: nobody
    service.flush_audit()
    headers = service.headers("compliance")
    everything = client.get("/audit/events", headers=headers).json()
    actions = [(e["actor_name"], e["action"], e["outcome"]) for e in everything["items"]]
    assert ("clinician-a", "api.read_current_user", "success") in actions
    assert ("clinician-a", "api.list_users.refused", "minor-failure") in actions
    assert (None, "api.read_current_user.refused", "minor-failure") in actions

    by_actor = client.get("/audit/events", headers=headers, params={"actor": "clinician-a"}).json()
    assert {e["actor_name"] for e in by_actor["items"]} == {"clinician-a"} and by_actor["total"] == 2
    refused = client.get("/audit/events", headers=headers, params={"refused_only": True}).json()
    assert all(e["action"].endswith(".refused") for e in refused["items"]) and refused["total"] == 2
    by_action = client.get("/audit/events", headers=headers, params={"action": "api.list_users.refused"}).json()
    assert by_action["total"] == 1 and by_action["items"][0]["organisation"] == "HospitalAMSP"

    times = [e["time"] for e in everything["items"]]
    assert times == sorted(times, reverse=True)  # newest first
    middle, newest = times[len(times) // 2], times[0]
    window = client.get("/audit/events", headers=headers, params={"since": middle, "until": newest}).json()
    assert [e["tx_id"] for e in window["items"]] == [
        e["tx_id"] for e in everything["items"] if middle <= e["time"] < newest
    ]
    fixed = {"until": newest}  # later requests (these queries among them) add events; page a fixed window
    first_page = client.get("/audit/events", headers=headers, params={**fixed, "limit": 1}).json()
    second_page = client.get("/audit/events", headers=headers, params={**fixed, "limit": 1, "offset": 1}).json()
    both = client.get("/audit/events", headers=headers, params={**fixed, "limit": 2}).json()
    assert [e["tx_id"] for e in first_page["items"] + second_page["items"]] == [e["tx_id"] for e in both["items"]]
    assert first_page["total"] == second_page["total"] == both["total"] == 2


def test_bad_audit_filters_are_named(service: Service) -> None:
    headers = service.headers("compliance")
    cases = {
        "since": {"since": "yesterday"},
        "until": {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        "outcome": {"outcome": "fine"},
        "action": {"action": "DROP TABLE"},
    }
    for field, params in cases.items():
        response = service.client.get("/audit/events", headers=headers, params=params)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field
    naive = service.client.get("/audit/events", headers=headers, params={"since": "2026-01-01T00:00:00"})
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "since"
