"""Page tests use the in-process app of tests/support/app.py (real SQLite db, real app, processed
real cells) and add a browser-like session: a client logged in through the login form."""
from __future__ import annotations

import re

import pytest

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def csrf_of(http, path: str = "/login") -> str:
    """The session's CSRF token, as a page hands it to the browser."""
    match = CSRF_META.search(http.get(path).text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def log_in(http, name: str, password: str = "a long password") -> str:
    """Log in through the form; returns the session's (new) CSRF token."""
    r = http.post("/login", data={"name": name, "password": password, "csrf_token": csrf_of(http)},
                  follow_redirects=False)
    assert r.status_code == 303, r.text
    return csrf_of(http, "/cases")


@pytest.fixture
def page(client, token) -> str:
    """`client` logged in as rita (the reviewer that owns `token`); returns the CSRF token."""
    return log_in(client, "rita")


@pytest.fixture
def htmx(page) -> dict[str, str]:
    """Headers of an HTMX request from a logged-in page."""
    return {"HX-Request": "true", "X-CSRF-Token": page}
