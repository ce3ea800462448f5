"""pytest plugin (tests/conftest.py registers it): real services for the integration and
reliability tests, a Redis server and a PostgreSQL cluster per session.

They are app.bench.servers's servers (shared with `marrow bench-load`): each listens on 127.0.0.1
only, on a free port, keeps its data in a temporary folder and is stopped (and the folder
removed) when the session ends. When the binaries are not installed (`scripts/test.sh`
installs them) the tests that need them are skipped with the reason.

Fixtures:
- `redis_url`            redis://127.0.0.1:PORT/0
- `postgres_url`         postgresql+psycopg://marrow:PASSWORD@127.0.0.1:PORT/marrow_it
- `fresh_postgres_url`   a new, empty database on the same cluster for one test
- `start_process`        starts a command in its own process group, logs to a file, and kills
                         the group when the test ends
- `postgres_server`, `redis_server`
                         the same two servers, for a test that stops one and starts it again
                         (`with redis_server.down(): ...`): same port, same data
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from app.db import upgrade
from app.bench.servers import (
    START_TIMEOUT_S,
    PostgresCluster,
    local_postgres,
    local_redis,
    log_tail,
    postgres_bindir,
    redis_binary,
    stop_process_group,
    wait_for,
)

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


def on_database(request: pytest.FixtureRequest, settings):
    """`settings` as they are for the param "sqlite", else on a fresh, migrated PostgreSQL
    database: for a module whose `settings` fixture is parametrized over both, to run what is
    written as SQL on both databases a lab runs."""
    if request.param == "sqlite":
        return settings
    url = request.getfixturevalue("fresh_postgres_url")
    upgrade(url)
    return settings.model_copy(update={"database_url": url})


# ------------------------------------------------------------------- outages: stop, start again

STOP_TIMEOUT_S = 30
# What Redis is started again with: its settings as they are, read back from the server (it
# overwrites its own command line with its title, so that cannot be reused).
REDIS_RESTART_SETTINGS = ("port", "bind", "protected-mode", "save", "appendonly", "dir", "logfile")


@dataclass
class Restartable:
    """A session server that a test stops and starts again: `with server.down(): ...`.

    It is started again as it ran (command line, user, working directory, environment), so on
    the same port with the same data. The copies started so are stopped when the session ends.
    """

    name: str
    pid: int
    argv: list[str]
    ready: Callable[[], bool]
    not_ready: tuple[type[BaseException], ...]  # what ready() raises while the server starts
    stop_signal: int
    log: Path
    started: list[subprocess.Popen] = field(default_factory=list)

    @contextmanager
    def down(self) -> Iterator[None]:
        """Stopped (its clients' connections closed) inside the block; started again, and ready,
        on leaving it, whatever happened inside."""
        server = psutil.Process(self.pid)
        cwd, env, uid, gid = server.cwd(), server.environ(), server.uids().real, server.gids().real
        server.send_signal(self.stop_signal)
        server.wait(STOP_TIMEOUT_S)
        try:
            yield
        finally:
            self._start(cwd, env, uid, gid)

    def _start(self, cwd: str, env: dict[str, str], uid: int, gid: int) -> None:
        as_user = {} if uid == os.geteuid() else {"user": uid, "group": gid, "extra_groups": []}
        with open(self.log, "ab") as logf:
            proc = subprocess.Popen(self.argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True, **as_user)
        self.started.append(proc)
        self.pid = proc.pid
        wait_for(self.ready, START_TIMEOUT_S, f"{self.name} started again", proc, self.log,
                 retry_on=self.not_ready)

    def stop_started(self) -> None:
        for proc in self.started:
            stop_process_group(proc, self.stop_signal)


def _listening_pid(port: int) -> int:
    return next(c.pid for c in psutil.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port)


@pytest.fixture(scope="session")
def postgres_server(postgres_cluster: PostgresCluster, tmp_path_factory) -> Iterator[Restartable]:
    """The session's PostgreSQL, to stop (fast shutdown) and start again on the same data."""
    pid = _listening_pid(postgres_cluster.port)
    isready = [str(postgres_cluster.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(postgres_cluster.port)]
    server = Restartable("PostgreSQL", pid, psutil.Process(pid).cmdline(),
                         lambda: subprocess.run(isready, timeout=10, check=False).returncode == 0,
                         (subprocess.SubprocessError,), signal.SIGINT,
                         tmp_path_factory.mktemp("postgres") / "restarted.log")
    yield server
    server.stop_started()


@pytest.fixture(scope="session")
def redis_server(redis_url: str, tmp_path_factory) -> Iterator[Restartable]:
    """The session's Redis, to stop and start again (it keeps no data: queued messages are lost,
    as on a Redis without persistence)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    config = client.config_get("*")
    argv = [client.info("server")["executable"], "--daemonize", "no",
            *(arg for key in REDIS_RESTART_SETTINGS for arg in (f"--{key}", config[key]))]
    server = Restartable("Redis", _listening_pid(int(config["port"])), argv, client.ping,
                         (redis.ConnectionError, redis.TimeoutError), signal.SIGTERM,
                         tmp_path_factory.mktemp("redis") / "restarted.log")
    yield server
    server.stop_started()
    client.close()


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
