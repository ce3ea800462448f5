"""`marrow backup DEST`: a consistent copy of a lab's cases, cells, labels, audit trail and images,
taken while the web and the workers run.

The database first: SQLite through its online backup API, which copies a consistent snapshot
even while others write (a plain `cp` of a database in WAL mode can miss committed
transactions or copy half of one); PostgreSQL with its own `pg_dump`. Then the image storage:
every file the snapshot refers to was written before its row was committed, so it is there to
copy. Stored files are named by the hash of their content and never change, so a file already
in DEST is the same file, and a second backup into the same folder copies only what is new.
The broker's queue is not copied: a worker requeues every pending cell when it starts.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from sqlalchemy import make_url

from app.config import Settings

SQLITE_COPY = "marrow.sqlite"
POSTGRES_DUMP = "marrow.pgdump"
STORAGE_COPY = "storage"


def backup(settings: Settings, dest: Path) -> dict:
    """Copy the database and then the storage into `dest`; returns what was copied."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        database = _copy_database(settings.db_url, dest)
        copied, present, size = _copy_storage(settings.storage_path, dest / STORAGE_COPY)
    except (OSError, sqlite3.Error) as exc:  # DEST full, read-only, not a folder: say so, and that a rerun resumes
        written = getattr(exc, "filename2", None) or getattr(exc, "filename", None)  # copy2: (source, target)
        reason = f"could not write {written}: {exc.strerror}" if written and exc.strerror else str(exc)
        raise RuntimeError(f"the backup into {dest} is incomplete: {reason}. Run it again once that is fixed; "
                           f"the images already copied are kept") from exc
    return {"database": str(database), "storage": str(dest / STORAGE_COPY), "files_copied": copied,
            "bytes_copied": size, "files_already_there": present}


def _copy_database(db_url: str, dest: Path) -> Path:
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or not Path(url.database).is_file():
            raise RuntimeError(f"no database at {url.database} (MARROW_DATA_DIR or DATABASE_URL)")
        target, partial = dest / SQLITE_COPY, dest / f"{SQLITE_COPY}.partial"
        partial.unlink(missing_ok=True)
        try:
            with closing(sqlite3.connect(url.database)) as source, closing(sqlite3.connect(partial)) as copy:
                source.backup(copy)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise RuntimeError("backing up PostgreSQL needs pg_dump on PATH (the PostgreSQL client tools)")
    target, partial = dest / POSTGRES_DUMP, dest / f"{POSTGRES_DUMP}.partial"
    libpq = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    env = {**os.environ, **({"PGPASSWORD": url.password} if url.password else {})}  # not in the process list
    done = subprocess.run([pg_dump, "--format=custom", "--file", str(partial), "--dbname", libpq], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise RuntimeError(f"pg_dump failed: {reason}")
    os.replace(partial, target)
    return target


def _copy_storage(root: Path, dest: Path) -> tuple[int, int, int]:
    """(files copied, files already in dest, bytes copied). Files whose name starts with a dot
    are a write in progress or a readiness probe, not stored content."""
    copied = present = size = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        target = dest / path.relative_to(root)
        if target.exists():
            present += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            shutil.copy2(path, partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        copied += 1
        size += target.stat().st_size
    return copied, present, size
