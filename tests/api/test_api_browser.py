"""The web pages in a real browser: Debian's Chromium driven by Playwright against the service on a real port.

Each user's page is walked through as that user would, and screenshots are kept under
`test-artifacts/api/` (git-ignored) for a human to look at. Playwright never downloads a browser here: it
drives `/usr/bin/chromium`, which `scripts/test-system-deps.sh` installs.
"""

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.api.api_testing import PASSWORD, Service, start_service
from tests.api.model_fixture import RegisteredModel, register_model

# Chromium and a live service per test, sized for a loaded 2-core machine.
pytestmark = pytest.mark.timeout(600)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "api"


@dataclass
class Site:
    url: str
    service: Service
    model: RegisteredModel


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("browser")
    service = start_service(f"sqlite:///{root / 'api.sqlite'}", root / "state")
    model = register_model(root / "state")
    with service.client:  # runs the lifespan: the model is loaded before the browser asks for it
        node = service.client.post(
            "/nodes", headers=service.headers("it-a"), json={"name": "node-1", "hospital": "hospital-a"}
        )
        assert node.status_code == 201
        assert service.client.get("/models", headers=service.headers("clinician-a")).status_code == 200
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(service.client.app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)
        try:
            yield Site(f"http://127.0.0.1:{port}", service, model)
        finally:
            server.should_exit = True
            thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/test-system-deps.sh (installs Debian's chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(site: Site, browser: Browser) -> Iterator[Page]:  # the site first: its set-up runs the ledger's loop
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def sign_in(page: Page, site: Site, username: str, start: str = "/") -> None:
    page.goto(site.url + start)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("signed-in-as")).to_have_text(username)


def test_clinician_scores_a_patient_with_provenance(page: Page, site: Site) -> None:
    sign_in(page, site, "clinician-a")
    assert page.url.endswith("/ui/predict")
    provenance = page.get_by_test_id("provenance")
    expect(provenance).to_contain_text(site.model.sha256)
    expect(page.get_by_test_id("privacy")).to_contain_text("ε = 3.0")
    expect(provenance).to_contain_text(site.model.snapshot_root[:16])
    expect(page.locator("form[data-testid=predict-form]")).to_contain_text("px² · ")
    first = site.model.feature_names[0]
    field = page.locator(f"input[name='feature.{first}']")
    assert float(field.get_attribute("min") or "nan") < float(field.get_attribute("max") or "nan")
    for name, value in site.model.malignant_example.items():
        page.fill(f"input[name='feature.{name}']", str(value))
    page.click("[data-testid=predict-form] button[type=submit]")
    score = page.get_by_test_id("risk-score")
    expect(score).to_be_visible()
    assert float(score.inner_text().rstrip(" %")) > 80
    expect(page.get_by_test_id("model-hash")).to_have_text(site.model.sha256)
    page.screenshot(path=str(ARTIFACTS / "clinician-predict.png"), full_page=True)


def test_compliance_officer_filters_the_audit_trail(page: Page, site: Site) -> None:
    site.service.client.get("/users", headers=site.service.headers("clinician-a"))  # a refusal to find
    site.service.flush_audit()
    sign_in(page, site, "compliance")
    assert page.url.endswith("/ui/audit")
    table = page.get_by_test_id("audit-table")
    expect(table).to_contain_text("api.page_sign_in_submit")
    page.fill("input[name=actor]", "clinician-a")
    page.check("input[name=refused_only]")
    page.click("[data-testid=audit-filters] button[type=submit]")
    expect(table).to_contain_text("api.list_users.refused")
    rows = table.locator("tbody tr")
    assert rows.count() >= 1
    for index in range(rows.count()):
        assert "clinician-a" in rows.nth(index).inner_text() and ".refused" in rows.nth(index).inner_text()
    page.screenshot(path=str(ARTIFACTS / "compliance-audit.png"), full_page=True)


def test_hospital_it_records_and_withdraws_a_consent(page: Page, site: Site) -> None:
    sign_in(page, site, "it-a")
    assert page.url.endswith("/ui/hospital")
    expect(page.get_by_test_id("nodes-table")).to_contain_text("node-1")
    consents = page.get_by_test_id("consents-table")
    before = site.service.client.get("/consents", headers=site.service.headers("it-a")).json()["total"]
    page.fill("[data-testid=consent-form] input[name=mrn]", "MRN-BROWSER-1")
    page.click("[data-testid=consent-form] button[type=submit]")
    expect(page.get_by_test_id("notice")).to_have_text("Consent recorded on the ledger.")
    expect(consents.locator("tbody tr")).to_have_count(before + 1)
    assert "MRN-BROWSER-1" not in page.content()
    page.fill("[data-testid=search-form] input[name=mrn]", "MRN-BROWSER-1")
    page.click("[data-testid=search-form] button[type=submit]")
    expect(page.get_by_test_id("search-results")).to_contain_text("HRESCH · active")
    page.screenshot(path=str(ARTIFACTS / "hospital-it-consents.png"), full_page=True)
    consents.locator("button.danger").first.click()
    expect(page.get_by_test_id("notice")).to_have_text("Consent withdrawn on the ledger.")
    after = site.service.client.get("/consents", headers=site.service.headers("it-a")).json()["total"]
    assert after == before


def test_pages_refuse_who_may_not_see_them(page: Page, site: Site) -> None:
    response = page.goto(site.url + "/ui/audit")
    assert response is not None and response.status == 401
    expect(page.locator("input[name=username]")).to_be_visible()
    sign_in(page, site, "clinician-a", start="/ui/audit")
    response = page.goto(site.url + "/ui/audit")
    assert response is not None and response.status == 403
    expect(page.locator("[role=alert]")).to_contain_text("may not call page_audit")
    page.screenshot(path=str(ARTIFACTS / "refused.png"), full_page=True)
