"""Concurrency on the production database (PostgreSQL, real `marrow web`): two reviewers
relabelling the same cells at the same instant, two uploads into one case at once. In-process,
each on SQLite and on PostgreSQL: sign-off racing relabels, an upload racing a sign-off, two
workers saving the last cells of one upload at once, first-run setups submitted at the same
instant. Elsewhere: the page's answer to a stale relabel ("was changed by NAME at ...", 409)
in tests/web/test_fragments.py::test_relabel_undo_conflict_and_lock; two workers on one queue
in test_crashes.py::test_worker_sigkilled_mid_upload_two_workers_one_queue."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from app.processing.service import Processor

from support.app import make_user

from .conftest import Stack
from .corpus import image

N_CELLS = 12


@dataclass
class InProcess:
    """The app in this process (TestClient) on a fresh database, its sessions and a processor."""

    client: TestClient
    sessions: sessionmaker
    processor: Processor


@pytest.fixture(params=["sqlite", "postgresql"])
def in_process(request, tmp_path, random_checkpoint, model_cache, postgres_cluster) -> InProcess:
    """SQLite has no row locks and PostgreSQL runs transactions side by side: both are raced."""
    import secrets

    from app.config import Settings
    from app.db import make_engine, make_sessionmaker, upgrade
    from app.main import create_app
    from app.ml.predictor import Predictor

    db = (None if request.param == "sqlite"
          else postgres_cluster.createdb(f"marrow_race_{secrets.token_hex(4)}"))
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", model_dir=random_checkpoint,
                        model_cache_dir=model_cache, database_url=db, batch_size=4, task_cells=3)
    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    with TestClient(create_app(settings)) as client:
        yield InProcess(client, make_sessionmaker(engine),
                        Processor(settings, Predictor(random_checkpoint, cache_dir=model_cache)))
    engine.dispose()


def _at_once(*calls):
    """Runs the calls in threads released together by a barrier; returns their results."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _token(stack: Stack, name: str) -> dict[str, str]:
    from app.auth.tokens import issue_token
    from app.users.service import create_user

    with stack.sessions() as s:
        return {"Authorization": f"Bearer {issue_token(s, create_user(s, name, 'reviewer', 'a long password'))}"}


def _upload(api: httpx.Client, case_id: int, seeds) -> httpx.Response:
    return api.post(f"/api/cases/{case_id}/uploads", files=[("files", (f"c{i}.png", image(i))) for i in seeds])


def test_two_reviewers_relabel_the_same_cells_at_once(pg_stack):
    pg_stack.start_web()
    ann, bob = _token(pg_stack, "ann"), _token(pg_stack, "bob")
    with pg_stack.api() as api, httpx.Client(base_url=pg_stack.url, timeout=60) as raw:
        case_id = api.post("/api/cases", json={"accession": "RACE-1"}).json()["id"]
        assert _upload(api, case_id, range(N_CELLS)).status_code == 202
        cells = api.get(f"/api/cases/{case_id}/cells").json()
        winners = {}
        for cell in cells:
            url, version = f"/api/cells/{cell['id']}", cell["version"]
            a, b = _at_once(*(partial(raw.patch, url, headers=who, json={"label": label, "version": version})
                              for who, label in ((ann, "BLA"), (bob, "MON"))))
            assert sorted([a.status_code, b.status_code]) == [200, 409], (a.text, b.text)
            loser = a if a.status_code == 409 else b
            assert "changed" in loser.json()["detail"] and "reload" in loser.json()["detail"]
            winners[cell["id"]] = ("ann", "BLA") if a.status_code == 200 else ("bob", "MON")
        final = {c["id"]: c["label"] for c in api.get(f"/api/cases/{case_id}/cells").json()}
        assert final == {cid: label for cid, (_, label) in winners.items()}
        audit = [(e["cell_id"], e["user"], e["to"]) for e in api.get(f"/api/cases/{case_id}/audit").json()
                 if e["action"] == "label"]
        assert sorted(audit) == sorted((cid, who, label) for cid, (who, label) in winners.items())


def test_two_uploads_into_one_case_at_once(pg_stack):
    """Overlapping batches (each image in both): every image is one cell, nothing fails."""
    pg_stack.start_web()
    with pg_stack.api() as api, httpx.Client(base_url=pg_stack.url, headers=pg_stack.headers, timeout=60) as other:
        case_id = api.post("/api/cases", json={"accession": "RACE-2"}).json()["id"]
        first, second = _at_once(lambda: _upload(api, case_id, range(40)),
                                 lambda: _upload(other, case_id, range(20, 60)))
        assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
        ids = {x["cell_id"] for r in (first, second) for x in r.json()["accepted"]}
        case = api.get(f"/api/cases/{case_id}").json()
        assert len(ids) == case["cells_total"] == 60
        assert len(api.get(f"/api/cases/{case_id}/cells").json()) == 60
        uploads = [e["detail"]["new_cells"] for e in api.get(f"/api/cases/{case_id}/audit").json()]
        assert sum(uploads) == 60


def test_sign_off_racing_relabels(in_process):
    """Sign-off and relabels at the same moment: every relabel either lands before the
    signature in the audit log or is refused; none after it."""
    client = in_process.client
    _, token = make_user(in_process.sessions, "sam", "admin")
    auth = {"Authorization": f"Bearer {token}"}
    case_id = client.post("/api/cases", json={"accession": "RACE-3"}, headers=auth).json()["id"]
    r = client.post(f"/api/cases/{case_id}/uploads", headers=auth,
                    files=[("files", (f"c{i}.png", image(i))) for i in range(8)])
    in_process.processor.process(r.json()["upload_id"], [x["cell_id"] for x in r.json()["accepted"]])
    cells = client.get(f"/api/cases/{case_id}/cells", headers=auth).json()
    calls = [lambda: client.post(f"/api/cases/{case_id}/sign", headers=auth)]
    calls += [lambda c=c: client.patch(f"/api/cells/{c['id']}", headers=auth,
                                       json={"label": "NIF", "version": c["version"]}) for c in cells]
    sign, *relabels = _at_once(*calls)
    assert sign.status_code == 200
    assert all(r.status_code in (200, 409) for r in relabels)
    refused = [r for r in relabels if r.status_code == 409]
    assert all("signed" in r.json()["detail"] for r in refused)
    actions = [e["action"] for e in client.get(f"/api/cases/{case_id}/audit", headers=auth).json()]
    assert actions[-1] == "sign" and actions.count("label") == len(relabels) - len(refused)
    late = client.patch(f"/api/cells/{cells[0]['id']}", headers=auth, json={"label": "BLA"})
    assert late.status_code == 409 and "signed and locked" in late.json()["detail"]


def test_upload_racing_sign_off(in_process):
    """An upload and a sign-off of the same case at the same moment, six times: either the
    signature wins and the upload is refused with nothing added, or the upload wins and the
    sign-off is refused because its cells are still processing. Never a signed case with
    cells added or still pending."""
    client, processor = in_process.client, in_process.processor
    _, token = make_user(in_process.sessions, "sue", "admin")
    auth = {"Authorization": f"Bearer {token}"}
    for attempt in range(6):
        case_id = client.post("/api/cases", json={"accession": f"RACE-4-{attempt}"}, headers=auth).json()["id"]
        first = client.post(f"/api/cases/{case_id}/uploads", headers=auth,
                            files=[("files", (f"c{i}.png", image(i))) for i in range(4)]).json()
        processor.process(first["upload_id"], [x["cell_id"] for x in first["accepted"]])
        more = [("files", (f"d{i}.png", image(100 + i))) for i in range(4)]
        upload, sign = _at_once(lambda: client.post(f"/api/cases/{case_id}/uploads", headers=auth, files=more),
                                lambda: client.post(f"/api/cases/{case_id}/sign", headers=auth))
        case = client.get(f"/api/cases/{case_id}", headers=auth).json()
        if sign.status_code == 200:
            assert upload.status_code == 409 and "signed" in upload.json()["detail"], upload.text
            assert (case["cells_total"], case["cells_processed"]) == (4, 4), case
        else:
            assert sign.status_code == 409 and "still processing" in sign.json()["detail"], sign.text
            assert upload.status_code == 202 and len(upload.json()["accepted"]) == 4, upload.text
            assert case["cells_total"] == 8 and case["signed_at"] is None, case


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_simultaneous_first_run_setups_make_one_administrator(backend, tmp_path, postgres_cluster):
    """Four browsers submitting /setup at once on an empty database: one administrator, the
    other three told setup is done (a plain "no users yet?" check let all four in)."""
    import secrets

    from app.db import make_engine, make_sessionmaker, upgrade
    from app.users import service as users

    url = (f"sqlite:///{tmp_path / 'first.sqlite'}" if backend == "sqlite"
           else postgres_cluster.createdb(f"marrow_first_{secrets.token_hex(4)}"))
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)

    def setup(name: str):
        with sessions() as session:
            try:
                return users.create_first_admin(session, name, "a long password").name
            except users.SetupDone:
                return "refused"

    # two of them even pick the same name
    outcome = _at_once(*(partial(setup, name) for name in ("ada", "ada", "grace", "mary")))
    with sessions() as session:
        accounts = [(u.name, u.role) for u in users.list_users(session)]
    engine.dispose()
    assert sorted(outcome).count("refused") == 3, outcome
    assert accounts == [(next(o for o in outcome if o != "refused"), "admin")]


def test_two_workers_finishing_one_upload_at_once_complete_it(in_process):
    """The last cells of one upload saved by two workers at the same moment (one transaction
    still open while the other counts): the upload ends `done` with every cell counted, not
    `processing` one batch short, which kept the progress bar running for good."""
    from sqlalchemy import update

    from app.cases.models import Upload
    from app.cells.models import Cell, CellStatus
    from app.processing.service import _refresh_upload

    client = in_process.client
    _, token = make_user(in_process.sessions, "wes", "admin")
    auth = {"Authorization": f"Bearer {token}"}
    case_id = client.post("/api/cases", json={"accession": "RACE-5"}, headers=auth).json()["id"]
    body = client.post(f"/api/cases/{case_id}/uploads", headers=auth,
                       files=[("files", (f"c{i}.png", image(i))) for i in range(2)]).json()
    upload_id, (first, second) = body["upload_id"], [x["cell_id"] for x in body["accepted"]]

    def finish(session, cell_id: int) -> None:  # what a worker's last transaction does
        session.execute(update(Cell).where(Cell.id == cell_id).values(status=CellStatus.DONE))
        _refresh_upload(session, upload_id)

    with in_process.sessions() as one, in_process.sessions() as two:
        finish(one, first)

        def other_worker() -> None:
            finish(two, second)
            two.commit()

        thread = threading.Thread(target=other_worker)
        thread.start()
        thread.join(0.5)  # by now it waits on the first worker's transaction
        one.commit()
        thread.join(30)
    with in_process.sessions() as s:
        upload = s.get(Upload, upload_id)
        assert (upload.status, upload.cells_done, upload.cells_total) == ("done", 2, 2)
