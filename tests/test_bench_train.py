"""`marrow bench-train` on real cells: the three modes run the same training step and the JSON
says which one `marrow train --bf16 auto` picks here.

Not a timed test: it checks the command's JSON (what the README's training table is read from),
never a speed."""
from __future__ import annotations

import json
from pathlib import Path

from app.bench.training import MODES
from app.cli import main
from app.ml.backends import cpu_flags


def test_bench_train_times_the_same_step_in_every_mode(real_cells_dir: Path, tmp_path: Path):
    out = tmp_path / "train.json"
    assert main(["bench-train", "--n", "8", "--batch-size", "4", "--steps", "1", "--rounds", "1", "--warmup", "1",
                 "--data", str(real_cells_dir), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["images_per_s"]) == set(MODES) and all(v > 0 for v in result["images_per_s"].values())
    assert result["batch_size"] == 4 and result["cells"] == 8
    # the documented rule: bf16 autocast where the CPU has bf16 units, channels_last always
    auto_bf16 = bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))
    assert result["auto"] == {"channels_last": True, "bf16": auto_bf16,
                              "mode": "bf16_channels_last" if auto_bf16 else "fp32_channels_last"}
    # the first step of every mode starts from the same weights on the same augmented batch:
    # the memory format changes only the summation order, bf16 the inputs' last bits
    first = {m: v[0] for m, v in result["loss_first_last"].items()}
    assert abs(first["fp32_channels_last"] - first["fp32"]) <= 2e-3
    assert abs(first["bf16_channels_last"] - first["fp32"]) <= 0.05 * first["fp32"]
