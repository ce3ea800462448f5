"""`marrow bench` on real cells: the naive loop, the product's pipeline with and without
Grad-CAM and ONNX Runtime fp32 in one run, under the JSON keys the README's table (and issue
14's targets) are read from.

Not a timed test: it checks the command's JSON, never a speed."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from app.cli import marrow_command
from app.ml.backends import BACKENDS, PRECISION, cpu_flags

RATES = ("naive_cells_per_s", "naive_gradcam_cells_per_s", "batched_cells_per_s", "gradcam_cells_per_s",
         "fp32_cells_per_s")


def test_bench_reports_the_backend_its_fp32_speed_and_their_agreement(real_cells_dir: Path, tmp_path: Path):
    out = tmp_path / "bench.json"
    done = subprocess.run(marrow_command("bench", "--n", "8", "--rounds", "1", "--data", str(real_cells_dir),
                                         "--json", str(out)), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert (result["device"], result["n"], result["rounds"]) == ("cpu", 8, 1)
    assert all(result[k] > 0 for k in RATES) and result["peak_rss_mb"] > 0
    for ratio, num, den in (("ratio_batched_over_naive", "batched", "naive"),
                            ("ratio_gradcam_over_naive_gradcam", "gradcam", "naive_gradcam"),
                            ("ratio_gradcam_over_batched", "gradcam", "batched"),
                            ("ratio_batched_over_fp32", "batched", "fp32")):
        expected = result[f"{num}_cells_per_s"] / result[f"{den}_cells_per_s"]
        assert abs(result[ratio] - expected) <= 0.01 + 0.01 * expected, ratio
    # the backend `auto` chose here, checked at load against fp32 on the probe cells
    assert result["backend"] in BACKENDS and result["precision"] == PRECISION[result["backend"]]
    assert result["backend_check"]["passed"] and result["backend_fallback_reason"] is None
    assert result["cpu_flags"] == cpu_flags()
    if result["backend"] == "onnx":  # (b) is the fp32 path itself
        assert result["fp32_cells_per_s"] == result["batched_cells_per_s"] and result["agreement_top1"] == 1.0
    else:  # at most one of the 8 cells changes its top class against fp32
        assert result["agreement_top1"] >= 7 / 8
    assert f"backend: {result['backend']} ({result['precision']})" in done.stderr
