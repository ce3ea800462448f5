"""Engine, sessions, the declarative base and migrations-on-start.

SQLite (the laptop default) is shared by the web and worker processes, so it runs in WAL mode
with a busy timeout; PostgreSQL needs nothing special.
"""
from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy import DateTime, MetaData, create_engine, event, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from app.errors import NotFound

T = TypeVar("T")  # a mapped class

ROOT = Path(__file__).resolve().parents[1]
SQLITE_IOERR, SQLITE_FULL = 10, 13  # sqlite3's primary result codes: "disk I/O error", "database or disk is full"
LOW_DISK_BYTES = 1024 * 1024  # less free than this beside an SQLite database that fails: its disk is full
PG_DISK_FULL = "53100"  # PostgreSQL's SQLSTATE disk_full
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


MAX_ID = 2**63 - 1  # ids are int64 in the database; a request may send any integer


def get_or_not_found(session: Session, model: type[T], row_id: int, what: str) -> T:
    """The row of `model` with this id, else NotFound. An id outside 1..MAX_ID is none, never a
    database error."""
    row = session.get(model, row_id) if 0 < row_id <= MAX_ID else None
    if row is None:
        raise NotFound(f"no {what} {row_id}")
    return row


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None and value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def driver_reason(exc: BaseException) -> str:
    """What the database driver (or the broker's) said, in one line: the innermost cause's first
    line ("database or disk is full", "connection failed: ..."), without the SQL, parameters and
    link that SQLAlchemy and kombu wrap around it."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def disk_full(exc: OperationalError, url: str) -> bool:
    """The database's disk is full: unlike a database that is restarting, no retry helps until
    an administrator frees space. PostgreSQL says so (disk_full, 53100); SQLite says so for a
    write (SQLITE_FULL), but once its WAL index cannot grow every read fails with a "disk I/O
    error" (SQLITE_IOERR_SHMSIZE), so an I/O error with the database's folder out of space
    counts too."""
    if getattr(exc.orig, "sqlstate", None) == PG_DISK_FULL:
        return True
    code = (getattr(exc.orig, "sqlite_errorcode", None) or 0) & 0xFF  # the primary code of an extended one
    if code != SQLITE_IOERR:
        return code == SQLITE_FULL
    try:
        return shutil.disk_usage(Path(make_url(url).database or ".").resolve().parent).free < LOW_DISK_BYTES
    except OSError:
        return False


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def schema_revision(session: Session) -> str | None:
    """The Alembic revision the database is at (None before the first migration)."""
    try:
        return session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except OperationalError:
        session.rollback()
        return None


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations; on PostgreSQL under an advisory lock, so web and workers starting
    together migrate once."""
    from alembic import command

    if url.startswith("sqlite"):
        db = url.split("///", 1)[-1]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        command.upgrade(alembic_config(url), revision)
        return
    engine = make_engine(url)
    try:
        try:
            conn = engine.connect()
        except OperationalError as exc:  # a wrong DATABASE_URL, or the server not up: one line, not a traceback
            shown = make_url(url).render_as_string(hide_password=True)
            raise RuntimeError(f"cannot reach the database {shown} (DATABASE_URL): {driver_reason(exc)}") from exc
        with conn:
            conn.execute(text("SELECT pg_advisory_lock(7411)"))
            try:
                command.upgrade(alembic_config(url), revision)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(7411)"))
    finally:
        engine.dispose()


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
