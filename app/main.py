"""The FastAPI app factory. Migrations are applied by the commands that start it, not here."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.classes import load_classes
from app.config import Settings, get_settings
from app.db import make_engine, make_sessionmaker
from app.errors import DomainError
from app.storage import Storage


def create_app(settings: Settings | None = None) -> FastAPI:
    from app.audit.routes import router as audit_router
    from app.cases.routes import router as cases_router
    from app.cells.routes import router as cells_router
    from app.exports.routes import router as exports_router
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

    @app.get("/api/health", tags=["meta"])
    def health() -> dict:
        """Liveness for load balancers and `marrow bench-app`; carries no case data."""
        return {"status": "ok"}

    for router in (cases_router, cells_router, audit_router, exports_router):
        app.include_router(router)
    install_web(app, settings)  # the review pages: session cookie, /static, page routes
    return app
