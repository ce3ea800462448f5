"""`marrow average`: the uniform average of checkpoints of one lineage (a "model soup",
Wortsman et al. 2022), measured and calibrated like a trained checkpoint.

Fine-tuning runs that start from the same weights stay in one basin of the loss, so their
average is a network too, often more accurate and better calibrated than either. Only
checkpoints of one architecture, class list and validation split are averaged: another split
would let validation cells into the average's training. The card is the first checkpoint's,
with its own version, `averaged_from`, and a temperature, UNK rule and validation metrics
fitted again (`recalibrate`).
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from app.ml.card import CARD_FILE, WEIGHTS_FILE
from app.ml.checkpoint import read_state
from app.ml.recalibrate import recalibrate


def average(model_dirs: list[str | Path], sources: list[str | Path], out_dir: str | Path,
            version: str, unk_budget: float) -> dict:
    """Write the average of `model_dirs` to `out_dir`, calibrate it on `sources`; returns its card."""
    dirs = [Path(d) for d in model_dirs]
    if len(dirs) < 2:
        raise ValueError("average needs at least two checkpoints")
    cards = [json.loads((d / CARD_FILE).read_text()) for d in dirs]
    for d, card in zip(dirs[1:], cards[1:]):
        for what, key in (("architecture", lambda c: c["architecture"]),
                          ("class list", lambda c: [k["code"] for k in c["classes"]]),
                          ("validation split", lambda c: sorted(c["training"]["split"]["val_files"]))):
            if key(card) != key(cards[0]):
                raise ValueError(f"{d}: its {what} differs from {dirs[0]}'s; only checkpoints of one "
                                 f"lineage can be averaged")
    states = [read_state(d) for d in dirs]
    state = {k: (sum(s[k].float() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
             for k, v in states[0].items()}  # integer buffers (BatchNorm's batch counts) from the first

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / WEIGHTS_FILE))
    card = {**cards[0], "version": version,
            "averaged_from": [{"model": str(d), "version": c["version"]} for d, c in zip(dirs, cards)]}
    (out / CARD_FILE).write_text(json.dumps(card, indent=2, default=float) + "\n")
    recalibrate(out, sources, unk_budget)
    return json.loads((out / CARD_FILE).read_text())
