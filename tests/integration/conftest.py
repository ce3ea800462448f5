"""Real services for integration tests: a Redis server and a PostgreSQL cluster, per session.

They are app.localstack's servers (shared with `marrow bench-load`): each listens on 127.0.0.1
only, on a free port, keeps its data in a temporary folder and is stopped (and the folder
removed) when the session ends. When the binaries are not installed (`scripts/test.sh`
installs them) the tests that need them are skipped with the reason.

Fixtures:
- `redis_url`            redis://127.0.0.1:PORT/0
- `postgres_url`         postgresql+psycopg://marrow:PASSWORD@127.0.0.1:PORT/marrow_it
- `fresh_postgres_url`   a new, empty database on the same cluster for one test
- `start_process`        starts a command in its own process group, logs to a file, and kills
                         the group when the test ends
"""
from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.localstack import (
    PostgresCluster,
    local_postgres,
    local_redis,
    postgres_bindir,
    redis_binary,
)

from .harness import log_tail, stop_process_group

# --------------------------------------------------------------------------------------- Redis

@pytest.fixture(scope="session")
def redis_url():
    if redis_binary() is None:
        pytest.skip("redis-server is not installed (scripts/test.sh installs it: apt-get install redis-server)")
    with local_redis() as url:
        yield url


# ---------------------------------------------------------------------------------- PostgreSQL

@pytest.fixture(scope="session")
def postgres_cluster():
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
                    "(scripts/test.sh installs them: apt-get install postgresql)")
    with local_postgres() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.createdb("marrow_it")


@pytest.fixture
def fresh_postgres_url(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.createdb(f"marrow_{secrets.token_hex(4)}")


# ----------------------------------------------------------------------------------- processes

@dataclass
class Started:
    proc: subprocess.Popen
    log: Path
    name: str

    def tail(self, lines: int = 80) -> str:
        return log_tail(self.log, lines)

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture
def start_process(tmp_path: Path):
    """start_process(name, argv, env) -> Started: own process group, output in tmp_path/NAME.log,
    the whole group stopped (SIGTERM, then SIGKILL) when the test ends."""
    started: list[Started] = []

    def start(name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Started:
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as logf:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        s = Started(proc, log, name)
        started.append(s)
        return s

    yield start
    for s in reversed(started):
        stop_process_group(s.proc)
