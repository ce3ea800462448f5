"""`marrow bench-load`: the production stack under a lab's load, measured through its own
pages and API.

By default it starts, on loopback, a throwaway PostgreSQL and Redis (app.bench.servers), `marrow
web` in production mode and two `marrow worker`s with the shipped model; or it targets a
running app (--url, --token). Then, at once: `uploaders` clients each create a case and upload
`cells` distinct real cells in one request, while `reviewers` clients log in through the login
form and page through review screens (case list, review page, gallery, one cell's detail,
thumbnails) and relabel a cell per round through the page's relabel form, until every case is
processed. Reports requests/s, median and p95 latency (all requests and per kind), errors (5xx,
transport errors, unexpected statuses; a 409 on a relabel racing another reviewer is a
conflict, counted apart), peak RSS of the web and worker processes, and whether every case
ends with exactly its cells, each processed once.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx
import psutil

from app.bench.cells import another_label, default_data_dir, percentile_ms, pick_cells
from app.cli import marrow_command
from app.config import get_settings

PROCESS_TIMEOUT_S = 1800
THINK_S = 0.2  # a reviewer's pause between rounds (a person reads the screen)
REVIEWER_PASSWORD = "bench-load-password"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
SESSION_COOKIE = "marrow_session"


@dataclass
class Recorder:
    """Every request's kind, latency and outcome, from all client threads."""

    samples: list[tuple[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    conflicts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, kind: str, send, *args, ok: tuple[int, ...] = (200,), conflict_ok: bool = False,
             **kwargs) -> httpx.Response | None:
        """send(*args, **kwargs), timed and judged (a 409 counts as a conflict where allowed)."""
        t = time.perf_counter()
        try:
            r = send(*args, **kwargs)
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            return None
        elapsed = time.perf_counter() - t
        with self.lock:
            self.samples.append((kind, elapsed))
            if conflict_ok and r.status_code == 409:
                self.conflicts += 1
            elif r.status_code not in ok:
                self.errors.append(f"{kind}: HTTP {r.status_code} {r.text[:200]}")
        return r


class MemoryPeak:
    """Samples the summed RSS of some processes (and each one's peak) every 0.25 s."""

    def __init__(self, pids: dict[str, int]):
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = {name: 0.0 for name in pids}
        self.peak_total = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            total = 0.0
            for name, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    mb = proc.memory_info().rss / 2**20
                    self.peak[name] = max(self.peak[name], mb)
                    total += mb
            self.peak_total = max(self.peak_total, total)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _log_in(client: httpx.Client, name: str, password: str) -> str:
    """Logs in through the form; returns the session's CSRF token."""
    csrf = CSRF_META.search(client.get("/login").text).group(1)
    r = client.post("/login", data={"name": name, "password": password, "csrf_token": csrf})
    if r.status_code != 303:
        raise RuntimeError(f"reviewer {name} could not log in: HTTP {r.status_code}")
    return CSRF_META.search(client.get("/cases").text).group(1)


def _keep_session(client: httpx.Client):
    """A response hook that sends the session cookie back by hand: in production it is `Secure`,
    and this benchmark talks plain HTTP on loopback (a deployment has a TLS proxy in between)."""
    def hook(response: httpx.Response) -> None:
        if value := response.cookies.get(SESSION_COOKIE):
            client.headers["Cookie"] = f"{SESSION_COOKIE}={value}"
    return hook


def _review(url: str, name: str, password: str, token: str, rec: Recorder, done: threading.Event,
            seed: int) -> None:
    """One reviewer: rounds of case list, review page, gallery, a cell's detail, thumbnails, a relabel."""
    rng = random.Random(seed)
    api_headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=120) as client:
        client.event_hooks["response"] = [_keep_session(client)]
        try:
            csrf = _log_in(client, name, password)
        except (httpx.HTTPError, RuntimeError, AttributeError) as exc:
            with rec.lock:
                rec.errors.append(f"{name}: {exc!r}")
            return
        htmx = {"HX-Request": "true", "X-CSRF-Token": csrf}
        while not done.is_set():
            rec.call("page: case list", client.get, "/cases")
            cases = client.get("/api/cases", headers=api_headers).json()
            ready = [c for c in cases if c["cells_processed"] > 0]
            if not ready:
                time.sleep(THINK_S)
                continue
            case_id = rng.choice(ready)["id"]
            rec.call("page: review", client.get, f"/cases/{case_id}/review")
            rec.call("partial: gallery", client.get, f"/cases/{case_id}/gallery", headers=htmx)
            cells = [c for c in client.get(f"/api/cases/{case_id}/cells", headers=api_headers).json()
                     if c["status"] == "done"]
            if cells:
                cell = rng.choice(cells)
                rec.call("partial: cell detail", client.get, f"/cells/{cell['id']}/detail", headers=htmx)
                for c in rng.sample(cells, min(4, len(cells))):
                    rec.call("thumbnail", client.get, f"/api/cells/{c['id']}/thumbnail")
                label = another_label(cell["label"])
                rec.call("relabel (page form)", client.post, f"/cases/{case_id}/relabel", headers=htmx,
                         data={"items": f"{cell['id']}:{cell['version']}:{label}"}, conflict_ok=True)
            time.sleep(THINK_S)


def _upload(url: str, token: str, accession: str, cells: list[Path], rec: Recorder, out: dict) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as api:
        r = rec.call("create case", api.post, "/api/cases", json={"accession": accession}, ok=(201,))
        if r is None or r.status_code != 201:
            return
        case_id = r.json()["id"]
        out[accession] = case_id
        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in cells]
        r = rec.call("upload a case", api.post, f"/api/cases/{case_id}/uploads", files=files, ok=(202,))
        if r is not None and r.status_code == 202 and r.json()["rejected"]:
            rec.errors.append(f"{accession}: real cells rejected: {r.json()['rejected'][:3]}")


def _wait_processed(url: str, token: str, case_ids: dict[str, int]) -> None:
    deadline = time.perf_counter() + PROCESS_TIMEOUT_S
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as api:
        while time.perf_counter() < deadline:
            cases = [api.get(f"/api/cases/{cid}").json() for cid in case_ids.values()]
            if all(c["cells_processed"] >= c["cells_total"] > 0 for c in cases):
                return
            time.sleep(1)
    raise TimeoutError(f"cases not processed after {PROCESS_TIMEOUT_S} s")


def _exact(url: str, token: str, case_ids: dict[str, int], n: int) -> dict[str, bool]:
    """Per case: exactly n cells, all processed, each with one prediction, counts summing to n."""
    out = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as api:
        for accession, cid in case_ids.items():
            case = api.get(f"/api/cases/{cid}").json()
            cells = api.get(f"/api/cases/{cid}/cells").json()
            out[accession] = (case["cells_total"] == case["cells_processed"] == len(cells) == n
                              and sum(case["counts"].values()) == n
                              and len({c["id"] for c in cells if c["status"] == "done" and c["predicted"]}) == n)
    return out


def run_load(url: str, token: str, reviewers: list[str], password: str, uploaders: int, n_cells: int,
             data_dir: Path, pids: dict[str, int]) -> dict:
    """The load itself against a running app; `pids` (may be empty) are measured for memory."""
    picked = pick_cells(data_dir, uploaders * n_cells, distinct=True)
    rec, done, case_ids = Recorder(), threading.Event(), {}
    stamp = time.strftime("%H%M%S")
    upload_threads = [threading.Thread(target=_upload, args=(url, token, f"LOAD-{stamp}-{i:02d}",
                                                             picked[i * n_cells:(i + 1) * n_cells], rec, case_ids))
                      for i in range(uploaders)]
    review_threads = [threading.Thread(target=_review, args=(url, name, password, token, rec, done, i))
                      for i, name in enumerate(reviewers)]
    with MemoryPeak(pids) as memory:
        t0 = time.perf_counter()
        for t in review_threads + upload_threads:
            t.start()
        for t in upload_threads:
            t.join()
        if case_ids:
            _wait_processed(url, token, case_ids)
        processing_s = time.perf_counter() - t0
        done.set()
        for t in review_threads:
            t.join()
        wall = time.perf_counter() - t0
    exact = _exact(url, token, case_ids, n_cells)
    inference = worker_inference(url, token)
    latencies = [s for _, s in rec.samples]
    kinds = sorted({k for k, _ in rec.samples})
    return {
        "uploaders": uploaders, "cells_per_case": n_cells, "reviewers": len(reviewers),
        "duration_s": round(wall, 1), "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 2),
        "latency_ms_p50": percentile_ms(latencies, 50), "latency_ms_p95": percentile_ms(latencies, 95),
        "latency_ms_by_kind": {k: {"n": len(v), "p50": percentile_ms(v, 50), "p95": percentile_ms(v, 95)}
                               for k in kinds for v in [[s for kk, s in rec.samples if kk == k]]},
        "errors": len(rec.errors), "error_samples": rec.errors[:10], "relabel_conflicts_409": rec.conflicts,
        "seconds_to_all_processed": round(processing_s, 1),
        "cells_per_s": round(uploaders * n_cells / processing_s, 2),
        "peak_rss_mb": round(memory.peak_total, 1) if pids else None,
        "peak_rss_mb_by_process": {k: round(v, 1) for k, v in memory.peak.items()},
        "cases_exact": all(exact.values()) and len(exact) == uploaders,
        "cases_exact_detail": exact,
        "worker_inference": inference,
    }


def worker_inference(url: str, token: str) -> list[dict]:
    """Each worker's backend, precision and load-time check, from GET /api/model-info."""
    try:
        r = httpx.get(f"{url}/api/model-info", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        workers = r.json().get("workers", []) if r.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        return []
    keys = ("top1_agreement", "max_prob_diff", "max_cam_diff", "passed")
    return [{"pid": w.get("pid"), "backend": w.get("backend"), "precision": w.get("precision"),
             "cpu_flags": w.get("cpu_flags"), "fallback_reason": w.get("fallback_reason"),
             "check": {k: (w.get("check") or {}).get(k) for k in keys}} for w in workers]


@contextlib.contextmanager
def started_stack(workers: int, reviewers: int) -> Iterator[tuple[str, str, list[str], dict[str, int]]]:
    """PostgreSQL, Redis, `marrow web` (production mode) and `workers` workers on loopback, with
    an admin token and reviewer accounts; yields (url, token, reviewer names, pids)."""
    from app.db import make_engine, make_sessionmaker, upgrade
    from app.bench.servers import (
        free_port,
        local_postgres,
        local_redis,
        stop_process_group,
        wait_for,
    )
    from app.auth.tokens import issue_token
    from app.users.service import create_user

    with tempfile.TemporaryDirectory(prefix="marrow-load-") as tmp, local_postgres() as pg, \
            local_redis() as redis_url:
        db_url = pg.createdb("marrow_load")
        upgrade(db_url)
        engine = make_engine(db_url)
        with make_sessionmaker(engine)() as s:
            token = issue_token(s, create_user(s, "bench-admin", "admin", REVIEWER_PASSWORD))
            names = [create_user(s, f"bench-reviewer-{i}", "reviewer", REVIEWER_PASSWORD).name
                     for i in range(reviewers)]
        engine.dispose()
        settings = get_settings()  # the product's model and its cache (exported and compiled once, for every run)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MARROW_", "DATABASE_URL", "BROKER_URL"))}
        env.update(DATABASE_URL=db_url, BROKER_URL=redis_url, MARROW_ENV="production",
                   MARROW_SECRET_KEY=secrets.token_hex(32), MARROW_DATA_DIR=tmp,
                   MARROW_MODEL_DIR=str(settings.model_dir.resolve()),
                   MARROW_MODEL_CACHE_DIR=str(settings.model_cache.resolve()), PYTHONUNBUFFERED="1")
        port = free_port()
        procs: dict[str, tuple] = {}
        try:
            for name, argv in [("web", marrow_command("web", "--port", str(port))),
                               *[(f"worker-{i}", marrow_command("worker")) for i in range(workers)]]:
                log = Path(tmp) / f"{name}.log"
                with open(log, "wb") as fh:
                    procs[name] = (subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                                    start_new_session=True), log)
            url = f"http://127.0.0.1:{port}"
            proc, log = procs["web"]
            wait_for(lambda: httpx.get(f"{url}/api/health", timeout=2).status_code == 200, 180, "marrow web",
                     proc, log)
            for name, (proc, log) in procs.items():
                if name != "web":
                    wait_for(lambda log=log: "ready." in log.read_text(errors="replace"), 300, name, proc, log)
            print(f"bench-load: web and {workers} workers ready on {url}", file=sys.stderr)
            yield url, token, names, {name: proc.pid for name, (proc, _) in procs.items()}
        finally:
            for proc, _ in procs.values():
                stop_process_group(proc)


def benchmark(args: argparse.Namespace) -> dict:
    """`marrow bench-load` (arguments: app/cli/server.py)."""
    data_dir = args.data_dir or default_data_dir()
    if min(args.uploaders, args.cells) < 1 or args.reviewers < 0 or (args.workers < 1 and not args.url):
        raise ValueError("--uploaders, --cells and --workers must be at least 1, --reviewers at least 0")
    if args.url:
        if not args.token or not args.reviewer:
            raise ValueError("--url needs --token and --reviewer NAME (their password in $MARROW_BENCH_PASSWORD)")
        password = os.environ.get("MARROW_BENCH_PASSWORD", "")
        return run_load(args.url.rstrip("/"), args.token, args.reviewer, password, args.uploaders, args.cells,
                        data_dir, {})
    with started_stack(args.workers, args.reviewers) as (url, token, names, pids):
        result = run_load(url, token, names, REVIEWER_PASSWORD, args.uploaders, args.cells, data_dir, pids)
    workers = f"{args.workers} marrow worker" + ("s" if args.workers != 1 else "")
    return {"stack": f"PostgreSQL + Redis + marrow web (production) + {workers}, loopback", **result}
