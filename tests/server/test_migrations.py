"""Migrations upgrade an empty database to head, match the models, and downgrade again."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import app.models  # noqa: F401
from app.db import Base, downgrade, make_engine, make_sessionmaker, upgrade
from app.users import service as users


def test_upgrade_matches_models_and_downgrades(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) >= {
            "users", "api_tokens", "cases", "uploads", "cells", "predictions", "audit_events"}
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    downgrade(url)
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == ["alembic_version"]
    upgrade(url)  # and up again
    engine.dispose()


@pytest.mark.parametrize("table", ["audit_events", "account_events"])
def test_audit_logs_are_append_only(tmp_path, table):
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (name, role, password_hash, active, created_at) "
                             "VALUES ('u', 'admin', 'x', 1, CURRENT_TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO cases (accession, specimen, note, created_at) "
                             "VALUES ('A', 'bone marrow', '', CURRENT_TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO audit_events (case_id, action, at) VALUES (1, 'upload', CURRENT_TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO account_events (user_id, action, at) VALUES (1, 'login', CURRENT_TIMESTAMP)"))
    for sql in (f"UPDATE {table} SET action = 'sign'", f"DELETE FROM {table}"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(sql))
    engine.dispose()


def test_a_database_with_users_is_past_its_first_run_after_upgrade(tmp_path):
    """0002 adds the first-run marker; a lab already using MarrowDiff keeps /setup closed."""
    url = f"sqlite:///{tmp_path / 'u.sqlite'}"
    upgrade(url, "0001")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (name, role, password_hash, active, created_at) "
                             "VALUES ('ada', 'admin', 'x', 1, CURRENT_TIMESTAMP)"))
    upgrade(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id, admin_id FROM first_run")).all() == [(1, 1)]
    with make_sessionmaker(engine)() as session, pytest.raises(users.SetupDone):
        users.create_first_admin(session, "eve", "a long password")
    engine.dispose()


@pytest.mark.parametrize("command", ["web", "worker"])
def test_an_unreachable_database_is_one_line_naming_it_without_its_password(command, tmp_path):
    """A wrong DATABASE_URL (or PostgreSQL not up yet) stops `marrow web` / `worker` at start
    with the URL, its password hidden, and the driver's reason: exit 2, no traceback."""
    import os
    import subprocess

    from app.bench.servers import free_port
    from app.cli import marrow_command

    port = free_port()  # nothing listens on it
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARROW_") and k != "BROKER_URL"}
    env.update(MARROW_DATA_DIR=str(tmp_path), DATABASE_URL=f"postgresql+psycopg://marrow:s3cret@127.0.0.1:{port}/marrow")
    r = subprocess.run(marrow_command(command), env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith(f"marrow {command}: error: cannot reach the database "
                               f"postgresql+psycopg://marrow:***@127.0.0.1:{port}/marrow (DATABASE_URL): "
                               f"connection failed"), r.stderr
    assert "s3cret" not in r.stderr and "Traceback" not in r.stderr
