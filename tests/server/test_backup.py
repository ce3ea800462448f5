"""`marrow backup DEST`: a copy of a lab's records and images that runs as the lab did, and a
second backup into the same folder copies only what is new; PostgreSQL through pg_dump."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from fastapi.testclient import TestClient

from app.backup import POSTGRES_DUMP, backup
from app.config import Settings
from app.db import make_engine, make_sessionmaker, upgrade
from app.main import create_app
from app.users.models import User
from app.users.service import create_user
from support.app import run_marrow


def _marrow_backup(settings: Settings, dest) -> dict:
    done = run_marrow(settings, "backup", str(dest))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_backup_runs_as_the_lab_did_and_the_next_copies_only_what_is_new(client, auth, processed_case, settings,
                                                                           tmp_path):
    cells = client.get(f"/api/cases/{processed_case}/cells", headers=auth).json()
    assert client.patch(f"/api/cells/{cells[0]['id']}", json={"label": "PLM"}, headers=auth).status_code == 200
    assert client.post(f"/api/cases/{processed_case}/sign", headers=auth).status_code == 200
    stored = [p for p in settings.storage_path.rglob("*") if p.is_file()]
    dest = tmp_path / "backup"

    first = _marrow_backup(settings, dest)
    assert (first["files_copied"], first["files_already_there"]) == (len(stored), 0)
    assert first["bytes_copied"] == sum(p.stat().st_size for p in stored)
    # The backup folder is a data folder: the lab's server started on it shows the same case.
    restored = Settings(_env_file=None, data_dir=dest, model_dir=settings.model_dir,
                        model_cache_dir=settings.model_cache)
    with TestClient(create_app(restored)) as copy:
        for path in (f"/api/cases/{processed_case}", f"/api/cases/{processed_case}/audit",
                     f"/api/cases/{processed_case}/cells"):
            assert copy.get(path, headers=auth).json() == client.get(path, headers=auth).json(), path
        for cell in cells:
            thumbnail = f"/api/cells/{cell['id']}/thumbnail"
            assert copy.get(thumbnail, headers=auth).content == client.get(thumbnail, headers=auth).content

    second = _marrow_backup(settings, dest)
    assert (second["files_copied"], second["files_already_there"]) == (0, len(stored))


def test_a_backup_that_cannot_write_says_where_and_that_running_it_again_resumes(settings, tmp_path):
    blocked = tmp_path / "backup"
    blocked.write_text("not a folder")  # a full or read-only disk is refused the same way
    with pytest.raises(RuntimeError) as err:
        backup(settings, blocked)
    assert str(err.value) == (f"the backup into {blocked} is incomplete: could not write {blocked}: File exists. "
                              f"Run it again once that is fixed; the images already copied are kept")


def test_postgres_is_backed_up_with_pg_dump(fresh_postgres_url, postgres_cluster, tmp_path):
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore not on PATH (scripts/test.sh installs postgresql)")
    upgrade(fresh_postgres_url)
    engine = make_engine(fresh_postgres_url)
    with make_sessionmaker(engine)() as session:
        create_user(session, "rita", "reviewer", "a long password")
    engine.dispose()
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", database_url=fresh_postgres_url)
    settings.storage_path.mkdir(parents=True)
    report = backup(settings, tmp_path / "backup")
    assert report["database"] == str(tmp_path / "backup" / POSTGRES_DUMP)

    target = postgres_cluster.createdb("marrow_restored")
    libpq = target.replace("postgresql+psycopg://", "postgresql://")
    done = subprocess.run(["pg_restore", "--dbname", libpq, report["database"]], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    engine = make_engine(target)
    with make_sessionmaker(engine)() as session:
        assert [u.name for u in session.query(User)] == ["rita"]
    engine.dispose()
