"""First-run setup, login/logout, one's own password and the administrators' user list."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from app.auth.sessions import log_in, log_out, session_user
from app.deps import SessionDep
from app.users import history
from app.users import service as users
from app.users.models import ROLES, User
from app.web.auth import AdminUser, Csrf, PageUser
from app.web.templating import render

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form()]


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status.HTTP_303_SEE_OTHER)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _safe_next(url: str | None) -> str:
    """Only a path on this site (never //host or a scheme): no open redirect after login."""
    return url if url and url.startswith("/") and not url.startswith("//") and "\\" not in url else "/cases"


@router.get("/")
def home(request: Request, db: SessionDep) -> Response:
    return _see_other("/cases" if session_user(request, db) else "/login")


@router.get("/setup")
def setup_page(request: Request, db: SessionDep) -> Response:
    if users.has_users(db):
        return _see_other("/login")
    return render(request, "setup.html")


@router.post("/setup", dependencies=[Csrf])
def setup(request: Request, db: SessionDep, name: Text, password: Text, password2: Text) -> Response:
    """Creates the first administrator; refused as soon as any user exists."""
    done = HTTPException(status.HTTP_403_FORBIDDEN, "setup is done; log in instead")
    if users.has_users(db):
        raise done
    error = "the two passwords differ" if password != password2 else None
    if error is None:
        try:
            user = users.create_first_admin(db, name.strip(), password, client=_client(request))
        except users.SetupDone:
            raise done from None
        except ValueError as exc:
            error = str(exc)
    if error:
        return render(request, "setup.html", status.HTTP_422_UNPROCESSABLE_CONTENT, error=error, name=name)
    log_in(request, user)
    return _see_other("/cases")


@router.get("/login")
def login_page(request: Request, db: SessionDep, next: str | None = None) -> Response:
    if not users.has_users(db):
        return _see_other("/setup")
    return render(request, "login.html", next=_safe_next(next))


@router.post("/login", dependencies=[Csrf])
def login(request: Request, db: SessionDep, name: Text, password: Text,
          next: Annotated[str | None, Form()] = None) -> Response:
    client = _client(request)
    if not request.app.state.login_limiter.hit(client, name):
        return render(request, "login.html", status.HTTP_429_TOO_MANY_REQUESTS, name=name, next=_safe_next(next),
                      error="too many login attempts; wait a minute and try again")
    user = users.authenticate(db, name.strip(), password, client=client)  # same work for unknown names
    if user is None:
        return render(request, "login.html", status.HTTP_401_UNAUTHORIZED, name=name, next=_safe_next(next),
                      error="wrong user name or password, or the account is disabled")
    log_in(request, user)
    return _see_other(_safe_next(next))


@router.post("/logout", dependencies=[Csrf])
def logout(request: Request) -> Response:
    log_out(request)
    return _see_other("/login")


ACCOUNT_EVENTS = 10  # of one's own account on the Account page: a failed login there is a warning


def _account_page(request: Request, db: Session, user: User, status_code: int = 200, **context) -> Response:
    return render(request, "account.html", status_code, events=history.recent(db, ACCOUNT_EVENTS, of=user), **context)


@router.get("/account")
def account(request: Request, db: SessionDep, user: PageUser) -> Response:
    return _account_page(request, db, user)


@router.post("/account/password", dependencies=[Csrf])
def change_password(request: Request, db: SessionDep, user: PageUser, current: Text, password: Text,
                    password2: Text) -> Response:
    """Counted by the login limit: a session left open must not become a way to guess the password."""
    client = _client(request)
    if not request.app.state.login_limiter.hit(client, user.name):
        return _account_page(request, db, user, status.HTTP_429_TOO_MANY_REQUESTS,
                             error="too many password attempts; wait a minute and try again")
    if password != password2:
        return _account_page(request, db, user, status.HTTP_422_UNPROCESSABLE_CONTENT,
                             error="the two new passwords differ")
    try:
        users.change_password(db, user, current, password, client=client)
    except (users.WrongPassword, users.InvalidUser) as exc:
        return _account_page(request, db, user, exc.status_code, error=str(exc))
    log_in(request, user)  # this session goes on with the new password; the others end
    return _account_page(request, db, user, notice="password changed; your other sessions are logged out")


def _users_page(request: Request, db: Session, template: str, status_code: int = 200, **context) -> Response:
    return render(request, template, status_code, users=users.list_users(db), roles=ROLES,
                  events=history.recent(db), **context)


@router.get("/admin/users")
def admin_users(request: Request, db: SessionDep, _admin: AdminUser) -> Response:
    return _users_page(request, db, "admin_users.html")


@router.post("/admin/users", dependencies=[Csrf])
def add_user(request: Request, db: SessionDep, admin: AdminUser, name: Text, role: Text, password: Text) -> Response:
    try:
        users.create_user(db, name.strip(), role, password, by=admin, client=_client(request))
    except ValueError as exc:
        return _users_page(request, db, "partials/users.html", status.HTTP_422_UNPROCESSABLE_CONTENT,
                           error=str(exc))
    return _users_page(request, db, "partials/users.html", notice=f"added {role} {name.strip()}")


@router.post("/admin/users/{name}/active", dependencies=[Csrf])
def set_active(request: Request, db: SessionDep, admin: AdminUser, name: str,
               active: Annotated[bool, Form()]) -> Response:
    if name == admin.name and not active:
        return _users_page(request, db, "partials/users.html", status.HTTP_409_CONFLICT,
                           error="you cannot disable your own account")
    users.set_active(db, name, active, by=admin, client=_client(request))  # users.UserNotFound: a 404 page (app.web.install)
    return _users_page(request, db, "partials/users.html",
                       notice=f"{name} {'enabled' if active else 'disabled'}")


@router.post("/admin/users/{name}/password", dependencies=[Csrf])
def set_password(request: Request, db: SessionDep, admin: AdminUser, name: str, password: Text) -> Response:
    if name == admin.name:
        return _users_page(request, db, "partials/users.html", status.HTTP_409_CONFLICT,
                           error="change your own password under Account, with your current one")
    try:
        users.set_password(db, name, password, by=admin, client=_client(request))  # users.UserNotFound: a 404 page (app.web.install)
    except users.InvalidUser as exc:
        return _users_page(request, db, "partials/users.html", exc.status_code, error=str(exc))
    return _users_page(request, db, "partials/users.html",
                       notice=f"new password set for {name}; their browser sessions are logged out")
