"""The CareFed service's FastAPI application: routers, error handling, auditing and web pages."""

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from api.core.audit import AuditMiddleware, LedgerAuditTrail
from api.core.catalog import ModelCatalog
from api.core.config import Settings
from api.core.db import make_engine, upgrade_to_head
from api.core.ledger import LedgerHub
from api.core.metrics import Metrics, MetricsMiddleware
from api.core.problems import install_problem_handlers
from api.deps import TokenUsers, authorize, check_access_before_validation
from api.routes import audit, consents, health, login, models, nodes, pages, pictures, queries, users

STATIC_DIR = Path(__file__).resolve().parent / "static"
logger = logging.getLogger(__name__)


def _operation_id(route: APIRoute) -> str:
    """Route names double as OpenAPI operation ids and as keys of the access matrix."""
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready service: the database migrated to head, every route behind the access matrix and audited."""
    settings = settings or Settings()
    engine = make_engine(settings.resolved_database_url)
    upgrade_to_head(engine)
    hub = LedgerHub(settings.state_dir, settings.audit_delivery)

    catalog = ModelCatalog(hub, settings.state_dir, settings.hospital)
    trail = LedgerAuditTrail(hub) if settings.audit_enabled else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        preloading = threading.Thread(target=catalog.preload, name="carefed-model-preload", daemon=True)
        preloading.start()
        if settings.audit_enabled:
            hub.start()
        yield
        preloading.join()
        if trail is not None:
            trail.close()
        hub.close()
        engine.dispose()

    app = FastAPI(
        title="CareFed",
        summary="Consents, models with provenance, and the audit trail of a hospital consortium.",
        version="0.1.0",
        dependencies=[Depends(authorize)],
        generate_unique_id_function=_operation_id,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.token_users = TokenUsers(engine, settings.jwt_secret, settings.auth_cache_seconds)
    app.state.ledgers = hub
    app.state.catalog = catalog
    app.state.metrics = Metrics(hub)
    install_problem_handlers(app, check_access_before_validation, pages.render_problem)
    for module in (health, login, users, nodes, consents, models, queries, audit, pages, pictures):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if trail is not None:
        app.add_middleware(AuditMiddleware, trail=trail)
    else:
        logger.warning("auditing is OFF (CAREFED_API_AUDIT_ENABLED=false): requests leave no trace on the ledger")
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: the latency includes auditing
    return app
