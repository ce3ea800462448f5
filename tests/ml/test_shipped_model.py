"""The seven-class checkpoint (models/rexnet150-bm7, still selectable): complete card, loads offline, classifies real cells far above chance."""
from __future__ import annotations

import json
from pathlib import Path

from app.ml import pipeline
from app.ml.card import BM7_MODEL
from app.ml.predictor import Predictor


def test_shipped_card_is_complete():
    card = json.loads((BM7_MODEL / "model_card.json").read_text())
    assert card["architecture"] == "rexnet_150"
    assert "CC BY 4.0" in card["data"]["licence"] and "10.7937/TCIA.AXH3-T579" in card["data"]["source"]
    val = card["metrics"]["validation"]
    assert val["macro_f1"] >= 0.85 and val["accuracy"] >= 0.85
    assert set(val["per_class"]) == {"BLA", "EOS", "LYT", "MON", "NGS", "NIF", "PMO"}
    assert 0 < card["temperature"] < 5 and card["training"]["split"]["seed"] == 0


def test_shipped_model_classifies_real_cells_far_above_chance(real_cells_dir):
    card = json.loads((BM7_MODEL / "model_card.json").read_text())
    files = card["training"]["split"]["val_files"][3::27]  # 35 held-out validation cells
    predictor = Predictor(BM7_MODEL)
    results = list(pipeline.run([(str(real_cells_dir / f), None) for f in files], predictor, with_cam=False))
    correct = sum(r.prediction.code == Path(r.name).parent.name for r in results)
    assert correct / len(results) > 0.7  # chance is 1/7
