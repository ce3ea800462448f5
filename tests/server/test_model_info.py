"""GET /api/model-info: the configured model and, per worker, the backend it chose, its
precision and the load-time check (written by the worker, read by the web process)."""
from __future__ import annotations

from app.processing.runtime import read_reports, remove_report, write_report


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
