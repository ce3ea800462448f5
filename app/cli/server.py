"""`marrow run|web|worker|users|token|bench-app|bench-load`: the lab server and its accounts.

`run` is the laptop default (web + one worker, SQLite, embedded broker); `web` and `worker`
start one side each for production. All three apply migrations first.
"""
from __future__ import annotations

import argparse
import getpass
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from app.cli import marrow_command, print_json

WORKER_STOP_TIMEOUT_S = 60
# `marrow run` has exactly one worker, so the queue's task size spreads no work across workers;
# it only sets how often the worker's cores idle at a task's end. 512 cells: a quarter of the task
# ends of the default 128 for a large upload (the machine idle 6.3-6.6 % against 7.6-7.8 % in
# `bench-app`, docs/performance-history.md), and a warm stop still well inside WORKER_STOP_TIMEOUT_S
# (about 10 s of cells on 2 cores). MARROW_TASK_CELLS, where set (environment or .env), wins.
ONE_WORKER_TASK_CELLS = 512
WORKER_APP = "worker.app:celery"


def register(sub: argparse._SubParsersAction) -> None:
    for name, func, help_ in (("run", cmd_run, "web server plus one worker: the laptop default"),
                              ("web", cmd_web, "the web server only (production)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.set_defaults(func=func)

    p = sub.add_parser("worker", help="a background worker only (production; one per machine or GPU)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("users", help="manage user accounts")
    users = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = users.add_parser("add", help="create a user")
    q.add_argument("name")
    q.add_argument("--role", required=True, choices=["reviewer", "pathologist", "admin"])
    q.add_argument("--password-stdin", action="store_true", help="read the password from stdin (else prompt)")
    q.set_defaults(func=cmd_users_add)
    q = users.add_parser("list", help="list users")
    q.set_defaults(func=cmd_users_list)
    q = users.add_parser("history", help="the accounts' history, newest first: logins, failed logins, "
                                         "accounts, passwords, tokens (tab-separated, times in UTC)")
    q.add_argument("--limit", type=int, default=200, help="at most this many events (default 200)")
    q.set_defaults(func=cmd_users_history)
    q = users.add_parser("password", help="set a user's password (a forgotten one; their browser sessions end)")
    q.add_argument("name")
    q.add_argument("--password-stdin", action="store_true", help="read the password from stdin (else prompt)")
    q.set_defaults(func=cmd_users_password)
    for action, active in (("disable", False), ("enable", True)):
        q = users.add_parser(action, help=f"{action} a user (a disabled user's tokens are refused)")
        q.add_argument("name")
        q.set_defaults(func=cmd_users_active, active=active)

    p = sub.add_parser("token", help="print a new API token for a user (only its hash is stored)")
    p.add_argument("name")
    p.add_argument("--revoke", action="store_true",
                   help="instead, remove every API token of the user (a leaked one; scripts using them get 401)")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("backup", help="copy the database and the images into DEST while the lab runs "
                                      "(again into the same DEST: only what is new)")
    p.add_argument("dest", type=Path)
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("bench-app", help="end-to-end benchmark: upload real cells through the API")
    p.add_argument("--url", help="target a running app (needs --token) instead of starting one")
    p.add_argument("--token", help="API token for --url")
    p.add_argument("--cells", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3,
                   help="uploads timed, each between two raw-model runs; pipeline_ratio is their median")
    p.add_argument("--data-dir", type=Path, help="real cells, one folder per class "
                                                 "(default: $MARROW_TEST_DATA or ../shared/data/bone-marrow-7)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the results here")
    p.set_defaults(func=cmd_bench_app)

    p = sub.add_parser("bench-load", help="load benchmark: uploaders and reviewers at once against web + workers "
                                          "on PostgreSQL and Redis (started on loopback, or --url)")
    p.add_argument("--url", help="target a running app (needs --token and --reviewer) instead of starting one")
    p.add_argument("--token", help="API token for --url")
    p.add_argument("--reviewer", action="append", help="reviewer account for --url (repeatable; password in "
                                                       "$MARROW_BENCH_PASSWORD)")
    p.add_argument("--uploaders", type=int, default=10, help="clients each uploading one case")
    p.add_argument("--cells", type=int, default=100, help="cells per uploaded case")
    p.add_argument("--reviewers", type=int, default=5, help="clients paging through review screens and relabelling")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data-dir", type=Path, help="real cells, one folder per class "
                                                 "(default: $MARROW_TEST_DATA or ../shared/data/bone-marrow-7)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the results here")
    p.set_defaults(func=cmd_bench_load)


def sessions():
    """Sessions on the configured database (MARROW_DB_URL), migrated first: for commands that
    read or change the lab's records while it may be running."""
    from app.config import get_settings
    from app.db import make_engine, make_sessionmaker, upgrade

    settings = get_settings()
    upgrade(settings.db_url)
    return make_sessionmaker(make_engine(settings.db_url))


def cmd_web(args: argparse.Namespace) -> int:
    import uvicorn

    from app.config import get_settings
    from app.db import upgrade

    upgrade(get_settings().db_url)
    uvicorn.run("app.main:create_app", factory=True, host=args.host, port=args.port, log_level="info")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from app.config import get_settings
    from app.db import upgrade

    from celery.bin.celery import celery as celery_command

    upgrade(get_settings().db_url)
    # The worker app by name, as `celery -A worker.app worker` does: the worker package sits
    # above app/ and is never imported by it. Pool and other options: app.queue.celery_config.
    return celery_command.main(["--app", WORKER_APP, "worker", f"--loglevel={args.loglevel}",
                                f"--hostname=marrow-{os.getpid()}@%h", "--without-gossip", "--without-mingle"],
                               prog_name="marrow worker", standalone_mode=False) or 0


def cmd_run(args: argparse.Namespace) -> int:
    """Web in this process, the worker as a child; Ctrl-C (SIGINT to both) stops both cleanly."""
    import uvicorn

    from app.config import get_settings
    from app.db import upgrade

    settings = get_settings()
    if "task_cells" not in settings.model_fields_set:  # neither the environment nor .env sets it
        settings.task_cells = ONE_WORKER_TASK_CELLS
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.db_url)
    # the worker requeues pending cells at start (app.processing.service.requeue_pending): in the same tasks
    worker = subprocess.Popen(marrow_command("worker"), env={**os.environ, "MARROW_TASK_CELLS": str(settings.task_cells)})
    stopping, worker_died = threading.Event(), threading.Event()
    threading.Thread(target=_stop_if_worker_dies, args=(worker, stopping, worker_died), daemon=True).start()
    try:
        uvicorn.run("app.main:create_app", factory=True, host=args.host, port=args.port, log_level="info")
    finally:
        stopping.set()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # warm shutdown: the current batch finishes
        try:
            worker.wait(WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return 1 if worker_died.is_set() else 0


def _stop_if_worker_dies(worker: subprocess.Popen, stopping: threading.Event, died: threading.Event) -> None:
    """A web server whose uploads are never processed is worse than a clear exit."""
    worker.wait()
    if not stopping.is_set():
        died.set()
        print(f"marrow run: the worker exited with code {worker.returncode}; stopping", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGINT)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass(f"password for {args.name}: ")


def cmd_users_add(args: argparse.Namespace) -> int:
    from app.users.service import create_user

    password = _read_password(args)
    with sessions()() as session:
        user = create_user(session, args.name, args.role, password)
    print(f"created {user.role} {user.name}")
    return 0


def cmd_users_password(args: argparse.Namespace) -> int:
    from app.users.service import set_password

    password = _read_password(args)
    with sessions()() as session:
        user = set_password(session, args.name, password)
    print(f"new password set for {user.name}; their browser sessions are logged out")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    from app.users.service import list_users

    with sessions()() as session:
        for user in list_users(session):
            print(f"{user.name}\t{user.role}\t{'active' if user.active else 'disabled'}")
    return 0


def cmd_users_history(args: argparse.Namespace) -> int:
    from app.users.history import recent

    with sessions()() as session:
        for e in recent(session, args.limit):
            print("\t".join((e["at"].isoformat(), e["user"] or "-", e["what"], e["by"] or "-", e["client"])))
    return 0


def cmd_users_active(args: argparse.Namespace) -> int:
    from app.users.service import set_active

    with sessions()() as session:
        user = set_active(session, args.name, args.active)
    print(f"{user.name} {'enabled' if user.active else 'disabled'}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from app.auth.tokens import issue_token, revoke_tokens
    from app.users.service import require

    with sessions()() as session:
        user = require(session, args.name)
        if args.revoke:
            print(f"revoked {revoke_tokens(session, user)} API token(s) of {user.name}")
        else:
            print(issue_token(session, user))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from app.backup import backup
    from app.config import get_settings

    print_json(backup(get_settings(), args.dest), None)
    return 0


def cmd_bench_load(args: argparse.Namespace) -> int:
    from app.bench.load import benchmark

    print_json(benchmark(args), args.json)
    return 0


def cmd_bench_app(args: argparse.Namespace) -> int:
    from app.bench.endtoend import run_benchmark

    print_json(run_benchmark(url=args.url, token=args.token, n_cells=args.cells, data_dir=args.data_dir,
                             rounds=args.rounds), args.json)
    return 0
