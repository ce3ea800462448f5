"""Every page renders against a real database, with the session and roles it needs."""
from __future__ import annotations

import re

from support.app import make_user

from .conftest import csrf_of, log_in


def test_first_visit_creates_the_first_admin(client):
    r = client.get("/", follow_redirects=True)
    assert r.url.path == "/setup" and "first administrator" in r.text
    token = csrf_of(client, "/setup")
    bad = client.post("/setup", data={"name": "ada", "password": "short", "password2": "short", "csrf_token": token})
    assert bad.status_code == 422 and "at least 8" in bad.text
    r = client.post("/setup", data={"name": "ada", "password": "a long password", "password2": "a long password",
                                    "csrf_token": token}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/cases")
    assert "ada · admin" in client.get("/cases").text
    assert client.get("/setup", follow_redirects=False).headers["location"] == "/login"
    r = client.post("/setup", data={"name": "eve", "password": "x" * 9, "password2": "x" * 9,
                                    "csrf_token": csrf_of(client, "/cases")})
    assert r.status_code == 403


def test_session_cookie_flags(client, token):
    r = client.get("/login")
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    assert r.headers["cache-control"] == "no-store"


def test_production_cookie_is_secure(settings):
    from fastapi.testclient import TestClient

    from app.main import create_app

    prod = settings.model_copy(update={"environment": "production", "secret_key": "a production secret " * 3})
    with TestClient(create_app(prod)) as c:
        assert "secure" in c.get("/login").headers["set-cookie"].lower()


def test_login_logout_and_redirects(client, token):
    assert client.get("/cases/1", follow_redirects=False).headers["location"] == "/login?next=/cases/1"
    r = client.post("/login", data={"name": "rita", "password": "wrong password", "csrf_token": csrf_of(client)})
    assert r.status_code == 401 and "wrong user name or password" in r.text
    r = client.post("/login", data={"name": "rita", "password": "a long password", "next": "//evil.example/",
                                    "csrf_token": csrf_of(client)}, follow_redirects=False)
    assert r.headers["location"] == "/cases"
    token = csrf_of(client, "/cases")
    assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert client.get("/cases", follow_redirects=False).status_code == 303


def test_login_is_rate_limited_per_ip_and_name(client, token):
    csrf = csrf_of(client)
    codes = [client.post("/login", data={"name": "Rita ", "password": f"guess {i}", "csrf_token": csrf}).status_code
             for i in range(10)]
    assert codes == [401] * 10
    r = client.post("/login", data={"name": "rita", "password": "a long password", "csrf_token": csrf})
    assert r.status_code == 429 and "too many login attempts" in r.text
    make_user(client.app.state.sessionmaker, "otto")  # another account from the same address is not blocked
    assert client.post("/login", data={"name": "otto", "password": "a long password", "csrf_token": csrf},
                       follow_redirects=False).status_code == 303


def test_disabled_user_is_logged_out(client, sessions, page):
    from app.users.service import set_active

    with sessions() as s:
        set_active(s, "rita", False)
    assert client.get("/cases", follow_redirects=False).status_code == 303


def test_pages_render(client, page, processed_case):
    for path, needle in (("/cases", "MD-1"),
                         (f"/cases/{processed_case}", "Differential CSV"),
                         (f"/cases/{processed_case}/review", 'id="gallery"')):
        r = client.get(path)
        assert r.status_code == 200 and needle in r.text and "<html" in r.text, path
    review = client.get(f"/cases/{processed_case}/review").text
    for key in "BELMNXP":
        assert f"<kbd>{key}</kbd>" in review  # each class's shortcut is on the page
    assert len(re.findall(r'class="tile ', review)) == 6
    assert client.get("/cases/999").status_code == 404


def test_admin_page_is_for_admins(client, sessions, page):
    assert client.get("/admin/users").status_code == 403
    make_user(sessions, "ada", "admin")
    log_in(client, "ada")
    r = client.get("/admin/users")
    assert r.status_code == 200 and "rita" in r.text and "Add user" in r.text


def test_admin_adds_and_disables_reviewers(client, sessions, htmx):
    make_user(sessions, "ada", "admin")
    token = log_in(client, "ada")
    headers = {"HX-Request": "true", "X-CSRF-Token": token}
    r = client.post("/admin/users", data={"name": "bob", "role": "reviewer", "password": "a long password"},
                    headers=headers)
    assert r.status_code == 200 and r.text.startswith('<div id="users">') and "added reviewer bob" in r.text
    r = client.post("/admin/users", data={"name": "bob", "role": "reviewer", "password": "a long password"},
                    headers=headers)
    assert r.status_code == 422 and "already exists" in r.text
    r = client.post("/admin/users/bob/active", data={"active": "false"}, headers=headers)
    assert r.status_code == 200 and "bob disabled" in r.text
    r = client.post("/admin/users/ada/active", data={"active": "false"}, headers=headers)
    assert r.status_code == 409 and "your own account" in r.text


def test_case_list_search_and_create(client, htmx, page):
    for accession in ("BM-17", "BM-18", "PB-1"):
        r = client.post("/cases", data={"accession": accession, "csrf_token": page}, follow_redirects=False)
        assert r.status_code == 303 and re.fullmatch(r"/cases/\d+", r.headers["location"])
    rows = client.get("/cases/rows", params={"q": "bm-"}, headers=htmx)
    assert rows.status_code == 200 and "<html" not in rows.text
    assert rows.text.count("<tr>") == 2 and "PB-1" not in rows.text
    assert client.get("/cases/rows", params={"state": "signed"}).text.count("<tr>") == 1  # the "no cases" row
    assert "No cases match" in client.get("/cases/rows", params={"state": "signed"}).text


def test_user_text_is_escaped_everywhere(client, auth, page):
    from support.app import new_case, upload

    evil = "<script>alert(1)</script>'\""
    case_id = new_case(client, auth, evil)
    upload(client, auth, case_id, [(evil + ".png", b"not an image")])
    for path in ("/cases", f"/cases/{case_id}", f"/cases/{case_id}/review"):
        text = client.get(path).text
        assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;&#39;&#34;" in text, path


def test_case_list_shows_a_page_of_the_newest_and_then_older_ones(client, auth, page, htmx):
    from support.app import new_case

    for i in range(1, 56):
        new_case(client, auth, f"BM-{i:03d}")
    first = client.get("/cases").text
    shown = re.findall(r">BM-(\d{3})</a>", first)
    assert shown == [f"{i:03d}" for i in range(55, 5, -1)]
    assert "55 cases; the newest 50 are shown." in first
    older = re.search(r'hx-get="(/cases/rows\?[^"]+)"', first).group(1).replace("&amp;", "&")
    rest = client.get(older, headers=htmx).text
    assert re.findall(r">BM-(\d{3})</a>", rest) == ["005", "004", "003", "002", "001"]
    assert "Show older cases" not in rest and "No cases match" not in rest
    rows = client.get("/cases/rows", params={"q": "bm-0"}, headers=htmx).text
    assert rows.count("<tr>") == 50 and "55 cases match; the newest 50 are shown." in rows
    rows = client.get("/cases/rows", params={"q": "bm-04"}, headers=htmx).text
    assert rows.count("<tr>") == 10 and "Show older cases" not in rows


def test_pages_and_the_report_write_times_in_the_labs_time_zone(settings, sessions, processed_case):
    import io
    from datetime import UTC, datetime

    from fastapi.testclient import TestClient
    from pypdf import PdfReader

    from app.cases.models import Case
    from app.main import create_app
    from app.users.models import User

    with sessions() as session:
        case = session.get(Case, processed_case)
        case.signed_at = datetime(2026, 7, 1, 12, 0, 5, tzinfo=UTC)
        case.signed_by_id = session.query(User).filter_by(name="rita").one().id
        session.commit()
    with TestClient(create_app(settings.model_copy(update={"timezone": "Europe/Berlin"}))) as berlin:
        log_in(berlin, "rita")
        assert "rita, 2026-07-01 14:00:05 CEST" in berlin.get("/cases").text
        pdf = berlin.get(f"/api/cases/{processed_case}/report.pdf")
        text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
        assert "rita at 2026-07-01 14:00 CEST" in text, text[:800]
        fhir = berlin.get(f"/api/cases/{processed_case}/fhir").json()
        report = next(e["resource"] for e in fhir["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
        assert report["issued"] in ("2026-07-01T12:00:05Z", "2026-07-01T12:00:05+00:00")  # machines keep UTC
    with TestClient(create_app(settings)) as utc:
        log_in(utc, "rita")
        assert "rita, 2026-07-01 12:00:05 UTC" in utc.get("/cases").text


def test_no_other_site_may_frame_a_page_and_nothing_is_sniffed(client, auth, page, processed_case):
    cell = client.get(f"/api/cases/{processed_case}/cells", headers=auth).json()[0]["id"]
    for path in ("/login", f"/cases/{processed_case}/review", "/cases/999", "/api/health", "/static/css/marrow.css",
                 f"/api/cells/{cell}/thumbnail", f"/api/cases/{processed_case}/report.pdf"):
        r = client.get(path)
        assert r.headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "same-origin", path


def test_a_session_left_idle_is_logged_out(client, page, settings, sessions, monkeypatch):
    import time
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from app.auth import sessions as browser_sessions
    from app.main import create_app

    start = time.time()

    def minutes_later(minutes: float) -> None:
        monkeypatch.setattr(browser_sessions, "time", SimpleNamespace(time=lambda: start + minutes * 60))

    minutes_later(29)
    assert client.get("/cases").status_code == 200  # used within 30 minutes: still logged in
    minutes_later(29 + 31)
    r = client.get("/cases", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login?next=/cases")
    monkeypatch.undo()
    assert client.get("/cases", follow_redirects=False).status_code == 303  # the session was ended

    with TestClient(create_app(settings.model_copy(update={"session_idle_minutes": 0}))) as lenient:
        log_in(lenient, "rita")
        minutes_later(5 * 60)
        assert lenient.get("/cases").status_code == 200  # 0: only the 12-hour cookie limit


def test_creating_a_case_from_the_page_keeps_the_apis_rules(client, page):
    r = client.post("/cases", data={"accession": "BM-3\tx", "csrf_token": page}, follow_redirects=False)
    assert r.status_code == 422 and "accession must be one line, without tabs or other control characters" in r.text
