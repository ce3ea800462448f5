"""`marrow calibrate`: fit a checkpoint's temperature and UNK rule again, without training.

How many cells go to UNK is a lab's trade: a larger budget sends more of the network's mistakes
to the reviewer and more of its right answers too. `marrow train --unk-budget` fixes it once;
this re-chooses it on the same validation split (the files the card records), through the same
loading, framing and network code as training (minutes on a 2-core CPU). It also measures the
weights again (`metrics.validation`: top-1 report, per source, ECE), so that weights written by
other means (`marrow average`) get a true card. Everything else in the card (training record,
notes, lineage) is kept as written.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from app.ml import framing
from app.ml.card import CARD_FILE
from app.ml.checkpoint import load_checkpoint
from app.ml.dataset import load_sources, recorded_split
from app.ml.train import calibrated_validation, load_images, predict_logits, validation_non_cells


def recalibrate(model_dir: str | Path, sources: list[str | Path], unk_budget: float,
                device: str = "cpu") -> dict:
    """Re-measure, re-fit and rewrite the card in `model_dir`; returns its new `unidentified` entry."""
    if not 0 <= unk_budget < 1:
        raise ValueError(f"--unk-budget must be a share in [0, 1), not {unk_budget}")
    model_dir = Path(model_dir)
    model, card = load_checkpoint(model_dir, device)
    samples = load_sources([Path(s) for s in sources], tuple(card.codes))
    val_samples = recorded_split(samples, card.training)[1]
    missing = len(card.training["split"]["val_files"]) - len(val_samples)
    if missing:
        raise ValueError(f"{missing} of the card's validation files are not in {', '.join(map(str, sources))}: "
                         f"pass the sources the model was trained on")
    val = load_images(val_samples, card.input_size, "loading val", framing.Crop.from_card(card.framing))
    model = model.to(memory_format=torch.channels_last)
    logits = predict_logits(model, val.x, card, device, bf16=False, channels_last=True)
    made = validation_non_cells(val, card)
    made_logits = predict_logits(model, made.x, card, device, bf16=False, channels_last=True)
    temperature, rule, measured = calibrated_validation(logits, val, card.codes, unk_budget, (made_logits, made))

    path = model_dir / CARD_FILE
    data = json.loads(path.read_text())  # raw, so that keys ModelCard does not model are kept
    data["temperature"] = temperature
    data["unidentified"] = rule.as_dict()
    data.setdefault("metrics", {}).setdefault("validation", {}).update(measured)
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    return data["unidentified"]
