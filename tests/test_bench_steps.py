"""`marrow bench-steps` on real cells: every step of a cell is timed and the network dominates.

Not a timed test: it checks the command's JSON (what a reader of the README's table relies on),
never a speed."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from app.bench.steps import WEB_STEPS, WORKER_STEPS
from app.cli import marrow_command


def test_bench_steps_prints_every_step_of_a_cell(real_cells_dir: Path, tmp_path: Path):
    out = tmp_path / "steps.json"
    done = subprocess.run(marrow_command("bench-steps", "--n", "8", "--rounds", "1", "--backend", "onnx",
                                         "--data", str(real_cells_dir), "--json", str(out)),
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MARROW_DATA_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    ms = result["cpu_ms_per_cell"]
    assert result["cells"] == 8 and result["backend"] == "onnx" and set(ms) == set(WEB_STEPS + WORKER_STEPS)
    assert all(v >= 0 for v in ms.values()) and ms["decode"] > 0 and ms["network"] > 0
    # one cell's pass through a ReXNet-150 costs more than any other single step
    assert ms["network"] == max(ms.values())
    assert result["web_ms_per_cell"] == round(sum(ms[s] for s in WEB_STEPS), 3)
    assert result["network_ms_per_cell"] == ms["network"]
    assert not list(tmp_path.glob("marrow-steps-*"))  # its scratch storage is removed
