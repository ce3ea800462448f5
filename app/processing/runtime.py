"""What each worker runs the model on (backend, precision, the load-time check), where the web
process can read it: one JSON file per live worker under `<storage>/runtime/workers/`, written
when the worker has loaded its model and removed when it stops. The storage directory is the
one every web and worker machine shares; the files hold no case data.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from app.config import Settings

REPORTS = Path("runtime") / "workers"
MAX_SHOWN = 50


def _dir(settings: Settings) -> Path:
    return settings.storage_path / REPORTS


def report_path(settings: Settings) -> Path:
    return _dir(settings) / f"{socket.gethostname()}-{os.getpid()}.json"


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


def read_reports(settings: Settings) -> list[dict]:
    """The workers' reports, newest first (a worker killed without stopping leaves its file)."""
    out = []
    for f in _dir(settings).glob("*.json"):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    out.sort(key=lambda r: r.get("reported_at", 0), reverse=True)
    return out[:MAX_SHOWN]
