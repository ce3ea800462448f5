"""Hooks the pages into the app: session cookie, static files, page routes, HTML errors."""
from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from app.config import Settings
from app.errors import DomainError
from app.auth.ratelimit import LoginLimiter
from app.cells.examples import ExampleCache
from app.web.auth import LoginRequired
from app.web.pages_agreement import router as agreement_router
from app.web.pages_auth import router as auth_router
from app.web.pages_cases import router as cases_router
from app.web.pages_review import router as review_router
from app.web.pages_system import router as system_router
from app.web.pages_taxonomy import router as taxonomy_router
from app.web.templating import ROOT, is_htmx, render

SESSION_COOKIE = "marrow_session"
SESSION_MAX_AGE_S = 12 * 3600  # one working day (and night shift); then log in again


def install_web(app: FastAPI, settings: Settings) -> None:
    # Secure cookies need HTTPS; production is expected behind a TLS proxy, the laptop default is plain HTTP.
    app.add_middleware(SessionMiddleware, secret_key=settings.secret_key, session_cookie=SESSION_COOKIE,
                       max_age=SESSION_MAX_AGE_S, same_site="lax", https_only=settings.environment == "production")
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    app.state.login_limiter = LoginLimiter.for_broker(settings.broker)
    app.state.examples = ExampleCache()  # the review's signed examples (app.cells.examples)
    for router in (auth_router, cases_router, review_router, taxonomy_router, agreement_router, system_router):
        app.include_router(router)

    api_domain_error = app.exception_handlers[DomainError]

    async def login_required(request: Request, _exc: LoginRequired) -> Response:
        if is_htmx(request):  # a fragment request of an expired session: reload as the login page
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        return RedirectResponse(f"/login?next={request.url.path}", 303)

    async def domain_error(request: Request, exc: DomainError) -> Response:
        if request.url.path.startswith("/api/"):
            return await api_domain_error(request, exc)
        return _error_page(request, exc.status_code, str(exc))

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/") or request.url.path.startswith("/static/"):
            return await http_exception_handler(request, exc)
        return _error_page(request, exc.status_code, str(exc.detail), exc.headers)

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(HTTPException, http_error)


def _error_page(request: Request, status_code: int, message: str, headers: dict | None = None) -> Response:
    """A full page, or for HTMX the message fragment shown in the page's message bar."""
    if is_htmx(request):
        headers = {**(headers or {}), "HX-Retarget": "#messages", "HX-Reswap": "innerHTML"}
        return render(request, "partials/message.html", status_code, headers, message=message, error=True)
    return render(request, "error.html", status_code, headers, message=message, code=status_code)
