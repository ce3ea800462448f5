"""Crashes and restarts of real processes: a SIGKILLed worker (two workers on one Redis queue,
production mode on PostgreSQL), a SIGKILLed web process in the middle of an upload, and a full
stop and restart. Every cell is counted exactly once. (tests/server/test_worker.py does the
SIGKILL on the embedded broker with six cells.)"""
from __future__ import annotations

import hashlib
import signal
import threading
import time

import httpx
from sqlalchemy import func, select

from app.bench.cells import pick_cells
from app.cases.models import Upload
from app.cells.models import Cell, Prediction

from .conftest import Stack


def _files(paths) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def _db_counts(stack: Stack, case_id: int) -> dict[str, int]:
    with stack.sessions() as s:
        in_case = Cell.case_id == case_id
        return {
            "cells": s.scalar(select(func.count()).select_from(Cell).where(in_case)),
            "distinct_images": s.scalar(select(func.count(func.distinct(Cell.sha256))).where(in_case)),
            "predictions": s.scalar(select(func.count()).select_from(Prediction).join(Cell).where(in_case)),
            "predicted_cells": s.scalar(select(func.count(func.distinct(Prediction.cell_id))).join(Cell)
                                        .where(in_case)),
            "uploads": s.scalar(select(func.count()).select_from(Upload).where(Upload.case_id == case_id)),
        }


def test_worker_sigkilled_mid_upload_two_workers_one_queue(pg_stack, real_cells_dir):
    """200 cells, two workers on Redis; one is SIGKILLed mid-way and a new one started (which
    requeues every pending cell, so the survivors race on duplicates): 200 cells, 200 predictions."""
    n = 200
    pg_stack.start_web()
    first, second = pg_stack.start_workers("worker-a", "worker-b")
    with pg_stack.api() as api:
        case_id = api.post("/api/cases", json={"accession": "KILL-1"}).json()["id"]
        r = api.post(f"/api/cases/{case_id}/uploads", files=_files(pick_cells(real_cells_dir, n)))
        assert r.status_code == 202 and len(r.json()["accepted"]) == n, r.text

        def processed() -> int:
            return api.get(f"/api/cases/{case_id}").json()["cells_processed"]

        deadline = time.monotonic() + 120
        while processed() < 20:
            assert time.monotonic() < deadline, pg_stack.logs()
            time.sleep(0.2)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        assert processed() < n, "everything was done before the kill: raise n"
        pg_stack.start_workers("worker-c")
        case = pg_stack.wait_processed(case_id, n)
        assert sum(case["counts"].values()) == n and case["status"] == "ready"
        upload = api.get(f"/api/uploads/{r.json()['upload_id']}").json()
        assert (upload["status"], upload["cells_total"], upload["cells_done"]) == ("done", n, n)
    assert _db_counts(pg_stack, case_id) == {"cells": n, "distinct_images": n, "predictions": n,
                                             "predicted_cells": n, "uploads": 1}
    assert second.alive(), second.tail()


def test_web_sigkilled_mid_upload_leaves_nothing_counted(stack, real_cells_dir):
    n = 300
    cells = _files(pick_cells(real_cells_dir, n))
    web = stack.start_web()
    images = stack.data_dir / "storage" / "images"
    with stack.api() as api:
        case_id = api.post("/api/cases", json={"accession": "KILL-WEB"}).json()["id"]
    outcome: dict = {}

    def send() -> None:
        try:
            with stack.api() as api:
                outcome["response"] = api.post(f"/api/cases/{case_id}/uploads", files=cells)
        except httpx.TransportError as exc:
            outcome["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 60
    while not (images.is_dir() and sum(1 for _ in images.rglob("*")) > 20):  # mid-way through storing
        assert time.monotonic() < deadline and sender.is_alive(), (outcome, web.tail())
        time.sleep(0.005)
    web.proc.send_signal(signal.SIGKILL)
    web.proc.wait(10)
    sender.join(30)
    assert "error" in outcome, f"the upload finished before the kill: {outcome}"
    orphans = [p for p in images.rglob("*") if p.is_file()]
    assert orphans, "the kill came before any file was stored"

    stack.start_web("web-restarted")
    with stack.api() as api:
        case = api.get(f"/api/cases/{case_id}").json()
        assert (case["cells_total"], case["status"]) == (0, "empty"), case
        assert api.get(f"/api/cases/{case_id}/cells").json() == []
        assert [e["action"] for e in api.get(f"/api/cases/{case_id}/audit").json()] == []
        assert _db_counts(stack, case_id)["uploads"] == 0

        r = api.post(f"/api/cases/{case_id}/uploads", files=cells)
        assert r.status_code == 202 and len(r.json()["accepted"]) == n, r.text
        assert not any(x["duplicate"] for x in r.json()["accepted"])
        assert api.get(f"/api/cases/{case_id}").json()["cells_total"] == n
    with stack.sessions() as s:
        stored = s.execute(select(Cell.sha256, Cell.image_path).where(Cell.case_id == case_id)).all()
    assert len(stored) == n
    for digest, key in stored:  # files written before the kill are whole (temp file + rename)
        assert hashlib.sha256((stack.data_dir / "storage" / key).read_bytes()).hexdigest() == digest


def _snapshot(api: httpx.Client) -> dict:
    """Everything a reviewer could see, images as hashes."""
    out = {"cases": api.get("/api/cases").json(), "cases.csv": api.get("/api/cases.csv").text}
    for case in out["cases"]:
        cid = case["id"]
        cells = api.get(f"/api/cases/{cid}/cells").json()
        out[cid] = {"cells": cells, "audit": api.get(f"/api/cases/{cid}/audit").json(),
                    "csv": api.get(f"/api/cases/{cid}/cells.csv").text,
                    "files": {(c["id"], kind): hashlib.sha256(api.get(f"/api/cells/{c['id']}/{kind}").content).hexdigest()
                              for c in cells for kind in ("image", "thumbnail", "gradcam")}}
    return out


def test_stop_and_restart_everything_keeps_everything(stack, real_cells_dir):
    """`marrow run` (web, worker, SQLite database, embedded broker) stopped with Ctrl-C, once
    with cells still queued, and started again: nothing is lost, the queued cells finish; a
    second stop and start shows the same cases, labels, audit, CSV and image bytes."""
    paths = pick_cells(real_cells_dir, 24)
    stack.start_web("run-1", command="run")
    with stack.api() as api:
        signed = api.post("/api/cases", json={"accession": "KEEP-1"}).json()["id"]
        api.post(f"/api/cases/{signed}/uploads", files=_files(paths[:8]))
        stack.wait_processed(signed, 8)
        cells = api.get(f"/api/cases/{signed}/cells").json()
        for cell, label in zip(cells, ("BLA", "NIF")):
            assert api.patch(f"/api/cells/{cell['id']}", json={"label": label, "version": cell["version"]}
                             ).status_code == 200
        assert api.post(f"/api/cases/{signed}/sign").status_code == 200
        queued = api.post("/api/cases", json={"accession": "KEEP-2"}).json()["id"]
        assert api.post(f"/api/cases/{queued}/uploads", files=_files(paths[8:])).status_code == 202
    stack.web.proc.send_signal(signal.SIGINT)
    assert stack.web.proc.wait(90) == 0, stack.web.tail()

    stack.start_web("run-2", command="run")
    stack.wait_processed(queued, 16)
    with stack.api() as api:
        before = _snapshot(api)
        assert [e["action"] for e in before[signed]["audit"]] == ["upload", "label", "label", "sign"]
    stack.web.proc.send_signal(signal.SIGINT)
    assert stack.web.proc.wait(90) == 0, stack.web.tail()

    stack.start_web("web-3")  # reading needs no worker
    with stack.api() as api:
        after = _snapshot(api)
    assert after == before
    assert len(after[signed]["files"]) == 3 * 8 and len(after[queued]["cells"]) == 16
