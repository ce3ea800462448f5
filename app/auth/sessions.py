"""Browser sessions: who is logged in (a signed cookie holding a user id, a stamp of the
password it logged in with and when it was last used) and the CSRF token.

The cookie is Starlette's SessionMiddleware (itsdangerous-signed, HttpOnly, SameSite=Lax).
Every unsafe request a session authenticates must carry the session's CSRF token, in the
X-CSRF-Token header (HTMX, fetch) or a `csrf_token` form field (plain forms).
"""
from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy.orm import Session
from starlette.requests import Request

from app.users.models import User

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _store(request: Request) -> dict | None:
    """The session dict, or None in an app without the session middleware."""
    return request.scope.get("session")


def csrf_token(request: Request) -> str:
    """This session's CSRF token, created on first use (anonymous sessions have one too,
    so the login and setup forms are protected)."""
    store = _store(request)
    if store is None:
        return ""
    if "csrf" not in store:
        store["csrf"] = secrets.token_urlsafe(32)
    return store["csrf"]


def csrf_matches(request: Request, sent: str | None) -> bool:
    expected = (_store(request) or {}).get("csrf")
    return bool(expected and sent) and secrets.compare_digest(expected, sent)


def _password_stamp(user: User) -> str:
    """Changes with the password (each Argon2 hash has its own salt), so a new password ends the
    account's other sessions: a stolen cookie dies with the password it was logged in with."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def log_in(request: Request, user: User) -> None:
    """A fresh session for the user (a new CSRF token too, so one seen before login is useless)."""
    store = _store(request)
    store.clear()
    store["uid"] = user.id
    store["pw"] = _password_stamp(user)
    store["seen"] = int(time.time())
    store["csrf"] = secrets.token_urlsafe(32)


def log_out(request: Request) -> None:
    (_store(request) or {}).clear()


def session_user(request: Request, db: Session) -> User | None:
    """The active user of the session cookie, or None: also once the password has changed, and
    once the session was left idle longer than MARROW_SESSION_IDLE_MINUTES (it is then ended: a
    lab workstation left logged in). Each use counts as activity (the cookie is re-sent anyway)."""
    store = _store(request) or {}
    uid = store.get("uid")
    if uid is None:
        return None
    now, idle = int(time.time()), request.app.state.settings.session_idle_minutes * 60
    if idle and now - store.get("seen", 0) > idle:
        store.clear()
        return None
    user = db.get(User, uid)
    if user is None or not user.active:
        return None
    if not secrets.compare_digest(store.get("pw", ""), _password_stamp(user)):
        return None
    store["seen"] = now
    return user


def browser_user(request: Request, db: Session) -> User | None:
    """The session user for the JSON API (images, CSVs, anything a page fetches); an unsafe
    method also needs the CSRF header, so another site cannot drive the API with the cookie."""
    if request.method not in SAFE_METHODS and not csrf_matches(request, request.headers.get(CSRF_HEADER)):
        return None
    return session_user(request, db)
