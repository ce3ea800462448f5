"""Real services for integration tests: a Redis server and a PostgreSQL cluster, per session.

Each listens on 127.0.0.1 only, on a free port, keeps its data in a temporary folder and is
stopped (and the folder removed) when the session ends. Nothing system-wide is started or
changed. When the binaries are not installed (`scripts/test.sh` installs them) the tests that
need them are skipped with the reason.

Fixtures:
- `redis_url`            redis://127.0.0.1:PORT/0
- `postgres_url`         postgresql+psycopg://marrow:PASSWORD@127.0.0.1:PORT/marrow_it
- `fresh_postgres_url`   a new, empty database on the same cluster for one test
- `start_process`        starts a command in its own process group, logs to a file, and kills
                         the group when the test ends
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from .harness import START_TIMEOUT_S, free_port, log_tail, stop_process_group, wait_for


# --------------------------------------------------------------------------------------- Redis

@pytest.fixture(scope="session")
def redis_url():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/test.sh installs it: apt-get install redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="marrow-redis-"))
    port = free_port()
    log = workdir / "redis.log"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
         "--save", "", "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no",
         "--logfile", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _redis_ping(port), START_TIMEOUT_S, f"redis-server on port {port}", proc, log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process_group(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


# ---------------------------------------------------------------------------------- PostgreSQL

def postgres_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and postgres, else one on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    for d in reversed(candidates):
        if (Path(d) / "initdb").is_file() and (Path(d) / "postgres").is_file():
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).parent
    return None


def _server_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` system user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "postgres"], check=True, capture_output=True)
        return pwd.getpwnam("postgres")


@dataclass
class PostgresCluster:
    bindir: Path
    port: int
    user: str
    password: str

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def createdb(self, dbname: str) -> str:
        env = dict(os.environ, PGPASSWORD=self.password)
        subprocess.run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", self.user, dbname], check=True, capture_output=True, env=env, timeout=30)
        return self.url(dbname)


@pytest.fixture(scope="session")
def postgres_cluster():
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
                    "(scripts/test.sh installs them: apt-get install postgresql)")
    user = _server_user()
    # Not under pytest's basetemp: that is 0700 root-owned, and the server runs as `postgres`.
    workdir = Path(tempfile.mkdtemp(prefix="marrow-pg-"))
    run_as: dict = {}
    if user is not None:
        os.chown(workdir, user.pw_uid, user.pw_gid)
        run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [],
                  "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir),
                          "LC_ALL": "C.UTF-8"}}
    data, password = workdir / "data", secrets.token_hex(12)
    pwfile = workdir / "pwfile"
    pwfile.write_text(password + "\n")
    if user is not None:
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    log = workdir / "postgres.log"
    proc = None
    try:
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "marrow", f"--pwfile={pwfile}",
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale",
             "--no-sync"],
            capture_output=True, text=True, timeout=120, cwd=workdir, **run_as)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        port = free_port()
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={workdir}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=100"],
                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir, **run_as)
        cluster = PostgresCluster(bindir, port, "marrow", password)
        wait_for(lambda: subprocess.run(
            [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
            timeout=10).returncode == 0, START_TIMEOUT_S, f"PostgreSQL on port {port}", proc, log)
        yield cluster
    finally:
        if proc is not None:
            stop_process_group(proc, signal.SIGINT)  # SIGINT: fast shutdown
        shutil.rmtree(workdir, ignore_errors=True)


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
