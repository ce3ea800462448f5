"""Real processes: `marrow worker` on the embedded broker (including a SIGKILL mid-upload and a
restart), and `marrow run` stopping web and worker on Ctrl-C."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
from sqlalchemy import func, select

from app.cells.models import Cell, Prediction
from app.bench.servers import free_port
from app.cli import marrow_command

from support.app import new_case, upload

MARROW = marrow_command()


def _env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    env.update(MARROW_DATA_DIR=str(settings.data_dir), MARROW_MODEL_DIR=str(settings.model_dir),
               MARROW_MODEL_CACHE_DIR=str(settings.model_cache), MARROW_BATCH_SIZE="2", MARROW_TASK_CELLS="2")
    if settings.broker_url:
        env["BROKER_URL"] = settings.broker_url
    return env


def _start(args: list[str], settings, log) -> subprocess.Popen:
    return subprocess.Popen(MARROW + args, env=_env(settings), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait(predicate, timeout: float, proc: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log_path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log_path.read_text()[-3000:]}"
        time.sleep(0.2)


def _stop(proc: subprocess.Popen, sig: int) -> int:
    os.killpg(proc.pid, sig)
    try:
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_worker_killed_mid_upload_ends_with_one_prediction_per_cell(client, auth, settings, sessions,
                                                                    real_cells, tmp_path):
    case_id = new_case(client, auth)
    assert upload(client, auth, case_id, real_cells).status_code == 202

    def processed() -> int:
        return client.get(f"/api/cases/{case_id}", headers=auth).json()["cells_processed"]

    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = _start(["worker"], settings, log)
        _wait(lambda: processed() >= 1, 240, worker, log_path)
        _stop(worker, signal.SIGKILL)  # a dead worker: its unacked task is lost on this broker
        ready = log_path.read_text().count(" ready.")
        worker = _start(["worker"], settings, log)  # on start it requeues cells still pending
        # Celery's warm-shutdown handler exists once it is ready; a SIGTERM before that kills it
        # (-15), e.g. when the first worker already did every cell before it was killed.
        _wait(lambda: log_path.read_text().count(" ready.") > ready, 240, worker, log_path)
        _wait(lambda: processed() == len(real_cells), 240, worker, log_path)
        assert _stop(worker, signal.SIGTERM) == 0, log_path.read_text()[-3000:]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Cell)) == len(real_cells)
        assert session.scalar(select(func.count()).select_from(Prediction)) == len(real_cells)
    assert client.get(f"/api/cases/{case_id}", headers=auth).json()["status"] == "ready"


def test_a_broker_it_cannot_write_costs_the_log_one_line_a_try(client, auth, settings, real_cells, tmp_path):
    """The embedded broker's database cannot be written (read-only here; a full disk does the
    same): Celery reconnects several times a second, and the worker's requeue on each connection
    says why in one line. It used to log about 120 lines of traceback a try, 4,800 lines in
    25 s, filling the disk an administrator was short of."""
    case_id = new_case(client, auth)
    assert upload(client, auth, case_id, real_cells[:2]).status_code == 202  # pending cells, the broker's tables
    broker = settings.data_dir / "broker.sqlite"
    read_only = settings.model_copy(update={"broker_url": f"sqla+sqlite:///file:{broker}?mode=ro&uri=true"})
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = _start(["worker"], read_only, log)
        _wait(lambda: log_path.read_text().count("could not requeue") >= 10, 120, worker, log_path)
        _stop(worker, signal.SIGKILL)
    out = log_path.read_text()
    tries = out[out.index("could not requeue"):]
    assert ("could not requeue the pending cells, the next connection tries again: attempt to write a readonly "
            "database") in tries
    assert "[SQL:" not in tries and "CPendingDeprecationWarning" not in tries, tries[:3000]
    assert len(tries.splitlines()) < 15 * tries.count("could not requeue"), tries[:3000]


def test_run_serves_and_stops_cleanly_on_ctrl_c(settings, tmp_path):
    port = free_port()
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        proc = _start(["run", "--port", str(port)], settings, log)

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait(healthy, 120, proc, log_path)
        _wait(lambda: "ready." in log_path.read_text(), 120, proc, log_path)  # the worker too
        assert httpx.get(f"http://127.0.0.1:{port}/api/cases").status_code == 401
        assert _stop(proc, signal.SIGINT) == 0, log_path.read_text()[-3000:]
    leftover = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert leftover == [], f"processes left behind: {leftover}"


def test_run_stops_with_the_reason_when_the_worker_has_no_model(settings, tmp_path):
    """A worker that cannot load its model stops (exit 1) instead of saying "ready." and failing
    every cell it takes; `marrow run` then stops the web server too and exits 1."""
    port = free_port()
    empty = tmp_path / "no-model"
    empty.mkdir()
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        proc = _start(["run", "--port", str(port)], settings.model_copy(update={"model_dir": empty}), log)
        try:
            assert proc.wait(120) == 1
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    out = log_path.read_text()
    assert f"the worker cannot load its model, so it stops: {empty}: not a MarrowDiff checkpoint" in out, out[-3000:]
    assert "marrow run: the worker exited with code 1; stopping" in out
    assert " ready." not in out
    leftover = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert leftover == [], f"processes left behind: {leftover}"
