"""Migrations upgrade an empty database to head, match the models, and downgrade again."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import app.models  # noqa: F401
from app.db import Base, downgrade, make_engine, upgrade


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


def test_audit_log_is_append_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (name, role, password_hash, active, created_at) "
                             "VALUES ('u', 'admin', 'x', 1, CURRENT_TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO cases (accession, specimen, note, created_at) "
                             "VALUES ('A', 'bone marrow', '', CURRENT_TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO audit_events (case_id, action, at) VALUES (1, 'upload', CURRENT_TIMESTAMP)"))
    for sql in ("UPDATE audit_events SET action = 'sign'", "DELETE FROM audit_events"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(sql))
    engine.dispose()
