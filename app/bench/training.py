"""`marrow bench-train`: images/s of `marrow train`'s own step on this machine, by precision.

Three ways of running the same step (`app.ml.train.train_step`: augmentation, forward, loss,
backward, AdamW) on the same real cells, decoded, checked and framed as `marrow train` does:

- `fp32`: contiguous (NCHW) tensors and weights;
- `fp32_channels_last`: NHWC memory format, which oneDNN's convolutions prefer on CPU;
- `bf16_channels_last`: the same under bf16 autocast (fp32 weights and optimizer).

Each mode runs in a process of its own, as `marrow train` does: one model, `warmup` untimed steps,
then `steps` timed steps, from the same weights and seeds (the same batches, augmented alike, the
same dropout masks). A process's first steps are slower, by less each step, for about five steps
(the first about twice a settled one), and three models in one process ran fp32 far slower than
`marrow train` does: together they made bf16 look twice as fast as fp32 channels_last on Zen 4,
against about 1.2-1.3x in `marrow train`'s own epochs (docs/performance-history.md). The machine may
be shared and its speed moves between minutes, so the modes take turns: each round runs every
mode once, the order rotated from round to round, and a mode's images/s is over all its rounds.
Ratios are only meaningful within one run. The JSON also says what `marrow train --bf16 auto`
picks on this CPU, so the rule can be checked against the figures.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.bench.cells import pick_cells
from app.bench.machine import CpuMeter, cpu_name, steal_note
from app.bench.ml import peak_rss_mb, resolve_model

MODES = {"fp32": (False, False), "fp32_channels_last": (True, False), "bf16_channels_last": (True, True)}


def run_train_bench(data_dir: Path, n: int, batch_size: int, steps: int, rounds: int, warmup: int,
                    model_dir: Path | None = None) -> dict:
    """The figures as one JSON-ready dict (see the module doc)."""
    from app.ml.backends import cpu_flags
    from app.ml.train import use_bf16
    from app.ml.training_config import TrainConfig

    with tempfile.TemporaryDirectory(prefix="marrow-bench-train-") as scratch:
        model_path, model_line = resolve_model(model_dir, Path(scratch))
        print(f"bench-train: {model_line}; cells from {data_dir}, batch {batch_size}, {warmup} + {steps} "
              f"steps per mode and round, {rounds} rounds", file=sys.stderr, flush=True)
        order = list(MODES)
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        meter = CpuMeter()
        for r in range(rounds):
            for mode in order[r % len(order):] + order[:r % len(order)]:
                runs[mode].append(_in_own_process(mode, data_dir, n, batch_size, steps, warmup, model_path))
                print(f"round {r + 1}, {mode}: {steps * batch_size / runs[mode][-1]['seconds']:.2f} images/s",
                      file=sys.stderr, flush=True)
    steal = meter.steal_share()
    if note := steal_note(steal, "the timed steps"):
        print(note, file=sys.stderr)
    seconds = {m: sum(x["seconds"] for x in v) for m, v in runs.items()}
    rate = {m: steps * rounds * batch_size / s for m, s in seconds.items()}
    cfg = TrainConfig()
    auto_bf16 = use_bf16(cfg)
    first = runs["fp32"][0]
    return {
        "images_per_s": {m: round(v, 2) for m, v in rate.items()},
        "ratio_channels_last_over_fp32": round(rate["fp32_channels_last"] / rate["fp32"], 2),
        "ratio_bf16_over_fp32_channels_last": round(rate["bf16_channels_last"] / rate["fp32_channels_last"], 2),
        "auto": {"channels_last": cfg.channels_last, "bf16": auto_bf16,
                 "mode": "bf16_channels_last" if auto_bf16 else "fp32_channels_last"},
        "fastest": max(rate, key=rate.get),
        "loss_first_last": {m: [v[0]["first_loss"], v[0]["last_loss"]] for m, v in runs.items()},
        "peak_rss_mb": {m: max(x["peak_rss_mb"] for x in v) for m, v in runs.items()},
        "cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
        "torch": first["torch"], "torch_threads": first["torch_threads"],
        "model": model_line, "cells": first["cells"], "batch_size": batch_size, "warmup_steps": warmup,
        "steps": steps, "rounds": rounds,
        "seconds": {m: [round(x["seconds"], 2) for x in v] for m, v in runs.items()},
        "cpu_steal_share": steal,
    }


def _in_own_process(mode: str, data_dir: Path, n: int, batch_size: int, steps: int, warmup: int,
                    model_path: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "app.bench.training", mode, str(data_dir), str(n), str(batch_size),
                           str(steps), str(warmup), str(model_path)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"bench-train, mode {mode}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_mode(mode: str, data_dir: Path, n: int, batch_size: int, steps: int, warmup: int, model_path: Path) -> dict:
    """One mode, in this process: the cells loaded as `marrow train` loads them, `warmup` (at least
    one) untimed steps, then `steps` timed steps."""
    import numpy as np
    import torch

    from app.ml import framing
    from app.ml import train as tr
    from app.ml.checkpoint import load_checkpoint
    from app.ml.dataset import Sample
    from app.ml.training_config import AugmentConfig, TrainConfig

    channels_last, bf16 = MODES[mode]
    model, card = load_checkpoint(model_path)
    codes = card.codes
    paths = [p for p in pick_cells(data_dir, n) if p.parent.name in codes]
    if len(paths) < batch_size:
        raise ValueError(f"{data_dir}: {len(paths)} cells of the model's classes, fewer than --batch-size {batch_size}")
    crop = framing.Crop.from_card(card.framing)
    cfg = TrainConfig(arch=card.architecture, input_size=card.input_size, batch_size=batch_size, lr=2e-4, epochs=1,
                      framing=crop is not None, channels_last=channels_last, bf16="on" if bf16 else "off")
    cells = tr.load_images([Sample(p, codes.index(p.parent.name)) for p in paths],
                           tr.stored_side(card.input_size), "loading cells", crop)
    model = model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    warmup = max(1, warmup)
    opt, sched = tr.optimizer_and_schedule(cfg, model, head_only=False, steps=warmup + steps, warmup_steps=1)
    run = tr.Run(cfg, codes, cells, cells, model, card, tr.class_weights(cells.y, len(codes)),
                 torch.ones(len(cells.y)), bf16, [])
    aug, gen, rng, picker = AugmentConfig(**cfg.augment), torch.Generator().manual_seed(0), \
        np.random.default_rng(0), torch.Generator().manual_seed(1)

    def step(i: int) -> float:
        idx = torch.randperm(len(cells.y), generator=picker)[:batch_size]
        torch.manual_seed(i)  # dropout's masks
        loss = tr.train_step(run, opt, cells.x[idx], cells.y[idx], aug, gen, rng)[0]
        sched.step_update(i + 1)
        return loss

    first = step(0)  # its loss is from the same weights and batch in every mode
    for i in range(1, warmup):
        step(i)
    t = time.perf_counter()
    losses = [step(i) for i in range(warmup, warmup + steps)]
    seconds = time.perf_counter() - t
    return {"mode": mode, "seconds": seconds, "first_loss": round(first, 3), "last_loss": round(losses[-1], 3),
            "cells": len(cells.y), "peak_rss_mb": round(peak_rss_mb(), 1), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


if __name__ == "__main__":  # one mode, by run_train_bench: MODE DATA_DIR N BATCH STEPS WARMUP MODEL_DIR
    mode_, data_, n_, batch_, steps_, warmup_, model_ = sys.argv[1:8]
    print(json.dumps(time_mode(mode_, Path(data_), int(n_), int(batch_), int(steps_), int(warmup_), Path(model_))))
