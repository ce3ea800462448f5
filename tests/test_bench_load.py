"""`marrow bench-load` on real cells, small: PostgreSQL, Redis, `marrow web` and a worker
started by the command, two uploading clients and one reviewer at once (two workers racing on
one queue: tests/reliability).

Not a timed test: it checks the command's JSON (what the README's load table and issue 14's
memory target are read from), never a speed."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.bench.servers import postgres_bindir, redis_binary
from app.cli import main, marrow_command

WORKER_RSS_LIMIT_MB = 1024  # issue 14: a worker whose backend needs no PyTorch stays under 1 GB


def test_bench_load_counts_every_case_exactly_and_reports_each_process(real_cells_dir: Path, tmp_path: Path):
    if postgres_bindir() is None or redis_binary() is None:
        pytest.skip("PostgreSQL or redis-server is not installed (scripts/test.sh installs both)")
    out = tmp_path / "load.json"
    done = subprocess.run(marrow_command("bench-load", "--uploaders", "2", "--cells", "6", "--reviewers", "1", "--workers",
                                         "1", "--data-dir", str(real_cells_dir), "--json", str(out)),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert "1 marrow worker," in result["stack"]
    assert (result["uploaders"], result["cells_per_case"], result["reviewers"]) == (2, 6, 1)
    assert result["errors"] == 0 and result["error_samples"] == [], result["error_samples"]
    assert result["cases_exact"] and len(result["cases_exact_detail"]) == 2
    assert all(result["cases_exact_detail"].values())
    assert result["requests"] > 0 and {"upload a case", "page: review"} <= set(result["latency_ms_by_kind"])
    rss = result["peak_rss_mb_by_process"]
    assert set(rss) == {"web", "worker-0"} and all(v > 0 for v in rss.values())
    assert rss["worker-0"] <= WORKER_RSS_LIMIT_MB, rss
    # the worker says which backend it loaded, and its check against fp32 passed
    [worker] = result["worker_inference"]
    assert worker["backend"] and worker["check"]["passed"], worker


def test_bench_load_stopped_by_sigterm_leaves_no_server_behind(real_cells_dir: Path, tmp_path: Path):
    """`kill` (or a timeout) unwinds like Ctrl-C: the PostgreSQL, Redis, web and worker the
    command started are stopped with it."""
    import signal
    import time

    import psutil

    if postgres_bindir() is None or redis_binary() is None:
        pytest.skip("PostgreSQL or redis-server is not installed (scripts/test.sh installs both)")
    err = tmp_path / "stderr"
    with err.open("w") as log:
        proc = subprocess.Popen(marrow_command("bench-load", "--uploaders", "1", "--cells", "2", "--reviewers", "0",
                                               "--workers", "1", "--data-dir", str(real_cells_dir)),
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while "ready on" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
            time.sleep(0.2)
        started = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "postgres" in names and "redis-server" in names and " web " in names and " worker" in names
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 128 + signal.SIGTERM
        gone, alive = psutil.wait_procs(started, timeout=10)
        assert alive == [], [" ".join(p.cmdline()) for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("option", [["--uploaders", "0"], ["--cells", "-1"], ["--workers", "0"], ["--reviewers", "-1"]])
def test_bench_load_refuses_counts_below_one_before_starting_anything(option, capsys):
    assert main(["bench-load", *option]) == 2
    assert capsys.readouterr().err == ("marrow bench-load: error: --uploaders, --cells and --workers must be at least 1, "
                                       "--reviewers at least 0\n")
