"""Passwords after the first login: one's own change, an administrator's reset, and the browser
sessions each one ends."""
from __future__ import annotations

import re

from fastapi.testclient import TestClient

from support.app import make_user

from .conftest import csrf_of, log_in

NEW = "a new long password"


def change(http, csrf: str, current: str, password: str, password2: str | None = None):
    return http.post("/account/password", data={"current": current, "password": password,
                                                "password2": password2 or password, "csrf_token": csrf})


def test_user_changes_own_password_and_other_sessions_end(client, page):
    laptop = TestClient(client.app)  # rita's second browser, logged in before the change
    log_in(laptop, "rita")
    assert laptop.get("/cases").status_code == 200
    r = client.get("/account")
    assert r.status_code == 200 and "Change your password" in r.text and 'href="/account"' in r.text

    for current, password, password2, code, message in (
            ("wrong password", NEW, NEW, 403, "the current password is wrong"),
            ("a long password", NEW, NEW + "!", 422, "the two new passwords differ"),
            ("a long password", "short", "short", 422, "at least 8 characters"),
            ("a long password", "a long password", "a long password", 422, "is the current one")):
        r = change(client, page, current, password, password2)
        assert (r.status_code, message in r.text) == (code, True), r.text
    assert laptop.get("/cases").status_code == 200  # nothing changed yet

    r = change(client, page, "a long password", NEW)
    assert r.status_code == 200 and "password changed; your other sessions are logged out" in r.text
    assert client.get("/cases").status_code == 200  # this session goes on
    r = laptop.get("/cases", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login?next=/cases")
    r = laptop.post("/login", data={"name": "rita", "password": "a long password", "csrf_token": csrf_of(laptop)})
    assert r.status_code == 401
    log_in(laptop, "rita", NEW)


def test_changing_a_password_is_rate_limited_like_logging_in(client, page):
    # The login limit's window: 10 tries a minute per address and name, rita's login being the first.
    codes = [change(client, page, f"guess {i}", NEW).status_code for i in range(9)]
    assert codes == [403] * 9
    r = change(client, page, "a long password", NEW)
    assert r.status_code == 429 and "too many password attempts" in r.text


def test_admin_sets_a_forgotten_password(client, sessions):
    make_user(sessions, "ada", "admin")
    bob = TestClient(client.app)
    make_user(sessions, "bob")
    log_in(bob, "bob")
    headers = {"HX-Request": "true", "X-CSRF-Token": log_in(client, "ada")}
    assert 'hx-post="/admin/users/bob/password"' in client.get("/admin/users").text

    r = client.post("/admin/users/bob/password", data={"password": "short"}, headers=headers)
    assert r.status_code == 422 and "at least 8 characters" in r.text
    r = client.post("/admin/users/ada/password", data={"password": NEW}, headers=headers)
    assert r.status_code == 409 and "under Account" in r.text
    r = client.post("/admin/users/nobody/password", data={"password": NEW}, headers=headers)
    assert r.status_code == 404 and "no user named &#39;nobody&#39;" in r.text
    assert bob.get("/cases").status_code == 200

    r = client.post("/admin/users/bob/password", data={"password": NEW}, headers=headers)
    assert r.status_code == 200 and "new password set for bob; their browser sessions are logged out" in r.text
    assert bob.get("/cases", follow_redirects=False).status_code == 303
    log_in(bob, "bob", NEW)
    assert bob.get("/cases").status_code == 200


def test_reviewer_cannot_set_passwords(client, sessions, htmx):
    make_user(sessions, "bob")
    r = client.post("/admin/users/bob/password", data={"password": NEW}, headers=htmx)
    assert r.status_code == 403


def test_the_users_page_lists_the_accounts_history(client, sessions):
    make_user(sessions, "ada", "admin")
    make_user(sessions, "rita")
    for name in ("rita", "zed-typo"):
        r = client.post("/login", data={"name": name, "password": "wrong password", "csrf_token": csrf_of(client)})
        assert r.status_code == 401
    headers = {"HX-Request": "true", "X-CSRF-Token": log_in(client, "ada")}
    client.post("/admin/users", data={"name": "bob", "role": "reviewer", "password": "a long password"},
                headers=headers)
    client.post("/admin/users/bob/active", data={"active": "false"}, headers=headers)
    page = client.post("/admin/users/bob/password", data={"password": NEW}, headers=headers).text

    table = page.split("Account history")[1]
    rows = [re.sub(r"<[^>]+>", "|", row) for row in re.findall(r"<tr[^>]*>\s*<td>.*?</tr>", table, re.S)]
    events = [[c.strip() for c in row.split("|") if c.strip()][1:] for row in rows]  # without the time
    assert events[:6] == [["bob", "password set", "ada", "testclient"],
                          ["bob", "account disabled", "ada", "testclient"],
                          ["bob", "account created (role reviewer)", "ada", "testclient"],
                          ["ada", "logged in", "ada", "testclient"],
                          ["—", "failed login", "—", "testclient"],
                          ["rita", "failed login", "—", "testclient"]]
    assert "zed-typo" not in page  # a name nobody has may be a password typed into the wrong field
    rita = TestClient(client.app)
    log_in(rita, "rita")
    own = rita.get("/account").text.split("latest events")[1]
    assert re.findall(r"<tr><td>[^<]*</td><td>([^<]*)</td>", own) == [
        "logged in", "failed login", "API token issued", "account created (role reviewer)"]  # rita's only
