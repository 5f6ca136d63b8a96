"""The pages' pictures, drawn from the ledger: audit activity, budgets, a model's lineage (what the pages embed)."""

from __future__ import annotations

from tests.api.api_testing import Service
from tests.api.model_fixture import register_model


def test_pages_embed_pictures_drawn_from_the_ledger(sqlite_service: Service) -> None:
    service = sqlite_service
    model = register_model(service.settings.state_dir)
    compliance = service.headers("compliance")

    audit = service.client.get("/ui/pictures/audit-activity.png", headers=compliance)
    assert audit.status_code == 200 and audit.headers["content-type"] == "image/png"
    assert audit.content.startswith(b"\x89PNG\r\n\x1a\n") and len(audit.content) > 5_000

    budgets = service.client.get("/ui/pictures/budgets.png", headers=service.headers("it-a"))
    assert budgets.status_code == 200 and budgets.content.startswith(b"\x89PNG")

    lineage = service.client.get(f"/ui/pictures/lineage/{model.model_id}", headers=service.headers("clinician-a"))
    assert lineage.status_code == 200 and lineage.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in lineage.content and b"Model lineage (W3C PROV)" in lineage.content  # text stays text

    missing = service.client.get("/ui/pictures/lineage/run-nope/model", headers=service.headers("clinician-a"))
    assert missing.status_code == 404
    page = service.client.get("/ui/audit", headers=compliance)
    assert 'src="/ui/pictures/audit-activity.png"' in page.text
