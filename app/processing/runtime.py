"""What each worker runs the model on (backend, precision, the load-time check), where the web
process can read it: one JSON file per live worker under `<storage>/runtime/workers/`, written
when the worker has loaded its model and removed when it stops. The storage directory is the
one every web and worker machine shares; the files hold no case data.

A worker touches its file every HEARTBEAT_S while it runs, so a file not touched for ALIVE_S
is a worker that is gone (killed, its machine down) or stuck: the web then tells whoever waits
for their cells that no worker is processing them. A starting worker removes the files of
workers silent for FORGET_S, so the System page lists this week's workers, not every one ever killed.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from app.config import Settings

log = logging.getLogger(__name__)

REPORTS = Path("runtime") / "workers"
MAX_SHOWN = 50
HEARTBEAT_S = 20.0
ALIVE_S = 60.0  # three heartbeats missed
FORGET_S = 7 * 24 * 3600.0


def _dir(settings: Settings) -> Path:
    return settings.storage_path / REPORTS


def report_path(settings: Settings) -> Path:
    return _dir(settings) / f"{socket.gethostname()}-{os.getpid()}.json"


def _touched(settings: Settings) -> list[tuple[Path, float]]:
    """Every report with the time it was last touched (one removed meanwhile is left out)."""
    out = []
    for f in _dir(settings).glob("*.json"):
        try:
            out.append((f, f.stat().st_mtime))
        except OSError:
            continue
    return out


def forget_gone(settings: Settings, older_than_s: float = FORGET_S) -> int:
    """Remove the reports of workers silent for `older_than_s`; returns how many."""
    removed, now = 0, time.time()
    for f, mtime in _touched(settings):
        if now - mtime > older_than_s:
            try:
                f.unlink()
                removed += 1
            except OSError:  # another starting worker removed it first
                continue
    return removed


def write_report(settings: Settings, info: dict) -> Path:
    """Record this worker's model and backend (atomically replaced)."""
    path = report_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"host": socket.gethostname(), "pid": os.getpid(), "reported_at": time.time(), **info}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def remove_report(settings: Settings) -> None:
    report_path(settings).unlink(missing_ok=True)


def start_heartbeat(settings: Settings, every_s: float = HEARTBEAT_S) -> threading.Thread:
    """Touch this worker's report every `every_s` seconds, from a daemon thread (a task runs in
    the worker's main thread). It stops once the report is removed: it never writes one back."""
    path = report_path(settings)

    def beat() -> None:
        while True:
            time.sleep(every_s)
            try:
                os.utime(path)
            except FileNotFoundError:
                return
            except OSError as exc:  # storage briefly unavailable: the next beat tries again
                log.warning("could not touch the worker's report %s: %s", path, exc)
    thread = threading.Thread(target=beat, name="marrow-heartbeat", daemon=True)
    thread.start()
    return thread


def _alive(mtime: float, now: float) -> bool:
    return now - mtime <= ALIVE_S


def read_reports(settings: Settings) -> list[dict]:
    """The workers' reports, newest first, each with `alive` (touched in the last ALIVE_S; a
    worker killed without stopping leaves its file, no longer touched) and `seen_at`."""
    out, now = [], time.time()
    for f, mtime in _touched(settings):
        try:
            out.append({**json.loads(f.read_text()), "alive": _alive(mtime, now), "seen_at": mtime})
        except (OSError, ValueError):
            continue
    out.sort(key=lambda r: r.get("reported_at", 0), reverse=True)
    return out[:MAX_SHOWN]


def live_workers(settings: Settings) -> int:
    """How many workers touched their report in the last ALIVE_S (file times only: the upload
    progress asks every second)."""
    now = time.time()
    return sum(_alive(mtime, now) for _, mtime in _touched(settings))
