"""Helpers for the integration tests: free ports, bounded waits, process-group teardown."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

# What a poll may meet while a server is still starting; anything else fails at once.
NOT_READY = (OSError, subprocess.SubprocessError, httpx.TransportError)

START_TIMEOUT_S = 60

# The production stack: what test_production_stack.py runs and docker-compose.yml must run too.
WEB_COMMAND = ["marrow", "web"]
WORKER_COMMAND = ["marrow", "worker"]
STACK_ENV_VARS = ("DATABASE_URL", "BROKER_URL", "MARROW_DATA_DIR", "MARROW_MODEL_DIR", "MARROW_ENV")
HEALTH_PATH = "/api/health"  # answered without a token: the compose healthcheck polls it
WORKER_HEALTHCHECK = ["python", "scripts/worker_healthcheck.py"]  # the worker's compose healthcheck


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None,
              log: Path | None = None, interval: float = 0.2, retry_on: tuple = NOT_READY):
    """Poll predicate() until it returns a truthy value; fail with the log tail on timeout/exit."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {proc.returncode}\n{log_tail(log)}")
        try:
            value = predicate()
            if value:
                return value
        except retry_on as exc:  # keep polling; report the last one
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s (last error: {last_exc!r})\n{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 60) -> str:
    if log is None or not log.is_file():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last lines of {log} ---\n" + "\n".join(text)


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal the whole process group, wait, then SIGKILL whatever is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # children (uvicorn workers, celery pool) may outlive the leader
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
