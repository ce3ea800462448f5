"""The count-or-UNK rule: its decisions, its calibration, and what the pipeline does with it."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np

from app.ml import pipeline, unidentified
from app.ml.predictor import Predictor
from app.ml.unidentified import UNK, Rule, calibrate, decide


def test_each_reason_for_unidentified():
    rule = Rule(min_confidence=0.5, max_energy=-2.0)
    assert decide(0.9, -5.0, [], True, rule) is None
    assert decide(0.9, -5.0, ["no_stain"], False, rule) == "not a stained cell: no stain"
    # a small cell on a wide field has few stained pixels (QC flags it) but a nucleus: counted
    assert decide(0.9, -5.0, ["no_stain"], True, rule) is None
    assert decide(0.9, -5.0, ["blurry", "grayscale"], True, rule) == "not a stained cell: grayscale"
    assert decide(0.9, -5.0, ["blurry"], False, rule) == unidentified.NO_NUCLEUS
    assert decide(0.4, -5.0, [], True, rule) == unidentified.LOW_CONFIDENCE
    assert decide(0.9, -1.0, [], True, rule) == unidentified.OUT_OF_DISTRIBUTION
    assert decide(0.01, 99.0, [], True, Rule()) is None  # an uncalibrated rule only refuses non-cells


def test_calibration_keeps_the_budget_and_catches_the_errors():
    rng = np.random.default_rng(0)
    n, c = 2000, 5
    labels = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    good = rng.random(n) < 0.85
    logits[good, labels[good]] += 4.0  # confident and right
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    rule = calibrate(probs, unidentified.energy(logits), labels, max_rejected_correct=0.05)
    out = unidentified.rejected(probs.max(1), unidentified.energy(logits), rule)
    correct = probs.argmax(1) == labels
    assert out[correct].mean() <= 0.05
    assert out[~correct].mean() > 0.5  # most errors are low-confidence here
    assert rule.calibration["rejected_correct"] == round(out[correct].mean(), 4)
    assert rule.calibration["accuracy_counted"] > rule.calibration["accuracy_all"]
    assert Rule.from_card(json.loads(json.dumps(rule.as_dict()))) == rule


def test_energy_is_low_for_a_confident_logit_vector():
    e = unidentified.energy(np.array([[10.0, 0, 0], [0.1, 0, 0]]))
    assert e[0] < e[1]


def test_the_pipeline_sends_non_cells_and_unsure_cells_to_unk(random_checkpoint, real_cells_dir, tmp_path):
    """A grey photo (no stain) and a cell turned green are never counted; with a strict rule in
    the card, a real cell the network is unsure of goes to UNK too; top-1 stays the network's."""
    model = tmp_path / "model"
    shutil.copytree(random_checkpoint, model)
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((120, 140, 3), 128, np.uint8))
    cell = next((real_cells_dir / "LYT").glob("*.jpg"))
    green = tmp_path / "green.png"
    cv2.imwrite(str(green), cv2.imread(str(cell))[..., [1, 0, 2]])  # BGR -> the nucleus turns green

    results = list(pipeline.run([(str(p), None) for p in (grey, green, cell)], Predictor(model), with_cam=True))
    assert [r.prediction.label for r in results[:2]] == [UNK, UNK]
    assert all(r.prediction.unidentified.startswith("not a stained cell") for r in results[:2])
    assert results[2].prediction.label == results[2].prediction.code  # no rule in the card: counted

    card = json.loads((model / "model_card.json").read_text())
    card["unidentified"] = Rule(min_confidence=1.01).as_dict()
    (model / "model_card.json").write_text(json.dumps(card))
    (r,) = pipeline.run([(str(cell), None)], Predictor(model))
    assert r.prediction.label == UNK and r.prediction.unidentified == unidentified.LOW_CONFIDENCE
    assert r.prediction.code in card_codes(card)


def card_codes(card: dict) -> list[str]:
    return [c["code"] for c in card["classes"]]


def test_calibration_with_non_cells_keeps_an_energy_threshold_that_catches_them():
    """Confidence alone separates right from wrong cells here, so without non-cells the search
    keeps no energy threshold; confident non-cells of high energy make it keep one."""
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, 4, n)
    wrong = rng.random(n) < 0.15
    top = np.where(wrong, (labels + 1) % 4, labels)
    conf = np.where(wrong, rng.uniform(0.3, 0.6, n), rng.uniform(0.6, 1.0, n))
    probs = np.full((n, 4), 0.0)
    probs[np.arange(n), top] = conf
    probs += (1 - conf[:, None]) / 4 * (probs == 0)
    energies = rng.uniform(-8, -4, n)
    non_cells = (rng.uniform(0.7, 1.0, 100), rng.uniform(-2, -1, 100))  # sure of a class, but unfamiliar

    alone = calibrate(probs, energies, labels, 0.05)
    assert alone.max_energy == float("inf")
    with_nc = calibrate(probs, energies, labels, 0.05, non_cells)
    assert with_nc.max_energy < -2 and with_nc.calibration["rejected_non_cells"] > 0.9
    assert with_nc.calibration["rejected_correct"] <= 0.05
