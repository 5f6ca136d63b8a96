"""`/metrics`: Prometheus counters and latency by route name, and the audit outbox's backlog, for the operator."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.api.api_testing import Service


def _samples(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = service.client.get("/metrics", headers=service.headers("admin"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_requests_by_route_time_them_and_show_the_outbox(sqlite_service: Service) -> None:
    service = sqlite_service
    for _ in range(3):
        assert service.client.get("/health").status_code == 200
    assert service.client.get("/users/me").status_code == 401
    before = _samples(service)
    health_ok = ("carefed_api_requests_total", (("method", "GET"), ("route", "health"), ("status", "200")))
    assert before[health_ok] == 3
    refused = ("carefed_api_requests_total", (("method", "GET"), ("route", "read_current_user"), ("status", "401")))
    assert before[refused] == 1
    latency = ("carefed_api_request_duration_seconds_count", (("method", "GET"), ("route", "health")))
    assert before[latency] == 3
    # Every request is audited through the consortium's outbox: its backlog is on the page until delivered.
    depth = before[("carefed_audit_outbox_depth", (("org", "consortium"),))]
    assert depth >= 0 and ("carefed_audit_outbox_oldest_age_seconds", (("org", "consortium"),)) in before
    service.flush_audit()
    after = _samples(service)
    assert after[("carefed_audit_outbox_depth", (("org", "consortium"),))] <= 1  # the scrape itself may queue one
    assert not any("MRN" in name or "pseudonym" in str(labels) for name, labels in after)


def test_metrics_are_for_the_consortium_admin_only(sqlite_service: Service) -> None:
    assert sqlite_service.client.get("/metrics").status_code == 401
    assert sqlite_service.client.get("/metrics", headers=sqlite_service.headers("clinician-a")).status_code == 403
