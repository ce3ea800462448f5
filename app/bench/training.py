"""`marrow bench-train`: images/s of `marrow train`'s own step on this machine, by precision.

Three ways of running the same step (`app.ml.train.train_step`: augmentation, forward, loss,
backward, AdamW) on the same real cells, decoded, checked and framed as `marrow train` does:

- `fp32`: contiguous (NCHW) tensors and weights;
- `fp32_channels_last`: NHWC memory format, which oneDNN's convolutions prefer on CPU;
- `bf16_channels_last`: the same under bf16 autocast (fp32 weights and optimizer).

Each starts from the same weights with its own optimizer. The machine may be shared and its
speed moves between minutes, so the modes take turns: every round runs `steps` steps of each
mode, the order rotated from round to round, and a mode's images/s is over all its rounds. Ratios
are only meaningful within one run. The JSON also says what `marrow train --bf16 auto` picks on
this CPU, so the rule can be checked against the figures.
"""
from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from app.bench.cells import pick_cells
from app.bench.machine import CpuMeter, cpu_name, steal_note
from app.bench.ml import peak_rss_mb, resolve_model

MODES = {"fp32": (False, False), "fp32_channels_last": (True, False), "bf16_channels_last": (True, True)}


def run_train_bench(data_dir: Path, n: int, batch_size: int, steps: int, rounds: int,
                    model_dir: Path | None = None) -> dict:
    """The figures as one JSON-ready dict (see the module doc)."""
    import tempfile

    import numpy as np
    import torch

    from app.ml import framing
    from app.ml import train as tr
    from app.ml.backends import cpu_flags
    from app.ml.checkpoint import load_checkpoint
    from app.ml.dataset import Sample
    from app.ml.training_config import AugmentConfig, TrainConfig

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="marrow-bench-train-") as scratch:
        model_path, model_line = resolve_model(model_dir, Path(scratch))
        base, card = load_checkpoint(model_path)
    codes = card.codes
    paths = [p for p in pick_cells(data_dir, n) if p.parent.name in codes]
    if len(paths) < batch_size:
        raise ValueError(f"{data_dir}: {len(paths)} cells of the model's classes, fewer than --batch-size {batch_size}")
    crop = framing.Crop.from_card(card.framing)
    cfg = TrainConfig(arch=card.architecture, input_size=card.input_size, batch_size=batch_size, lr=2e-4,
                      epochs=1, framing=crop is not None)
    cells = tr.load_images([Sample(p, codes.index(p.parent.name)) for p in paths],
                           round(card.input_size * 256 / 224), "loading cells", crop)
    weights = tr.class_weights(cells.y, len(codes))
    aug = AugmentConfig(**cfg.augment)
    log(f"bench-train: {model_line}; {len(cells.y)} cells from {data_dir}, batch {batch_size}, "
        f"{steps} steps x {rounds} rounds per mode, {torch.get_num_threads()} threads")

    state: dict[str, list] = {}
    for mode, (channels_last, bf16) in MODES.items():
        model = copy.deepcopy(base).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        mcfg = replace(cfg, channels_last=channels_last, bf16="on" if bf16 else "off")
        opt, sched = tr.optimizer_and_schedule(mcfg, model, head_only=False, steps=1 + steps * rounds, warmup_steps=1)
        run = tr.Run(mcfg, codes, cells, cells, model, card, weights, torch.ones(len(cells.y)), bf16, [])
        # the same seeds in every mode: each sees the same batches, augmented the same way
        state[mode] = [run, opt, sched, torch.Generator().manual_seed(0), np.random.default_rng(0),
                       torch.Generator().manual_seed(1), 0]

    def step(mode: str) -> float:
        run, opt, sched, gen, rng, picker, done = state[mode]
        idx = torch.randperm(len(cells.y), generator=picker)[:batch_size]
        torch.manual_seed(done)  # dropout's masks, the same at each mode's n-th step
        loss = tr.train_step(run, opt, cells.x[idx], cells.y[idx], aug, gen, rng)[0]
        state[mode][-1] = done + 1
        sched.step_update(done + 1)
        return loss

    # warm-up, untimed (oneDNN picks and caches its kernels on the first step); its loss is the
    # first one reported, from the same weights and batch in every mode
    losses = {m: [step(m)] for m in MODES}
    seconds = {m: 0.0 for m in MODES}
    meter = CpuMeter()
    order = list(MODES)
    for r in range(rounds):
        for mode in order[r % len(order):] + order[:r % len(order)]:
            t = time.perf_counter()
            losses[mode] += [step(mode) for _ in range(steps)]
            seconds[mode] += time.perf_counter() - t
    rate = {m: steps * rounds * batch_size / s for m, s in seconds.items()}
    steal = meter.steal_share()
    if note := steal_note(steal, "the timed steps"):
        log(note)
    auto_bf16 = tr.use_bf16(cfg)
    return {
        "images_per_s": {m: round(v, 2) for m, v in rate.items()},
        "ratio_channels_last_over_fp32": round(rate["fp32_channels_last"] / rate["fp32"], 2),
        "ratio_bf16_over_fp32_channels_last": round(rate["bf16_channels_last"] / rate["fp32_channels_last"], 2),
        "auto": {"channels_last": cfg.channels_last, "bf16": auto_bf16,
                 "mode": "bf16_channels_last" if auto_bf16 else "fp32_channels_last"},
        "fastest": max(rate, key=rate.get),
        "loss_first_last": {m: [round(v[0], 3), round(v[-1], 3)] for m, v in losses.items()},
        "cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "model": model_line, "cells": len(cells.y), "batch_size": batch_size, "steps": steps, "rounds": rounds,
        "seconds": {m: round(s, 2) for m, s in seconds.items()},
        "cpu_steal_share": steal, "peak_rss_mb": round(peak_rss_mb(), 1),
    }
