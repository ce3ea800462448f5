"""Classification metrics, calibration error and temperature scaling.

Conventions (the JSON of `marrow evaluate` follows them):
- the confusion matrix has true classes in rows and predicted classes in columns, in the
  order of the class list, including classes absent from the data (support 0);
- precision / recall / F1 come from scikit-learn with undefined values (0 / 0) set to 0;
- macro-F1 averages F1 over the classes present in the data (support > 0) only, so a class a
  lab simply did not send does not drag the score down;
- ECE uses the top-1 confidence in 15 equal-width bins over (0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import bootstrap
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support

from app.ml.intervals import interval

if TYPE_CHECKING:
    import torch

ECE_BINS = 15


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """n_classes × n_classes counts, rows true, columns predicted."""
    return _sk_confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """accuracy, macro_f1 (classes present), per_class and confusion_matrix as plain JSON types."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    present = support > 0
    return {
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {code: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, code in enumerate(classes)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, len(classes)).tolist(),
    }


def counted_report(y_true: np.ndarray, y_pred: np.ndarray, unk: np.ndarray, classes: list[str]) -> dict:
    """The product's view: the share sent to UNK, and accuracy / macro-F1 over the cells it
    counts, each with a 95 % interval (exact binomial for the shares, a percentile bootstrap
    over cells for macro-F1), so a figure from a few hundred cells is read with its spread."""
    y_true, y_pred, kept = np.asarray(y_true), np.asarray(y_pred), ~np.asarray(unk, bool)
    report = classification_report(y_true[kept], y_pred[kept], classes) \
        if kept.any() else {"accuracy": 0.0, "macro_f1": 0.0}
    n_kept, n = int(kept.sum()), len(kept)
    return {"unk_rate": float(1 - kept.mean()) if n else 0.0,
            "unk_rate_ci95": _exact_interval(n - n_kept, n), "n_counted": n_kept,
            "accuracy_counted": report["accuracy"],
            "accuracy_counted_ci95": _exact_interval(int((y_true[kept] == y_pred[kept]).sum()), n_kept),
            "macro_f1_counted": report["macro_f1"],
            "macro_f1_counted_ci95": macro_f1_interval(y_true[kept], y_pred[kept], len(classes))}


def _exact_interval(k: int, n: int) -> list[float] | None:
    ci = interval(k, n)
    return [round(ci[0], 4), round(ci[1], 4)] if ci else None


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over the classes present, as `classification_report` (from counts, for speed)."""
    cm = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros(n_classes), where=(support + predicted) > 0)
    return float(f1[support > 0].mean()) if (support > 0).any() else 0.0


def macro_f1_interval(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                      resamples: int = 2000, seed: int = 0) -> list[float] | None:
    """95 % percentile-bootstrap interval of macro-F1, cells resampled with replacement."""
    if len(y_true) < 2:
        return None
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    res = bootstrap((np.arange(len(y_true)),), lambda i: _macro_f1(y_true[i], y_pred[i], n_classes),
                    vectorized=False, n_resamples=resamples, method="percentile", random_state=seed)
    return [round(float(res.confidence_interval.low), 4), round(float(res.confidence_interval.high), 4)]


def coverage_curve(probs: np.ndarray, labels: np.ndarray,
                   coverages: tuple[float, ...] = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5)) -> list[dict]:
    """Accuracy of the most confident share of cells, for each share (selective prediction)."""
    conf = probs.max(axis=1)
    order = np.argsort(-conf, kind="stable")
    correct = (probs.argmax(axis=1) == labels)[order]
    out = []
    for c in coverages:
        n = max(1, int(round(c * len(order))))
        out.append({"coverage": c, "accuracy": float(correct[:n].mean()),
                    "min_confidence": float(conf[order[n - 1]])})
    return out


@dataclass
class ReliabilityBins:
    """Per-bin counts, mean confidence and accuracy of the top-1 prediction."""

    edges: np.ndarray  # n_bins + 1
    counts: np.ndarray  # n_bins
    confidence: np.ndarray  # n_bins, NaN where empty
    accuracy: np.ndarray  # n_bins, NaN where empty

    @property
    def ece(self) -> float:
        total = self.counts.sum()
        if total == 0:
            return 0.0
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float((self.counts[filled] * gaps).sum() / total)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> ReliabilityBins:
    """Bin the top-1 confidences into n_bins equal-width bins (lo, hi]."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / counts
        mean_acc = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins) / counts
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), counts, mean_conf, mean_acc)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Σ_bins (n_bin / N) · |accuracy_bin − confidence_bin| of the top-1 prediction."""
    return reliability_bins(probs, labels, n_bins).ece


def fit_temperature(logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (LBFGS on log T)."""
    import torch

    z = torch.as_tensor(logits, dtype=torch.float64).detach().cpu()
    y = torch.as_tensor(labels, dtype=torch.long).cpu()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())
