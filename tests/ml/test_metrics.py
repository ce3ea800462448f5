"""Metrics against hand-computed values; temperature scaling on over-confident logits."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from app.ml.metrics import (classification_report, confusion_matrix, counted_report, expected_calibration_error,
                            fit_temperature)

CLASSES = ["A", "B", "C", "D"]  # D never occurs in the data (support 0)
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 1, 0, 1, 1, 2, 2, 0, 3]


def test_confusion_matrix_rows_true_columns_predicted():
    assert confusion_matrix(np.array(Y_TRUE), np.array(Y_PRED), 4).tolist() == [
        [2, 1, 0, 0],
        [0, 2, 0, 0],
        [1, 0, 2, 1],
        [0, 0, 0, 0],
    ]


def test_report_matches_hand_computed_values():
    r = classification_report(Y_TRUE, Y_PRED, CLASSES)
    pc = r["per_class"]
    # precision = diagonal / column sum, recall = diagonal / row sum
    assert pc["A"]["precision"] == pytest.approx(2 / 3) and pc["A"]["recall"] == pytest.approx(2 / 3)
    assert pc["B"]["precision"] == pytest.approx(2 / 3) and pc["B"]["recall"] == pytest.approx(1.0)
    assert pc["C"]["precision"] == pytest.approx(1.0) and pc["C"]["recall"] == pytest.approx(0.5)
    assert pc["B"]["f1"] == pytest.approx(0.8)
    assert pc["C"]["f1"] == pytest.approx(2 / 3)
    assert pc["D"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert [pc[c]["support"] for c in CLASSES] == [3, 2, 4, 0]
    assert r["accuracy"] == pytest.approx(6 / 9)
    # macro-F1 over the classes present only: D (support 0) does not count
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 3)


def test_ece_hand_computed():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.95, 0.05]])
    labels = np.array([0, 1, 0])
    # bins (13/15, 14/15]: one right at 0.9 -> gap 0.1; (8/15, 9/15]: one wrong at 0.6 -> gap 0.6;
    # (14/15, 1]: one right at 0.95 -> gap 0.05
    assert expected_calibration_error(probs, labels) == pytest.approx((0.1 + 0.6 + 0.05) / 3)


def test_ece_of_perfect_predictions_at_full_confidence_is_zero():
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_temperature_scaling_lowers_ece_of_overconfident_logits():
    rng = np.random.default_rng(0)
    n, k = 4000, 7
    logits = rng.normal(0.0, 1.5, size=(n, k))
    probs = softmax(logits, axis=1)
    # labels drawn from the model's own probabilities: calibrated by construction
    labels = (probs.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    overconfident = 3.0 * logits
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(softmax(overconfident, axis=1), labels)
    after = expected_calibration_error(softmax(overconfident / t, axis=1), labels)
    assert before > 0.1
    assert after < before / 3


def test_counted_report_gives_each_figure_with_an_interval_that_narrows_with_more_cells():
    rng = np.random.default_rng(0)
    classes = [f"C{i}" for i in range(11)]

    def report(n: int) -> dict:
        truth = rng.integers(0, 11, n)
        pred = np.where(rng.random(n) < 0.85, truth, rng.integers(0, 11, n))
        return counted_report(truth, pred, rng.random(n) < 0.08, classes)

    small, large = report(300), report(3000)
    for r in (small, large):
        for key in ("unk_rate", "accuracy_counted", "macro_f1_counted"):
            lo, hi = r[f"{key}_ci95"]
            assert lo <= r[key] <= hi
    width = lambda r, key: r[f"{key}_ci95"][1] - r[f"{key}_ci95"][0]  # noqa: E731
    assert width(large, "macro_f1_counted") < width(small, "macro_f1_counted") / 2
    assert 0.05 < width(small, "macro_f1_counted") < 0.2
    # resampling cells of a perfect classifier gives macro-F1 1 every time
    truth = rng.integers(0, 11, 500)
    assert counted_report(truth, truth, np.zeros(500, bool), classes)["macro_f1_counted_ci95"] == [1.0, 1.0]
