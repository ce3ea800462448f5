"""GET /api/model-info: the configured model and, per worker, the backend it chose, its
precision and the load-time check (written by the worker, read by the web process)."""
from __future__ import annotations

import os
import time

from app.processing.runtime import (FORGET_S, forget_gone, live_workers, read_reports, remove_report,
                                    start_heartbeat, write_report)

from support.app import image_bytes, new_case, upload
from web.conftest import log_in


def test_model_info_shows_what_each_worker_runs(client, auth, settings, predictor):
    assert client.get("/api/model-info").status_code == 401
    body = client.get("/api/model-info", headers=auth).json()
    assert body["workers"] == [] and body["backend_setting"] == settings.backend
    assert body["version"] == "it-random" and len(body["classes"]) == 7

    info = predictor.describe()
    write_report(settings, info)  # what the worker does once its model is loaded
    (worker,) = client.get("/api/model-info", headers=auth).json()["workers"]
    assert worker["backend"] == predictor.backend and worker["precision"] == predictor.precision
    assert worker["cpu_flags"] == info["cpu_flags"]
    if worker["backend"] != "torch":
        check = worker["check"]
        assert check["passed"] and check["cells"] == 16
        assert {"top1_agreement", "max_prob_diff", "max_cam_diff", "limits"} <= set(check)
    remove_report(settings)  # a worker that stops cleanly
    assert read_reports(settings) == []


def test_a_worker_that_stops_touching_its_report_is_shown_gone(client, auth, settings, predictor):
    """The heartbeat keeps a worker's report fresh while it runs; one killed leaves a report that
    goes stale, shown `alive: false`, and not counted as a live worker."""
    path = write_report(settings, predictor.describe())
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert live_workers(settings) == 0
    assert client.get("/api/model-info", headers=auth).json()["workers"][0]["alive"] is False
    beat = start_heartbeat(settings, every_s=0.05)
    deadline = time.monotonic() + 5
    while live_workers(settings) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert live_workers(settings) == 1 and read_reports(settings)[0]["alive"] is True
    remove_report(settings)  # the worker stops: the heartbeat ends without writing it back
    beat.join(2)
    assert not beat.is_alive() and not path.exists()


def test_a_starting_worker_forgets_workers_silent_for_a_week(client, auth, settings, predictor):
    """Killed workers leave their reports; the System page should not list them for ever."""
    folder = write_report(settings, predictor.describe()).parent
    for name, age in (("gone-long-ago-1.json", FORGET_S + 3600), ("gone-yesterday-2.json", 24 * 3600.0)):
        (folder / name).write_text('{"host": "%s", "pid": 1}' % name)
        when = time.time() - age
        os.utime(folder / name, (when, when))
    assert len(read_reports(settings)) == 3
    assert forget_gone(settings) == 1
    hosts = {w["host"] for w in client.get("/api/model-info", headers=auth).json()["workers"]}
    assert "gone-long-ago-1.json" not in hosts and "gone-yesterday-2.json" in hosts and len(hosts) == 2


def test_the_upload_progress_says_when_no_worker_is_alive(client, auth, settings, predictor):
    log_in(client, "rita")
    case_id = new_case(client, auth, "BM-W")
    assert upload(client, auth, case_id, [("a.png", image_bytes(1))]).status_code == 202  # no worker here
    assert "No worker has reported in the last minute" in client.get(f"/cases/{case_id}/progress").text
    write_report(settings, predictor.describe())  # a worker that has loaded its model
    assert "No worker has reported" not in client.get(f"/cases/{case_id}/progress").text
