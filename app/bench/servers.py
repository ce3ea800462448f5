"""Throwaway Redis and PostgreSQL servers on loopback, and the process helpers around them:
for `marrow bench-load` and the integration tests (tests/support/servers.py).

Each server listens on 127.0.0.1 only, on a free port, keeps its data in a temporary folder and
is stopped (and the folder removed) when its context ends. Nothing system-wide is started or
changed. PostgreSQL refuses to run as root, so as root it runs as the `postgres` system user.
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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

# What a poll may meet while a server is still starting; anything else fails at once.
NOT_READY = (OSError, subprocess.SubprocessError, httpx.TransportError)
START_TIMEOUT_S = 60


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


# --------------------------------------------------------------------------------------- Redis

def redis_binary() -> str | None:
    return shutil.which("redis-server")


@contextmanager
def local_redis() -> Iterator[str]:
    """A Redis server without persistence; yields redis://127.0.0.1:PORT/0."""
    binary = redis_binary()
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
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


@contextmanager
def local_postgres() -> Iterator[PostgresCluster]:
    """A fresh cluster (fsync off: throwaway data) with user `marrow` and a random password."""
    bindir = postgres_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
                                "(apt-get install postgresql)")
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
            capture_output=True, text=True, timeout=120, cwd=workdir, check=False, **run_as)
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
            timeout=10, check=False).returncode == 0, START_TIMEOUT_S, f"PostgreSQL on port {port}", proc, log)
        yield cluster
    finally:
        if proc is not None:
            stop_process_group(proc, signal.SIGINT)  # SIGINT: fast shutdown
        shutil.rmtree(workdir, ignore_errors=True)
