"""`marrow bench-app`: the whole product, timed end to end through its own JSON API.

Starts `marrow run` on a fresh data dir (or targets a running app), uploads N real cells in one
request, and measures: seconds from the upload request to every cell processed, the cells/s
that gives, the raw batched model throughput (Predictor.predict with Grad-CAM, same batch size,
measured in this process before the app starts and after it stops, so the two never share the
CPU; the faster of the two counts, so load from elsewhere cannot flatter the ratio), response
times of the 500-cell list and of a relabel round trip. Where it started the app it also
reports the CPU milliseconds per cell the web process and the worker spent on the timed upload
against the model's own: on a machine whose cores the network fills, every other millisecond
lowers the ratio, and the shares say where they go, less distorted by other load than seconds.
`cpu_steal_share` is the share of the machine's CPU time the hypervisor took during each timed
part (app.bench.machine): a run whose model and app parts were not disturbed alike is not
comparable with others. `cpu_idle_share` is the share the cores sat idle: near 0 in the app part
means the ratio is set by CPU per cell, which overlapping steps (the upload with processing, say)
cannot raise. `upload_answered_s` is when the upload request was answered (its cells checked,
stored and queued); processing starts then.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from app.bench.cells import another_label, default_data_dir, percentile_ms, pick_cells
from app.bench.machine import CpuMeter, steal_note
from app.cli import marrow_command
from app.config import get_settings

WARMUP_CELLS = 16
LIST_REQUESTS = 40
RELABEL_REQUESTS = 100
MODEL_CELLS = 160
START_TIMEOUT_S = 180
PROCESS_TIMEOUT_S = 1800


@contextlib.contextmanager
def started_app(data_dir: Path) -> Iterator[tuple[str, str, int]]:
    """`marrow run` on a free port with everything under data_dir; yields (url, token, its pid)."""
    import socket

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "MARROW_STORAGE_DIR")}
    env.update(MARROW_DATA_DIR=str(data_dir), MARROW_MODEL_DIR=str(get_settings().model_dir.resolve()))
    subprocess.run(marrow_command("users", "add", "bench", "--role", "admin", "--password-stdin"), env=env,
                   input="bench-password\n", text=True, check=True, capture_output=True)
    token = subprocess.run(marrow_command("token", "bench"), env=env, text=True, check=True,
                           capture_output=True).stdout.split()[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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
        yield url, token, proc.pid
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
    deadline = t0 + PROCESS_TIMEOUT_S
    while time.perf_counter() < deadline:  # the upload's progress, as the upload page polls it
        upload = api.get(f"/api/uploads/{body['upload_id']}").raise_for_status().json()
        if upload["cells_total"] == len(cells) and upload["cells_done"] == len(cells):
            seconds = time.perf_counter() - t0
            case = api.get(f"/api/cases/{case_id}").raise_for_status().json()
            if case["cells_processed"] != len(cells):
                raise RuntimeError(f"{accession}: upload done but {case['cells_processed']} cells processed")
            return case_id, seconds, answered
        time.sleep(0.2)
    raise TimeoutError(f"{accession}: not processed after {PROCESS_TIMEOUT_S} s")


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


def measure_app(url: str, token: str, cells: list[Path], warmup: list[Path], pid: int | None = None) -> dict:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as api:
        _upload_and_wait(api, "bench-warmup", warmup)  # the worker has its model loaded after this
        cpu_before = _cpu_seconds(pid) if pid else None
        meter = CpuMeter()
        case_id, seconds, answered = _upload_and_wait(api, f"bench-{int(time.time())}", cells)
        steal, idle = meter.steal_share(), meter.idle_share()
        cpu = {k: round(1000 * (v - cpu_before[k]) / len(cells), 2) for k, v in _cpu_seconds(pid).items()} \
            if pid else {}
        rows = api.get(f"/api/cases/{case_id}/cells").json()  # untimed: the first read warms caches
        listing = _timed(lambda _: api.get(f"/api/cases/{case_id}/cells"), LIST_REQUESTS)

        def relabel(i: int) -> httpx.Response:  # a different cell each time, with its version
            cell = rows[i % len(rows)]
            label = another_label(cell["label"])
            return api.patch(f"/api/cells/{cell['id']}", json={"label": label, "version": cell["version"]})

        relabels = _timed(relabel, min(RELABEL_REQUESTS, len(rows)))
        workers = api.get("/api/model-info").json().get("workers", [])
    return {"seconds_to_processed": round(seconds, 2), "cells_per_s": round(len(cells) / seconds, 2),
            "upload_answered_s": round(answered, 2),
            "cells_list_ms_p50": percentile_ms(listing, 50, 2), "cells_list_ms_p95": percentile_ms(listing, 95, 2),
            "relabel_ms_p50": percentile_ms(relabels, 50, 2), "relabel_ms_p95": percentile_ms(relabels, 95, 2),
            "worker_backend": workers[0].get("backend") if workers else None,
            "worker_precision": workers[0].get("precision") if workers else None, "cpu_ms_per_cell": cpu,
            "cpu_steal_share": steal, "cpu_idle_share": idle}


def model_throughput(cells: list[Path], cache_dir: Path | None) -> tuple[float, dict]:
    """Cells/s of Predictor.predict (with Grad-CAM) over decoded cells, batch by batch, and the
    CPU milliseconds per cell it took."""
    from app.ml.decode import decode_path
    from app.ml.pipeline import DEFAULT_BATCH_SIZE
    from app.ml.predictor import Predictor

    settings = get_settings()
    predictor = Predictor(settings.model_dir, device=settings.device, backend=settings.backend,
                          cache_dir=cache_dir or settings.model_cache)
    images = [decode_path(p).rgb for p in cells[:MODEL_CELLS]]
    b = settings.batch_size or DEFAULT_BATCH_SIZE[settings.device]  # the worker's
    predictor.predict(images[:b], with_cam=True)  # warm-up
    t, cpu, meter = time.perf_counter(), time.process_time(), CpuMeter()
    for i in range(0, len(images), b):
        predictor.predict(images[i:i + b], with_cam=True)
    rate = len(images) / (time.perf_counter() - t)
    info = predictor.describe()
    return rate, {"backend": info["backend"], "precision": info["precision"], "cpu_flags": info["cpu_flags"],
                  "check": info["check"], "cpu_ms_per_cell": round(1000 * (time.process_time() - cpu) / len(images), 2),
                  "cpu_steal_share": meter.steal_share(), "cpu_idle_share": meter.idle_share()}


def run_benchmark(url: str | None, token: str | None, n_cells: int, data_dir: Path | None) -> dict:
    picked = pick_cells(data_dir or default_data_dir(), n_cells + WARMUP_CELLS)
    cells, warmup = picked[:n_cells], picked[n_cells:]
    if url:
        if not token:
            raise ValueError("--url needs --token")
        before, info = model_throughput(cells, None)
        app = measure_app(url.rstrip("/"), token, cells, warmup)
        after, after_info = model_throughput(cells, None)
    else:
        with tempfile.TemporaryDirectory(prefix="marrow-bench-") as tmp:
            cache = Path(tmp) / "model-cache"  # exported once, then the app's worker reuses it
            before, info = model_throughput(cells, cache)
            with started_app(Path(tmp)) as (app_url, app_token, pid):
                app = measure_app(app_url, app_token, cells, warmup, pid)
            after, after_info = model_throughput(cells, cache)
    model = max(before, after)
    steal = {"model_before": info["cpu_steal_share"], "app": app["cpu_steal_share"],
             "model_after": after_info["cpu_steal_share"]}
    for what, share in steal.items():
        if note := steal_note(share, what.replace("_", " ")):
            print(note, file=sys.stderr)
    idle = {"model_before": info["cpu_idle_share"], "app": app["cpu_idle_share"],
            "model_after": after_info["cpu_idle_share"]}
    return {"seconds_to_processed": app["seconds_to_processed"], "cells_per_s": app["cells_per_s"],
            "upload_answered_s": app["upload_answered_s"], "model_cells_per_s": round(model, 2), "pipeline_ratio": round(app["cells_per_s"] / model, 3),
            **{k: v for k, v in app.items() if k.endswith("_ms_p50") or k.endswith("_ms_p95")},
            "model_backend": info["backend"], "model_precision": info["precision"],
            "worker_backend": app["worker_backend"], "worker_precision": app["worker_precision"],
            "cpu_ms_per_cell": {"model": info["cpu_ms_per_cell"], **app["cpu_ms_per_cell"]},
            "cpu_flags": info["cpu_flags"], "backend_check": info["check"], "cpu_steal_share": steal,
            "cpu_idle_share": idle}
