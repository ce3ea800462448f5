"""`marrow bench-app`: the whole product, timed end to end through its own JSON API.

Starts `marrow run` on a fresh data dir (or targets a running app) and, in each of `rounds`
rounds, uploads N real cells (others each round) in one request into a new case and times the
upload request to every cell processed. The reference is the raw batched model
(Predictor.predict with Grad-CAM, the worker's batch size) in this process, measured before the
first round and after each while the app sits idle: each round's ratio takes the faster of the
model runs on either side of it, so load from elsewhere cannot flatter it, and the reported
`pipeline_ratio` is the median of the rounds' ratios. On a shared VM the machine's speed moves
by ±10 % between minutes, so ratios are only taken between runs seconds apart. After the last
round: response times of the cell list and of relabel round trips.

Where it started the app it also reports the CPU milliseconds per cell the web process and the
worker spent on each round against the model's own: on a machine whose cores the network fills,
every other millisecond lowers the ratio. `cpu_steal_share` is the share of the machine's CPU
time the hypervisor took (app.bench.machine); `cpu_idle_share` the share nothing used: near 0 in
the app rounds means the ratio is set by CPU per cell, which overlapping steps (the upload with
processing, say) cannot raise. `upload_answered_s` is when the upload request was answered (its
cells checked, stored and queued); processing starts then.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from app.bench.cells import another_label, default_data_dir, percentile_ms, pick_cells
from app.bench.servers import free_port
from app.bench.machine import CpuMeter, steal_note
from app.cli import marrow_command
from app.config import get_settings

WARMUP_CELLS = 16
LIST_REQUESTS = 40
RELABEL_REQUESTS = 100
MODEL_CELLS = 160
START_TIMEOUT_S = 180
PROCESS_TIMEOUT_S = 1800
POLL_S = (0.02, 0.5)  # the shortest and longest wait between two reads of an upload's progress


@contextlib.contextmanager
def started_app(data_dir: Path) -> Iterator[tuple[str, str, int]]:
    """`marrow run` on a free port with everything under data_dir; yields (url, token, its pid)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "MARROW_STORAGE_DIR")}
    settings = get_settings()  # the product's model and its cache (exported and compiled once, for every run)
    env.update(MARROW_DATA_DIR=str(data_dir), MARROW_MODEL_DIR=str(settings.model_dir.resolve()),
               MARROW_MODEL_CACHE_DIR=str(settings.model_cache.resolve()))
    subprocess.run(marrow_command("users", "add", "bench", "--role", "admin", "--password-stdin"), env=env,
                   input="bench-password\n", text=True, check=True, capture_output=True)
    token = subprocess.run(marrow_command("token", "bench"), env=env, text=True, check=True,
                           capture_output=True).stdout.split()[-1]
    port = free_port()
    log = (data_dir / "app.log").open("w")
    proc = subprocess.Popen(marrow_command("run", "--port", str(port)), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start; see {data_dir / 'app.log'}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        try:
            yield url, token, proc.pid
        except httpx.TransportError as exc:  # the app refuses connections: say why, if it has stopped
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                raise
            log.flush()
            tail = "\n".join((data_dir / "app.log").read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"the app stopped during the benchmark (exit code {proc.returncode}); the end of "
                               f"{data_dir / 'app.log'}:\n{tail}") from exc
    finally:
        proc.send_signal(2)  # SIGINT, as Ctrl-C
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _upload_and_wait(api: httpx.Client, accession: str, cells: list[Path]) -> tuple[int, float, float]:
    """(case id, seconds until every cell was processed, seconds until the upload was answered)."""
    case_id = api.post("/api/cases", json={"accession": accession}).raise_for_status().json()["id"]
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in cells]
    t0 = time.perf_counter()
    body = api.post(f"/api/cases/{case_id}/uploads", files=files).raise_for_status().json()
    if body["rejected"]:
        raise RuntimeError(f"cells rejected: {body['rejected'][:3]}")
    answered = time.perf_counter() - t0
    print(f"{accession}: upload answered in {answered:.2f} s", file=sys.stderr)
    copies = [a["file"] for a in body["accepted"] if a["duplicate"]]
    if copies:  # one cell per image: the wait below for a cell per file would never end
        raise RuntimeError(f"{accession}: {len(copies)} images sent twice, e.g. {copies[0]}")
    deadline = t0 + PROCESS_TIMEOUT_S
    while time.perf_counter() < deadline:
        upload = api.get(f"/api/uploads/{body['upload_id']}").raise_for_status().json()
        if upload["cells_total"] == len(cells) and upload["cells_done"] == len(cells):
            seconds = time.perf_counter() - t0
            case = api.get(f"/api/cases/{case_id}").raise_for_status().json()
            if case["cells_processed"] != len(cells):
                raise RuntimeError(f"{accession}: upload done but {case['cells_processed']} cells processed")
            return case_id, seconds, answered
        time.sleep(_next_poll(upload["cells_done"], len(cells), time.perf_counter() - t0 - answered))
    raise TimeoutError(f"{accession}: not processed after {PROCESS_TIMEOUT_S} s")


def _next_poll(done: int, total: int, seconds: float) -> float:
    """How long to wait before reading an upload's progress again: half the time its remaining
    cells should take at the rate so far, within POLL_S. The end is then seen within a few
    hundredths of a second, with fewer reads than at a fixed 0.2 s (each costs the web a few
    CPU ms, which the cells' processing would otherwise have had)."""
    if done <= 0 or seconds <= 0:
        return 4 * POLL_S[0]
    return min(POLL_S[1], max(POLL_S[0], (total - done) * seconds / done / 2))


def _timed(call, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        call(i).raise_for_status()
        out.append(time.perf_counter() - t)
    return out


def _cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of the app process (web) and its children (worker)."""
    web = psutil.Process(pid)
    return {"web": _busy(web), "worker": sum(_busy(c) for c in web.children(recursive=True))}


def _busy(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


class RawModel:
    """The reference: Predictor.predict (with Grad-CAM) over decoded cells, batch by batch at the
    worker's batch size, loaded once."""

    def __init__(self, cells: list[Path]):
        from app.ml.decode import decode_path
        from app.ml.pipeline import DEFAULT_BATCH_SIZE
        from app.ml.predictor import Predictor

        settings = get_settings()
        self.predictor = Predictor(settings.model_dir, device=settings.device, backend=settings.backend,
                                   cache_dir=settings.model_cache)
        self.images = [decode_path(p).rgb for p in cells[:MODEL_CELLS]]
        self.batch_size = settings.batch_size or DEFAULT_BATCH_SIZE[settings.device]
        self.predictor.predict(self.images[:self.batch_size], with_cam=True)  # warm-up

    def measure(self) -> dict:
        b = self.batch_size
        t, cpu, meter = time.perf_counter(), time.process_time(), CpuMeter()
        for i in range(0, len(self.images), b):
            self.predictor.predict(self.images[i:i + b], with_cam=True)
        seconds = time.perf_counter() - t
        return {"cells_per_s": round(len(self.images) / seconds, 2),
                "cpu_ms_per_cell": round(1000 * (time.process_time() - cpu) / len(self.images), 2),
                "cpu_steal_share": meter.steal_share(), "cpu_idle_share": meter.idle_share()}


def _app_round(api: httpx.Client, cells: list[Path], pid: int | None, n: int) -> dict:
    """One upload of every cell into a new case, timed to processed."""
    cpu_before = _cpu_seconds(pid) if pid else None
    meter = CpuMeter()
    case_id, seconds, answered = _upload_and_wait(api, f"bench-{int(time.time())}-{n}", cells)
    out = {"case_id": case_id, "seconds_to_processed": round(seconds, 2),
           "cells_per_s": round(len(cells) / seconds, 2), "upload_answered_s": round(answered, 2),
           "cpu_steal_share": meter.steal_share(), "cpu_idle_share": meter.idle_share()}
    if pid:
        out["cpu_ms_per_cell"] = {k: round(1000 * (v - cpu_before[k]) / len(cells), 2)
                                  for k, v in _cpu_seconds(pid).items()}
    return out


def _review_latency(api: httpx.Client, case_id: int) -> dict:
    rows = api.get(f"/api/cases/{case_id}/cells").json()  # untimed: the first read warms caches
    listing = _timed(lambda _: api.get(f"/api/cases/{case_id}/cells"), LIST_REQUESTS)

    def relabel(i: int) -> httpx.Response:  # a different cell each time, with its version
        cell = rows[i % len(rows)]
        label = another_label(cell["label"])
        return api.patch(f"/api/cells/{cell['id']}", json={"label": label, "version": cell["version"]})

    relabels = _timed(relabel, min(RELABEL_REQUESTS, len(rows)))
    return {"cells_list_ms_p50": percentile_ms(listing, 50, 2), "cells_list_ms_p95": percentile_ms(listing, 95, 2),
            "relabel_ms_p50": percentile_ms(relabels, 50, 2), "relabel_ms_p95": percentile_ms(relabels, 95, 2)}


def _round_result(n: int, app: dict, before: dict, after: dict) -> dict:
    """Round n's figures against the faster of the model runs either side of it (said on stderr)."""
    model = max(before, after, key=lambda m: m["cells_per_s"])
    result = {"cells_per_s": app["cells_per_s"], "model_cells_per_s": model["cells_per_s"],
              "pipeline_ratio": round(app["cells_per_s"] / model["cells_per_s"], 3),
              "seconds_to_processed": app["seconds_to_processed"], "upload_answered_s": app["upload_answered_s"],
              "cpu_ms_per_cell": {"model": model["cpu_ms_per_cell"], **app.get("cpu_ms_per_cell", {})},
              "cpu_steal_share": {"model": max(_known([before, after], "cpu_steal_share"), default=None),
                                  "app": app["cpu_steal_share"]},
              "cpu_idle_share": {"model": model["cpu_idle_share"], "app": app["cpu_idle_share"]}}
    print(f"round {n + 1}: app {result['cells_per_s']} cells/s, model {result['model_cells_per_s']} cells/s",
          file=sys.stderr)
    for what, share in result["cpu_steal_share"].items():
        if note := steal_note(share, f"round {n + 1}'s {what} part"):
            print(note, file=sys.stderr)
    return result


def _rounds(url: str, token: str, pid: int | None, raw: RawModel, batches: list[list[Path]],
            warmup: list[Path]) -> tuple[list[dict], dict, list[dict]]:
    """Model, then (app round, model) for each batch of cells; then the review latencies."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as api:
        _upload_and_wait(api, "bench-warmup", warmup)  # the worker has its model loaded after this
        before, per_round = raw.measure(), []
        for n, cells in enumerate(batches):
            app = _app_round(api, cells, pid, n)
            after = raw.measure()
            per_round.append(_round_result(n, app, before, after))
            before = after
        latency = _review_latency(api, app["case_id"])
        workers = api.get("/api/model-info").json().get("workers", [])
    return per_round, latency, workers


def run_benchmark(url: str | None, token: str | None, n_cells: int, data_dir: Path | None, rounds: int = 3) -> dict:
    if rounds < 1 or n_cells < 1:
        raise ValueError("--cells and --rounds must be at least 1")
    # Other cells in every round: the storage keeps one copy of an image, its thumbnail and its
    # heatmap, so cells uploaded before would skip writing their files.
    try:
        picked = pick_cells(data_dir or default_data_dir(), n_cells * rounds + WARMUP_CELLS, distinct=True)
    except ValueError as exc:
        raise ValueError(f"{exc}: each round uploads other cells (--cells x --rounds + {WARMUP_CELLS})") from exc
    batches = [picked[n * n_cells:(n + 1) * n_cells] for n in range(rounds)]
    warmup = picked[rounds * n_cells:]
    if url:
        if not token:
            raise ValueError("--url needs --token")
        raw = RawModel(batches[0])
        per_round, latency, workers = _rounds(url.rstrip("/"), token, None, raw, batches, warmup)
    else:
        with tempfile.TemporaryDirectory(prefix="marrow-bench-") as tmp:
            raw = RawModel(batches[0])
            with started_app(Path(tmp)) as (app_url, app_token, pid):
                per_round, latency, workers = _rounds(app_url, app_token, pid, raw, batches, warmup)
    info = raw.predictor.describe()
    return {"rounds": rounds, "cells": n_cells,
            **{k: _median(per_round, k) for k in ("seconds_to_processed", "cells_per_s", "upload_answered_s",
                                                  "model_cells_per_s", "pipeline_ratio")},
            **latency,
            "model_backend": info["backend"], "model_precision": info["precision"],
            "worker_backend": workers[0].get("backend") if workers else None,
            "worker_precision": workers[0].get("precision") if workers else None,
            "cpu_flags": info["cpu_flags"], "backend_check": info["check"],
            # over the rounds: the median CPU a cell and idle share, the most any part had stolen
            "cpu_ms_per_cell": _medians([r["cpu_ms_per_cell"] for r in per_round]),
            "cpu_idle_share": _medians([r["cpu_idle_share"] for r in per_round]),
            "cpu_steal_share": {part: max(_known([r["cpu_steal_share"] for r in per_round], part), default=None)
                                for part in ("model", "app")},
            "per_round": per_round}


def _known(parts: list[dict], key: str) -> list[float]:
    """The values of `key` the parts have (steal is None off Linux)."""
    return [p[key] for p in parts if p[key] is not None]


def _median(rows: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 3 if key == "pipeline_ratio" else 2)


def _medians(rows: list[dict]) -> dict:
    """Key by key, the median over the rows that have it (None where none has)."""
    return {k: (round(statistics.median(v), 4) if (v := _known(rows, k)) else None) for k in rows[0]}
