"""PostgreSQL and Redis themselves stopped and started again (same port, same data) under a
running `marrow web` and `marrow worker` (production mode), neither of them restarted.

- PostgreSQL down: the web stays up; /api/health answers 200 (liveness: it reads no data),
  /api/ready and every API call a prompt 503 "the database is unavailable; try again in a
  moment"; the worker's task in progress when the database went is retried. Back: the API works again, and every cell,
  those of the interrupted task and a new upload's, ends up with exactly one prediction.
- Redis (the broker) down: reading works and an upload is accepted (202): its cells are saved
  and wait. Back (empty: it keeps no data, so queued messages are lost too): the worker
  reconnects and requeues the pending cells, and every cell, those queued before the outage,
  those accepted during it and a new upload's, ends up with exactly one prediction.
"""
from __future__ import annotations

import time
from pathlib import Path

import httpx
from support.servers import Restartable

from app.bench.cells import pick_cells
from app.bench.servers import wait_for

from .conftest import Stack
from .test_crashes import _db_counts, _files

PROMPT_S = 5  # what "answers at once" means for a request made while a server is down
TIMEOUT_S = 30  # a request that hangs fails here instead of hanging the test


def _upload(api: httpx.Client, case_id: int, paths: list[Path]) -> httpx.Response:
    return api.post(f"/api/cases/{case_id}/uploads", files=_files(paths))


def _timed(call) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = call()
    return response, time.monotonic() - start


def _all_predicted_once(stack: Stack, cases: dict[int, int]) -> None:
    """Each case (id -> cells) fully processed: one cell per image, one prediction per cell."""
    for case_id, n in cases.items():
        stack.wait_processed(case_id, n)
        assert _db_counts(stack, case_id) == {"cells": n, "distinct_images": n, "predictions": n,
                                              "predicted_cells": n, "uploads": 1}, case_id


def test_postgres_restarted_under_running_web_and_worker(pg_stack: Stack, postgres_server: Restartable,
                                                         real_cells_dir):
    paths = pick_cells(real_cells_dir, 24)
    web = pg_stack.start_web()
    worker, = pg_stack.start_workers("worker")
    with pg_stack.api(timeout=TIMEOUT_S) as api:
        interrupted = api.post("/api/cases", json={"accession": "PG-DOWN-1"}).json()["id"]
        assert _upload(api, interrupted, paths[:16]).status_code == 202
        wait_for(lambda: "received" in worker.tail(), 30, "the worker taking the upload's task", interval=0.02)
        with postgres_server.down():
            health, took = _timed(lambda: api.get("/api/health"))
            assert (health.status_code, health.json(), took < PROMPT_S) == (200, {"status": "ok"}, True)
            for call in (lambda: api.get("/api/ready"),
                         lambda: api.get(f"/api/cases/{interrupted}"),
                         lambda: api.post("/api/cases", json={"accession": "PG-DOWN-2"}),
                         lambda: _upload(api, interrupted, paths[16:])):
                r, took = _timed(call)
                assert r.status_code == 503, (r.status_code, r.text)
                assert r.json() == {"detail": "the database is unavailable; try again in a moment"}
                assert took < PROMPT_S, took
            wait_for(lambda: "retry" in worker.tail(), 30, "the worker's task meeting the database down")
            assert web.alive() and worker.alive(), pg_stack.logs()
        assert api.get(f"/api/cases/{interrupted}").status_code == 200
        assert api.get("/api/ready").json() == {"status": "ready"}
        after = api.post("/api/cases", json={"accession": "PG-BACK"}).json()["id"]
        r = _upload(api, after, paths[16:])
        assert r.status_code == 202 and len(r.json()["accepted"]) == 8, r.text
    _all_predicted_once(pg_stack, {interrupted: 16, after: 8})


def test_redis_restarted_under_running_web_and_worker(pg_stack: Stack, redis_server: Restartable,
                                                      real_cells_dir):
    paths = pick_cells(real_cells_dir, 56)
    web = pg_stack.start_web()
    worker, = pg_stack.start_workers("worker")
    with pg_stack.api(timeout=TIMEOUT_S) as api:
        before, during, after = (api.post("/api/cases", json={"accession": a}).json()["id"]
                                 for a in ("REDIS-BEFORE", "REDIS-DOWN", "REDIS-BACK"))
        assert _upload(api, before, paths[:32]).status_code == 202  # two tasks of 16 cells
        with redis_server.down():
            assert api.get("/api/health").status_code == 200
            assert api.get(f"/api/cases/{before}").status_code == 200
            r, took = _timed(lambda: _upload(api, during, paths[32:48]))
            assert r.status_code == 202 and len(r.json()["accepted"]) == 16, r.text
            assert took < PROMPT_S, took
            upload = api.get(f"/api/uploads/{r.json()['upload_id']}").json()
            assert (upload["status"], upload["cells_done"]) == ("queued", 0), upload
            assert web.alive() and worker.alive(), pg_stack.logs()
        r = _upload(api, after, paths[48:])
        assert r.status_code == 202 and len(r.json()["accepted"]) == 8, r.text
    _all_predicted_once(pg_stack, {before: 32, during: 16, after: 8})
