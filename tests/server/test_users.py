"""Accounts and tokens: argon2 password hashes, hashed tokens, every route closed to anonymous."""
from __future__ import annotations

import os
import subprocess

import pytest
from sqlalchemy import select

from app.cli import marrow_command
from app.users.models import ApiToken, User
from app.users.service import create_user, set_active, verify_password

from support.app import make_user, new_case

CASE_ROUTES = ["/api/cases", "/api/cases/1", "/api/cases/1/cells", "/api/cases/1/audit", "/api/cases.csv",
               "/api/cases/1/differential.csv", "/api/cases/1/cells.csv", "/api/cells/1/image",
               "/api/cells/1/thumbnail", "/api/cells/1/gradcam", "/api/uploads/1"]


def test_anonymous_and_bad_tokens_get_nothing(client, auth):
    new_case(client, auth)
    for path in CASE_ROUTES:
        for headers in ({}, {"Authorization": "Bearer md_not-a-token"}, {"Authorization": "Basic x"}):
            r = client.get(path, headers=headers)
            assert r.status_code == 401, (path, headers, r.status_code)
            assert "MD-1" not in r.text
    assert client.patch("/api/cells/1", json={"label": "BLA"}).status_code == 401
    assert client.post("/api/cases/1/sign").status_code == 401
    assert client.get("/api/health").json() == {"status": "ok"}
    assert client.get("/api/ready").json() == {"status": "ready"}


@pytest.mark.lab_argon2
def test_passwords_and_tokens_are_stored_hashed(sessions, client):
    _, token = make_user(sessions, "adam", "admin")
    with sessions() as session:
        user = session.scalar(select(User).where(User.name == "adam"))
        # Argon2id at argon2-cffi's default cost (RFC 9106's low-memory choice)
        assert user.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert verify_password(user, "a long password") and not verify_password(user, "wrong")
        with pytest.raises(ValueError, match="already exists"):
            create_user(session, "adam", "reviewer", "another password")
        with pytest.raises(ValueError, match="role"):
            create_user(session, "eve", "root", "another password")
        stored = session.scalars(select(ApiToken.token_hash)).all()
        assert token not in stored and len(stored[0]) == 64
    assert client.get("/api/cases", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_disabled_users_token_is_refused(sessions, client):
    _, token = make_user(sessions, "dora")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/cases", headers=headers).status_code == 200
    with sessions() as session:
        set_active(session, "dora", False)
    assert client.get("/api/cases", headers=headers).status_code == 401


def test_cli_users_add_password_and_tokens(settings, client):
    env = {**os.environ, "MARROW_DATA_DIR": str(settings.data_dir), "MARROW_MODEL_DIR": str(settings.model_dir)}
    env.pop("DATABASE_URL", None)

    def marrow(*args, stdin=None):
        return subprocess.run(marrow_command(*args), input=stdin, env=env, capture_output=True, text=True, timeout=120)

    r = marrow("users", "add", "carl", "--role", "reviewer", "--password-stdin", stdin="s3cret-passphrase\n")
    assert r.returncode == 0, r.stderr
    r = marrow("users", "add", "carl", "--role", "admin", "--password-stdin", stdin="s3cret-passphrase\n")
    assert (r.returncode, r.stderr) == (2, "marrow users add: error: user 'carl' already exists\n")
    r = marrow("token", "carl")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert client.get("/api/cases", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    r = marrow("users", "password", "carl", "--password-stdin", stdin="short\n")
    assert (r.returncode, r.stderr) == (2, "marrow users password: error: password must be at least 8 characters\n")
    r = marrow("users", "password", "nobody", "--password-stdin", stdin="another passphrase\n")
    assert (r.returncode, r.stderr) == (2, "marrow users password: error: no user named 'nobody'\n")
    r = marrow("users", "password", "carl", "--password-stdin", stdin="another passphrase\n")
    assert (r.returncode, r.stdout) == (0, "new password set for carl; their browser sessions are logged out\n")
    with client.app.state.sessionmaker() as session:
        carl = session.scalar(select(User).where(User.name == "carl"))
        assert verify_password(carl, "another passphrase") and not verify_password(carl, "s3cret-passphrase")
    assert client.get("/api/cases", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    second = marrow("token", "carl").stdout.strip()
    r = marrow("token", "carl", "--revoke")
    assert (r.returncode, r.stdout) == (0, "revoked 2 API token(s) of carl\n")
    for revoked in (token, second):
        assert client.get("/api/cases", headers={"Authorization": f"Bearer {revoked}"}).status_code == 401
    token = marrow("token", "carl").stdout.strip()
    assert client.get("/api/cases", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    r = marrow("users", "disable", "carl")
    assert r.returncode == 0, r.stderr
    assert client.get("/api/cases", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    history = [line.split("\t")[1:] for line in marrow("users", "history").stdout.splitlines()]
    assert history == [["carl", "account disabled", "-", "command line"],
                       ["carl", "API token issued", "-", "command line"],
                       ["carl", "API tokens revoked (tokens 2)", "-", "command line"],
                       ["carl", "API token issued", "-", "command line"],
                       ["carl", "password set", "-", "command line"],
                       ["carl", "API token issued", "-", "command line"],
                       ["carl", "account created (role reviewer)", "-", "command line"]]
    assert len(marrow("users", "history", "--limit", "2").stdout.splitlines()) == 2
