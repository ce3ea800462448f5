"""Page-side access rules: who may see a page and the CSRF check of every form (the rules
themselves are app.auth's)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from app.auth.sessions import CSRF_FIELD, CSRF_HEADER, csrf_matches, session_user
from app.deps import SessionDep
from app.users.models import User


class LoginRequired(Exception):
    """Raised by page dependencies; app.web.install turns it into a redirect to /login (or /setup)."""


def page_user(request: Request, db: SessionDep) -> User:
    user = session_user(request, db)
    if user is None:
        raise LoginRequired()
    request.state.user = user
    return user


PageUser = Annotated[User, Depends(page_user)]


def admin_user(user: PageUser) -> User:
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "administrators only")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


async def check_csrf(request: Request) -> None:
    """The session's token in the X-CSRF-Token header (HTMX sends it from <body hx-headers>)
    or in the form field; the form is parsed with the upload limits, as the upload route would."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        settings = request.app.state.settings
        form = await request.form(max_files=settings.max_files, max_fields=1000)
        sent = form.get(CSRF_FIELD)
    if not csrf_matches(request, sent if isinstance(sent, str) else None):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token; reload the page")


Csrf = Depends(check_csrf)
