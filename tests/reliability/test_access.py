"""Access: every registered route, walked from the app itself (so a route added later is walked
too), refuses anonymous requests and a disabled user's token without showing any case data;
every state-changing page needs the CSRF token; cookies, roles, the secret key, files by id.
Elsewhere: login rate limit in tests/web/test_pages.py::test_login_is_rate_limited_per_ip_and_name."""
from __future__ import annotations

import os
import re
import subprocess

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount

from app.cli import marrow_command
from app.config import Settings

from support.app import make_user
from .corpus import image

# Routes that show no patient data and must work before logging in.
PUBLIC = {"/api/health", "/api/ready", "/", "/login", "/setup", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
          "/static"}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
ACCESSION, FILENAME = "SECRET-ACC-4711", "doe-john-marrow.png"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def registered_routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route the app answers, included routers and mounts too."""
    out = []
    for route in app.router.routes:
        if hasattr(route, "effective_route_contexts"):  # an included router (FastAPI >= 0.16x)
            out += [(m, ctx.path) for ctx in route.effective_route_contexts() for m in ctx.methods]
        elif isinstance(route, Mount):
            out.append(("GET", route.path))
        else:
            out += [(m, route.path) for m in route.methods]
    return sorted({(m, p) for m, p in out if m != "HEAD"})


@pytest.fixture
def data(client, auth) -> dict[str, int]:
    """A case with one cell, the ids every path template is filled with."""
    case_id = client.post("/api/cases", json={"accession": ACCESSION}, headers=auth).json()["id"]
    r = client.post(f"/api/cases/{case_id}/uploads", headers=auth, files=[("files", (FILENAME, image(1)))])
    return {"case_id": case_id, "cell_id": r.json()["accepted"][0]["cell_id"], "upload_id": r.json()["upload_id"],
            "name": "rita"}


def _fill(path: str, ids: dict) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: str(ids[m.group(1)]), path)


def _refused(r, path: str) -> bool:
    if path.startswith("/api/"):
        return r.status_code == 401
    location = r.headers.get("location", "")
    return (r.status_code == 303 and location.startswith("/login")) or r.status_code in (401, 403)


def test_every_route_refuses_anonymous_and_disabled_users(client, sessions, data):
    from app.users.service import set_active

    _, disabled_token = make_user(sessions, "dora")
    with sessions() as s:
        set_active(s, "dora", False)
    routes = registered_routes(client.app)
    guarded = [(m, p) for m, p in routes if p not in PUBLIC]
    assert len(guarded) >= 30 and {p for _, p in routes} >= PUBLIC - {"/redoc"}, routes
    for who, headers in (("anonymous", {}), ("disabled", {"Authorization": f"Bearer {disabled_token}"}),
                         ("bad token", {"Authorization": "Bearer md_forged"})):
        client.cookies.clear()
        for method, template in guarded:
            path = _fill(template, data)
            r = client.request(method, path, headers=headers, follow_redirects=False,
                               data={"items": f"{data['cell_id']}:1:BLA", "accession": "X"} if method in UNSAFE else None)
            assert _refused(r, path), (who, method, path, r.status_code, r.text[:200])
            assert ACCESSION not in r.text and FILENAME not in r.text and r.headers.get("content-type") != "image/png"


def test_every_unsafe_page_route_needs_the_csrf_token(client, data):
    """Logged in, but without the session's token: every form is refused (403), and the JSON API
    refuses the session cookie alone (401) so another site cannot drive it."""
    csrf = CSRF_META.search(client.get("/login").text).group(1)
    assert client.post("/login", data={"name": "rita", "password": "a long password", "csrf_token": csrf},
                       follow_redirects=False).status_code == 303
    unsafe = [(m, p) for m, p in registered_routes(client.app) if m in UNSAFE]
    assert len(unsafe) >= 10
    for method, template in unsafe:
        path = _fill(template, data)
        for extra in ({}, {"csrf_token": "forged"}):
            r = client.request(method, path, data={"accession": "X", **extra}, follow_redirects=False)
            expected = 401 if path.startswith("/api/") else 403
            assert r.status_code == expected, (method, path, extra, r.status_code, r.text[:200])
    assert client.get(f"/api/cases/{data['case_id']}").status_code == 200  # reading with the cookie is fine


def test_reviewers_cannot_manage_users(client, data):
    csrf = CSRF_META.search(client.get("/login").text).group(1)
    client.post("/login", data={"name": "rita", "password": "a long password", "csrf_token": csrf})
    csrf = CSRF_META.search(client.get("/cases").text).group(1)
    assert client.get("/admin/users").status_code == 403
    r = client.post("/admin/users", data={"name": "mallory", "role": "admin", "password": "a long password",
                                          "csrf_token": csrf})
    assert r.status_code == 403 and "administrators only" in r.text
    r = client.post("/admin/users/rita/active", data={"active": "false", "csrf_token": csrf})
    assert r.status_code == 403
    from app.users.service import get_by_name

    with client.app.state.sessionmaker() as s:
        assert get_by_name(s, "mallory") is None and get_by_name(s, "rita").active


def test_session_cookie_is_httponly_samesite_and_secure_in_production(settings):
    from app.main import create_app

    for environment, base_url, secure in (("development", "http://testserver", False),
                                          ("production", "https://testserver", True)):
        s = settings.model_copy(update={"environment": environment, "secret_key": "k" * 64})
        with TestClient(create_app(s), base_url=base_url) as c:
            cookie = c.get("/login").headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and ("; secure" in cookie) == secure, cookie


@pytest.mark.parametrize("command", ["web", "worker"])
def test_production_refuses_the_default_secret_key(tmp_path, command):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARROW_")}
    env.update(MARROW_ENV="production", MARROW_DATA_DIR=str(tmp_path))
    r = subprocess.run(marrow_command(command, *(["--port", "1"] if command == "web" else [])), env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0 and "MARROW_SECRET_KEY" in r.stderr, (r.returncode, r.stderr[-2000:])
    assert not (tmp_path / "marrow.sqlite").exists()  # refused before touching anything
    with pytest.raises(ValueError, match="MARROW_SECRET_KEY"):
        Settings(_env_file=None, environment="production")
    assert Settings(_env_file=None, environment="production", secret_key="s" * 64).environment == "production"


def test_files_are_served_by_id_only(client, auth, data, settings):
    cell = data["cell_id"]
    own = client.get(f"/api/cells/{cell}/image", headers=auth)
    assert own.status_code == 200
    for path in (f"/api/cells/{cell}/image?path=/etc/passwd", f"/api/cells/{cell}/image?key=../../marrow.sqlite"):
        r = client.get(path, headers=auth)
        assert r.status_code == 200 and r.content == own.content
    for path in ("/api/cells/..%2F..%2Fmarrow.sqlite/image", "/api/cells/1%2F..%2F..%2Fetc%2Fpasswd/image",
                 "/api/cells/-1/image", "/api/cells/99999/thumbnail", "/static/..%2Fapp%2Fconfig.py",
                 "/static/../app/config.py", "/static/%2e%2e/%2e%2e/etc/passwd"):
        r = client.get(path, headers=auth)
        assert r.status_code in (404, 422), (path, r.status_code)
        assert b"root:" not in r.content and b"SQLite format" not in r.content and b"class Settings" not in r.content
    templates = [p for _, p in registered_routes(client.app)]
    assert not [p for p in templates if ":path}" in p], "a route takes a file path from the client"
    from app.storage import Storage

    with pytest.raises(ValueError, match="outside the storage dir"):
        Storage(settings.storage_path).path("../marrow.sqlite")
