"""The production stack, for real: `marrow web` + `marrow worker` as separate processes on
PostgreSQL and Redis, driven through the JSON API the way a LIS or script would.

The commands and environment variables here are the ones docker-compose.yml runs
(tests/integration/test_deployment_files.py checks that they agree).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from support.deployment import HEALTH_PATH, STACK_ENV_VARS, WEB_COMMAND, WORKER_COMMAND, WORKER_HEALTHCHECK

from app.bench.cells import pick_cells as spread_cells
from app.bench.servers import free_port, wait_for

CLASS_CODES = ("BLA", "EOS", "LYT", "MON", "NGS", "NIF", "PMO")

N_CELLS = 12
WEB_START_TIMEOUT_S = 120
CLI_TIMEOUT_S = 120
PROCESSING_TIMEOUT_S = 420
HTTP_TIMEOUT_S = 60

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODEL = REPO_ROOT / "models" / "rexnet150-marrow13"


def marrow_argv(*args: str) -> list[str]:
    """The installed `marrow` console script beside this interpreter (else the module entry)."""
    script = Path(sys.executable).parent / "marrow"
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())", *args]


def pick_cells(root: Path, n: int) -> list[Path]:
    """n real cells spread over the class folders (app.bench.cells); skips when there are fewer."""
    try:
        return spread_cells(root, n)
    except ValueError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, request) -> Path:
    """The shipped model when the repository has it (copied, so caches stay out of the tree),
    else a random-weights checkpoint: this test checks the plumbing, not accuracy."""
    if (SHIPPED_MODEL / "model.safetensors").is_file() and (SHIPPED_MODEL / "model_card.json").is_file():
        dest = tmp_path_factory.mktemp("model") / SHIPPED_MODEL.name
        shutil.copytree(SHIPPED_MODEL, dest, ignore=shutil.ignore_patterns(".cache", "*.onnx"))
        return dest
    return request.getfixturevalue("random_checkpoint")


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(marrow_argv(*args), env=env, input=stdin, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, cwd=REPO_ROOT)
    assert proc.returncode == 0, (f"`marrow {' '.join(args)}` exited {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def as_list(payload, *keys: str) -> list:
    """A JSON list, or the list under one of `keys` of a wrapping object."""
    if isinstance(payload, list):
        return payload
    for key in keys:
        if isinstance(payload, dict) and isinstance(payload.get(key), list):
            return payload[key]
    raise AssertionError(f"expected a list (or an object with one of {keys}), got: {payload!r}")


def count_of(value) -> int:
    """A class count: a number, or an object holding one under count/n."""
    if isinstance(value, dict):
        value = value.get("count", value.get("n"))
    assert isinstance(value, int), f"not a count: {value!r}"
    return value


def test_web_and_worker_on_postgres_and_redis(real_cells_dir, model_dir, postgres_url, redis_url,
                                              tmp_path, start_process):
    cells = pick_cells(real_cells_dir, N_CELLS)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARROW_", "DATABASE_URL", "BROKER_URL"))}
    env.update({
        "DATABASE_URL": postgres_url,
        "BROKER_URL": redis_url,
        "MARROW_DATA_DIR": str(data_dir),
        "MARROW_MODEL_DIR": str(model_dir),
        "MARROW_ENV": "development",
        "MARROW_DEVICE": "cpu",
        "MARROW_BATCH_SIZE": "8",
        "OMP_NUM_THREADS": "2",
        "PYTHONUNBUFFERED": "1",
    })
    assert set(STACK_ENV_VARS) <= env.keys()

    # The web process first: it prepares the database the CLI and the worker then use.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = start_process("web", marrow_argv(*WEB_COMMAND[1:], "--host", "127.0.0.1", "--port", str(port)),
                        env, cwd=tmp_path)
    with httpx.Client(base_url=base, timeout=HTTP_TIMEOUT_S) as anon:
        wait_for(lambda: anon.get("/api/cases", timeout=2).status_code > 0, WEB_START_TIMEOUT_S,
                 f"`marrow web` on {base}", web.proc, web.log, interval=0.5)
        unauth = anon.get("/api/cases")
        assert unauth.status_code == 401, f"/api/cases without a token: {unauth.status_code} {unauth.text[:300]}"
        health = anon.get(HEALTH_PATH)  # what docker-compose.yml's healthcheck asks, with no token
        assert health.status_code == 200, f"{HEALTH_PATH}: {health.status_code} {health.text[:300]}"

    run_cli(env, "users", "add", "it-admin", "--role", "admin", "--password-stdin",
            stdin="correct horse battery staple 42\n")
    token_out = run_cli(env, "token", "it-admin").stdout.strip().splitlines()
    assert token_out, "`marrow token it-admin` printed nothing"
    token = token_out[-1].strip()

    worker = start_process("worker", marrow_argv(*WORKER_COMMAND[1:]), env, cwd=tmp_path)

    def logs() -> str:
        return f"\n{web.tail()}\n{worker.tail()}"

    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=HTTP_TIMEOUT_S) as api:
        r = api.post("/api/cases", json={"accession": "IT-0001"})
        assert r.status_code in (200, 201), f"POST /api/cases: {r.status_code} {r.text[:500]}{logs()}"
        case_id = r.json()["id"]

        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in cells]
        files.append(("files", ("bad.jpg", b"this is a text file, not a JPEG\n", "image/jpeg")))
        r = api.post(f"/api/cases/{case_id}/uploads", files=files)
        assert r.status_code == 202, f"upload: {r.status_code} {r.text[:500]}{logs()}"
        body = r.json()
        assert "upload_id" in body, body
        accepted = body["accepted"]
        assert (len(accepted) if isinstance(accepted, list) else accepted) == N_CELLS, body
        rejected = {item["file"]: item["reason"] for item in body["rejected"]}
        assert "bad.jpg" in rejected and rejected["bad.jpg"], body
        assert len(rejected) == 1, f"real cells were rejected: {body}"

        # The worker processes the batch; the web process only reports progress.
        def done():
            assert worker.alive(), f"`marrow worker` exited ({worker.proc.returncode}){logs()}"
            c = api.get(f"/api/cases/{case_id}").json()
            return c if c["cells_total"] == N_CELLS and c["cells_processed"] == c["cells_total"] else None

        t0 = time.monotonic()
        try:
            case = wait_for(done, PROCESSING_TIMEOUT_S, "processing the upload", interval=1.0)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\nlast case: {api.get(f'/api/cases/{case_id}').text[:500]}{logs()}")
        print(f"{N_CELLS} cells processed in {time.monotonic() - t0:.1f} s")

        counts = case["counts"]
        total = sum(count_of(v) for v in (counts.values() if isinstance(counts, dict) else counts))
        assert total == N_CELLS, f"counts {counts} sum to {total}, not {N_CELLS}"

        r = api.get(f"/api/cases/{case_id}/cells")
        assert r.status_code == 200, r.text[:500]
        case_cells = as_list(r.json(), "cells", "items")
        assert len(case_cells) == N_CELLS, case_cells
        card = SHIPPED_MODEL / "model_card.json"
        codes = set(CLASS_CODES) | ({c["code"] for c in json.loads(card.read_text())["classes"]} if card.is_file() else set())
        for cell in case_cells:
            predicted = cell["predicted"]
            predicted_code = predicted.get("code") if isinstance(predicted, dict) else predicted
            assert predicted_code in codes, cell
            assert len(cell["top3"]) == 3, cell

        for kind in ("thumbnail", "gradcam"):
            for cell in case_cells[:3]:
                r = api.get(f"/api/cells/{cell['id']}/{kind}")
                assert r.status_code == 200, f"{kind} of cell {cell['id']}: {r.status_code} {r.text[:300]}"
                assert r.headers["content-type"].startswith("image/"), r.headers
                with Image.open(io.BytesIO(r.content)) as im:
                    im.load()
                    assert im.width > 8 and im.height > 8

        r = api.get(f"/api/cases/{case_id}/differential.csv")
        assert r.status_code == 200, r.text[:500]
        assert "csv" in r.headers["content-type"], r.headers
        rows = list(csv.reader(io.StringIO(r.text)))
        named = {c for row in rows for c in row}
        missing = [c for c in CLASS_CODES if c not in named]
        assert not missing, f"differential.csv lacks rows for {missing}:\n{r.text}"

    # docker-compose.yml's worker healthcheck, against this real worker.
    check = subprocess.run([sys.executable, *WORKER_HEALTHCHECK[1:]], env=env, cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert check.returncode == 0, f"worker healthcheck: {check.stdout}{check.stderr}{logs()}"

    assert web.alive(), f"`marrow web` died{logs()}"
    assert worker.alive(), f"`marrow worker` died{logs()}"
