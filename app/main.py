"""The FastAPI app factory. Migrations are applied by the commands that start it, not here."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import DataError, OperationalError

from app.ml.card import load_classes
from app.config import Settings, get_settings
from app.db import disk_full, make_engine, make_sessionmaker
from app.deps import SessionDep
from app.errors import DomainError, InvalidValue, StorageFailed, Unavailable
from app.headers import SecurityHeaders
from app.storage import Storage

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    from app.agreement.routes import router as agreement_router
    from app.audit.routes import router as audit_router
    from app.cases.routes import router as cases_router
    from app.cells.routes import router as cells_router
    from app.exports.routes import router as exports_router
    from app.processing.routes import router as processing_router
    from app.reports.routes import router as reports_router
    from app.rerun.routes import router as rerun_router
    from app.taxonomy.routes import router as taxonomy_router
    from app.web.install import install_web

    settings = settings or get_settings()
    app = FastAPI(title="MarrowDiff", version="0.1.0",
                  description="Bone-marrow differential counts: upload cells, ReXNet-150 first pass, review, "
                              "sign-off, CSV. Every /api route needs `Authorization: Bearer <token>`.")
    engine = make_engine(settings.db_url)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.storage = Storage(settings.storage_path)
    app.state.classes = load_classes(settings.model_dir)

    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)

    @app.exception_handler(OperationalError)
    async def _database_unavailable(request: Request, exc: OperationalError) -> Response:
        """PostgreSQL stopped or restarting: a 503 that says so, not a 500 (which also dropped
        the client's connection); the pool reconnects by itself once it is back. The database's
        disk full: a 507 that says waiting will not help. Answered as a DomainError, so the
        pages show their error page."""
        if disk_full(exc, settings.db_url):
            log.error("the database's disk is full: %s", exc.orig)
            error: DomainError = StorageFailed("the database's disk is full; ask your administrator to free "
                                               "space, then try again")
        else:
            log.warning("database unavailable: %s", exc.orig)
            error = Unavailable("the database is unavailable; try again in a moment")
        return await app.exception_handlers[DomainError](request, error)

    @app.exception_handler(DataError)
    async def _value_refused(request: Request, exc: DataError) -> Response:
        """A value the database refuses (PostgreSQL: a NUL character in any text, from a note to a
        search): a 422 naming why, not a 500; SQLite stores such text as it is."""
        reason = str(exc.orig).splitlines()[0] if exc.orig else "invalid value"
        log.info("value refused by the database: %s", reason)
        return await app.exception_handlers[DomainError](request, InvalidValue(f"the database refused a value: {reason}"))

    @app.get("/api/health", tags=["meta"])
    def health() -> dict:
        """Liveness for load balancers and `marrow bench-app`; carries no case data."""
        return {"status": "ok"}

    @app.get("/api/ready", tags=["meta"])
    def ready(session: SessionDep) -> dict:
        """Readiness: the web process can reach its database (503 while it cannot, through the
        handler above) and write to its image storage (507, as an upload would get); for a load
        balancer, an orchestrator or a monitor that should see an outage before a user does."""
        session.execute(text("SELECT 1"))
        if reason := app.state.storage.writable():
            raise StorageFailed(f"the image storage {app.state.storage.root} cannot be written: {reason}")
        return {"status": "ready"}

    for router in (cases_router, cells_router, audit_router, exports_router, taxonomy_router, reports_router,
                   rerun_router, processing_router, agreement_router):
        app.include_router(router)
    install_web(app, settings)  # the review pages: session cookie, /static, page routes
    app.add_middleware(SecurityHeaders)  # outermost: error pages and static files get them too
    return app
