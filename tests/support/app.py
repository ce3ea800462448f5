"""pytest plugin (tests/conftest.py registers it): the lab server in this process, for the
server, web and reliability tests. A real SQLite database and storage in a tmp dir, the real
app behind Starlette's TestClient, users with tokens, and (session-wide) a random-weights model;
plus the helpers those tests call (`make_user`, `new_case`, `upload`, `image_bytes`, ...).
Passwords are hashed at Argon2's cheapest cost in this process unless a test is marked
`lab_argon2` (`quick_password_hashing`)."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import argon2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.auth import passwords
from app.config import Settings
from app.db import make_engine, make_sessionmaker, upgrade

# Argon2 at its cheapest parameters: the same library and code path at a thousandth of the cost.
QUICK_HASHER = argon2.PasswordHasher.from_parameters(argon2.profiles.CHEAPEST)
QUICK_DUMMY_HASH = QUICK_HASHER.hash("no such account")


@pytest.fixture(autouse=True)
def quick_password_hashing(request, monkeypatch) -> None:
    """The in-process server hashes and checks passwords with QUICK_HASHER (each account a test
    makes and each login cost 0.1 s of Argon2 otherwise), except in tests marked `lab_argon2`,
    which need the product's own cost. Processes the tests start (`marrow` commands, servers)
    hash as the product does."""
    if request.node.get_closest_marker("lab_argon2") is None:
        monkeypatch.setattr(passwords, "_hasher", QUICK_HASHER)
        monkeypatch.setattr(passwords, "DUMMY_HASH", QUICK_DUMMY_HASH)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One ONNX export of the random checkpoint for the whole session."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def two_models(tmp_path, random_checkpoint) -> Path:
    """models/a (to be the configured one) and models/b: the same weights, b's card naming the
    classes in reverse order, so b's labels differ from a's wherever a said anything else than the
    middle class. Returns the models folder."""
    root = tmp_path / "models"
    for name in ("a", "b"):
        shutil.copytree(random_checkpoint, root / name, ignore=shutil.ignore_patterns(".cache"))
        card = json.loads((root / name / "model_card.json").read_text())
        card["version"] = f"it-random-{name}"
        if name == "b":
            card["classes"] = card["classes"][::-1]
        (root / name / "model_card.json").write_text(json.dumps(card))
    return root


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """An empty SQLite database at the newest schema, migrated once for the session."""
    path = tmp_path_factory.mktemp("schema") / "marrow.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def settings(tmp_path, random_checkpoint, model_cache, migrated_sqlite) -> Settings:
    """The lab server's settings on a fresh data dir whose database is a copy of `migrated_sqlite`
    (the same file `upgrade` writes, without running the migrations again for every test)."""
    s = Settings(_env_file=None, data_dir=tmp_path / "data", model_dir=random_checkpoint,
                 model_cache_dir=model_cache, batch_size=4, task_cells=3, max_request_mb=8, max_file_mb=1)
    s.data_dir.mkdir(parents=True)
    shutil.copyfile(migrated_sqlite, s.data_dir / "marrow.sqlite")
    return s


@pytest.fixture
def sessions(settings):
    engine = make_engine(settings.db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def client(settings) -> TestClient:
    from app.main import create_app

    with TestClient(create_app(settings)) as c:
        yield c


def make_user(sessions, name: str, role: str = "reviewer") -> tuple[int, str]:
    from app.auth.tokens import issue_token
    from app.users.service import create_user

    with sessions() as session:
        user = create_user(session, name, role, "a long password")
        return user.id, issue_token(session, user)


@pytest.fixture
def token(sessions) -> str:
    return make_user(sessions, "rita")[1]


@pytest.fixture
def auth(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def image_bytes(seed: int, fmt: str = "PNG", size: int = 64) -> bytes:
    """A small synthetic RGB image (distinct per seed)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def queued_tasks(broker_db: Path) -> int:
    """Tasks waiting in an embedded broker's SQLite file (0 while it or its tables do not exist)."""
    import sqlite3

    if not broker_db.exists():
        return 0
    try:
        with sqlite3.connect(broker_db) as conn:
            return conn.execute("SELECT count(*) FROM kombu_message WHERE visible = 1").fetchone()[0]
    except sqlite3.OperationalError:  # the transport has not created its tables yet
        return 0


def wait_until_queued(broker_db: Path, tasks: int, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while queued_tasks(broker_db) != tasks:
        assert time.monotonic() < deadline, f"{tasks} task(s) never reached {broker_db}"
        time.sleep(0.2)


def new_case(client, auth, accession: str = "MD-1") -> int:
    r = client.post("/api/cases", json={"accession": accession}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def upload(client, auth, case_id: int, files: list[tuple[str, bytes]]):
    return client.post(f"/api/cases/{case_id}/uploads", headers=auth,
                       files=[("files", (name, data, "application/octet-stream")) for name, data in files])


@pytest.fixture(scope="session")
def predictor(random_checkpoint, model_cache):
    from app.ml.predictor import Predictor

    return Predictor(random_checkpoint, cache_dir=model_cache)


@pytest.fixture
def real_cells(real_cells_dir) -> list[tuple[str, bytes]]:
    """Six real cells, one per class folder (NIF included)."""
    from app.bench.cells import pick_cells

    return [(p.name, p.read_bytes()) for p in pick_cells(real_cells_dir, 6)]


@pytest.fixture
def processed_case(client, auth, settings, predictor, real_cells) -> int:
    """A case whose six real cells went through the worker's processing (in this process)."""
    from app.processing.service import Processor

    case_id = new_case(client, auth)
    r = upload(client, auth, case_id, real_cells)
    ids = [x["cell_id"] for x in r.json()["accepted"]]
    assert Processor(settings, predictor).process(r.json()["upload_id"], ids) == len(real_cells)
    return case_id


def clean_env(**marrow: str) -> dict[str, str]:
    """This environment without the MarrowDiff settings the caller may have (MARROW_*,
    DATABASE_URL, BROKER_URL), plus `marrow` (e.g. MARROW_DATA_DIR=...): for a `marrow`
    process that must see only the test's settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "BROKER_URL") and not k.startswith("MARROW_")}
    return {**env, **marrow}


def run_marrow(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    """`marrow ARGS` in a process of its own on `settings`' data folder and database."""
    from app.cli import marrow_command

    env = clean_env(MARROW_DATA_DIR=str(settings.data_dir))
    if settings.database_url:
        env["MARROW_DATABASE_URL"] = settings.database_url
    return subprocess.run(marrow_command(*args), env=env, capture_output=True, text=True)
