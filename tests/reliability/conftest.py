"""The reliability contract's fixtures: real `marrow web` / `marrow worker` processes on
loopback, on SQLite + the embedded broker or on PostgreSQL + Redis, with the random-weights
checkpoint (these tests check counting, crashes and access, not accuracy).

Reused, not redefined: the in-process app and users of tests/support/app.py, the Redis,
PostgreSQL and process fixtures of tests/support/servers.py (plugins for the whole suite).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import httpx
import psutil
import pytest
from support.servers import Started

from app.bench.servers import free_port, wait_for
from app.cli import marrow_command
from app.db import make_engine, make_sessionmaker, upgrade

START_TIMEOUT_S = 120
PROCESS_TIMEOUT_S = 240


@dataclass
class Stack:
    """A running app: its environment, web process, workers and an admin's API token."""

    env: dict[str, str]
    start: Callable[..., Started]
    url: str = ""
    token: str = ""
    web: Started | None = None
    workers: list[Started] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return Path(self.env["MARROW_DATA_DIR"])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def api(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    @cached_property
    def sessions(self):
        """A sessionmaker on the stack's database (one engine per stack)."""
        return make_sessionmaker(make_engine(self.env.get("DATABASE_URL")
                                             or f"sqlite:///{Path(self.env['MARROW_DATA_DIR']) / 'marrow.sqlite'}"))

    def logs(self) -> str:
        return "\n".join(p.tail(40) for p in [self.web, *self.workers] if p is not None)

    def start_web(self, name: str = "web", command: str = "web") -> Started:
        """`marrow web` (or `marrow run`: web plus a worker child) on a free loopback port."""
        port = free_port()
        self.web = self.start(name, marrow_command(command, "--port", str(port)), self.env)
        self.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200,
                 START_TIMEOUT_S, f"marrow web ({name})", self.web.proc, self.web.log)
        return self.web

    def start_workers(self, *names: str) -> list[Started]:
        """Workers, started together and returned once Celery says each is ready (model loaded,
        pending cells requeued)."""
        started = [self.start(name, marrow_command("worker"), self.env) for name in names]
        for worker in started:
            wait_for(lambda w=worker: "ready." in w.log.read_text(errors="replace"), START_TIMEOUT_S,
                     f"marrow worker ({worker.name})", worker.proc, worker.log)
        self.workers += started
        return started

    def make_admin(self, name: str = "admin") -> str:
        """An administrator straight in the database (faster than two `marrow` commands)."""
        from app.auth.tokens import issue_token
        from app.users.service import create_user

        with self.sessions() as session:
            self.token = issue_token(session, create_user(session, name, "admin", "a long password"))
        return self.token

    def wait_processed(self, case_id: int, total: int, timeout: float = PROCESS_TIMEOUT_S) -> dict:
        """The case once all its `total` cells are processed; fails naming the dead process."""
        with self.api() as api:
            def done() -> dict | None:
                for p in [self.web, *self.workers]:
                    assert p is None or p.alive() or p.proc.returncode == -9, f"{p.name} died\n{p.tail()}"
                case = api.get(f"/api/cases/{case_id}").json()
                return case if case["cells_total"] == total and case["cells_processed"] == total else None

            return wait_for(done, timeout, f"processing {total} cells of case {case_id}", interval=0.5)


def base_env(data_dir: Path, model_dir: Path, cache_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a test's `marrow` processes: nothing from this machine's MARROW_*."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MARROW_", "DATABASE_URL", "BROKER_URL"))}
    env.update(MARROW_DATA_DIR=str(data_dir), MARROW_MODEL_DIR=str(model_dir), MARROW_MODEL_CACHE_DIR=str(cache_dir),
               MARROW_BATCH_SIZE="4", MARROW_TASK_CELLS="16", OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture
def stack(tmp_path, random_checkpoint, model_cache, start_process) -> Stack:
    """A stack on SQLite and the embedded broker (nothing started yet; migrated, admin made)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    s = Stack(base_env(data_dir, random_checkpoint, model_cache), start_process)
    upgrade(f"sqlite:///{data_dir / 'marrow.sqlite'}")
    s.make_admin()
    return s


@pytest.fixture
def pg_stack(tmp_path, random_checkpoint, model_cache, start_process, postgres_cluster, redis_url) -> Stack:
    """The production stack: a fresh PostgreSQL database, Redis (flushed), MARROW_ENV=production."""
    import secrets

    import redis

    redis.Redis.from_url(redis_url).flushdb()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db_url = postgres_cluster.createdb(f"marrow_rel_{secrets.token_hex(4)}")
    s = Stack(base_env(data_dir, random_checkpoint, model_cache, DATABASE_URL=db_url, BROKER_URL=redis_url,
                       MARROW_ENV="production", MARROW_SECRET_KEY=secrets.token_hex(32)), start_process)
    upgrade(db_url)
    s.make_admin()
    return s


def rss_mb(proc: Started) -> float:
    return psutil.Process(proc.proc.pid).memory_info().rss / 2**20
