"""Evaluate a checkpoint on a folder-per-class dataset (`marrow evaluate`).

Every image goes through the product's own pipeline (decode -> quality -> unsharp repair of
blurry cells -> batched prediction), so the numbers are those a lab would see. Only the
probability vectors are kept (N × classes floats), never the decoded images; for the gallery
of confidently wrong cells only the top-k file names are kept and their Grad-CAM is recomputed
at the end. Files that cannot be decoded are listed under `unreadable` and left out of the
metrics (the key is written only when there are such files). With `shifts`, the readable
images are evaluated again under each named scanner/stain shift (`shifts.py`), and
`metrics["shifts"]` says how accuracy holds up.
"""
from __future__ import annotations

import heapq
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.ml import pipeline, shifts as scanner_shifts
from app.ml.decode import decode_path
from app.ml.dataset import Sample, load_folder_dataset
from app.ml.metrics import classification_report, expected_calibration_error
from app.ml.predictor import Predictor


@dataclass
class WrongCell:
    """A confidently wrong cell with its image and the Grad-CAM of the predicted class."""

    file: str
    true: str
    predicted: str
    confidence: float
    top3: list[tuple[str, str, float]]
    image: np.ndarray  # the decoded cell (unrepaired)
    cam: np.ndarray  # input_size × input_size in [0, 1]


@dataclass
class Evaluation:
    metrics: dict  # the JSON document
    probs: np.ndarray  # N × C calibrated probabilities of the readable images
    labels: np.ndarray  # N true class indices
    wrong: list[WrongCell]  # most confident first
    data_dir: Path
    temperature: float  # the card's, already applied to probs


def evaluate(data_dir: str | Path, model_dir: str | Path, device: str = "cpu", batch_size: int = 16,
             top_wrong: int = 0, progress: bool = True, shifts: list[str] | None = None) -> Evaluation:
    """Run the model over every image of data_dir; folders that are not class codes are an error."""
    unknown = sorted(set(shifts or ()) - set(scanner_shifts.SHIFTS))
    if unknown:
        raise ValueError(f"unknown shift(s) {', '.join(unknown)}; known: {', '.join(scanner_shifts.SHIFTS)}")
    root = Path(data_dir)
    predictor = Predictor(model_dir, device=device)
    classes = predictor.card.codes
    samples = load_folder_dataset(root, tuple(classes))
    items = [(str(s.path), None) for s in samples]
    results = pipeline.run(items, predictor, with_cam=False, batch_size=batch_size)

    probs, labels, unreadable, readable = [], [], [], []
    heap: list[tuple[float, int, Sample]] = []  # (confidence, order, sample): the top-k wrong
    for sample, result in zip(samples, tqdm(results, total=len(samples), unit="img", desc="evaluating",
                                            file=sys.stderr, disable=not progress)):
        if result.prediction is None:
            unreadable.append(sample.path.relative_to(root).as_posix())
            continue
        p = result.prediction.probs
        probs.append(p)
        labels.append(sample.label)
        readable.append(sample)
        if top_wrong and int(p.argmax()) != sample.label:
            entry = (float(p.max()), len(probs) - 1, sample)
            if len(heap) < top_wrong:
                heapq.heappush(heap, entry)
            else:
                heapq.heappushpop(heap, entry)
    if not probs:
        raise ValueError(f"{root}: none of the {len(samples)} images could be decoded")

    probs_arr, labels_arr = np.stack(probs), np.asarray(labels)
    metrics = {
        **classification_report(labels_arr, probs_arr.argmax(1), classes),  # accuracy ... confusion_matrix
        "classes": classes,
        "n_images": len(labels_arr),
        "model_version": predictor.version,
        "ece": expected_calibration_error(probs_arr, labels_arr),
    }
    if unreadable:
        metrics["unreadable"] = unreadable
    if shifts:
        metrics["shifts"] = {name: _under_shift(predictor, readable, probs_arr, name, batch_size, progress)
                             for name in shifts}
    wrong = _gallery(predictor, root, [s for *_, s in sorted(heap, reverse=True)], batch_size)
    return Evaluation(metrics, probs_arr, labels_arr, wrong, root, predictor.card.temperature)


def _under_shift(predictor: Predictor, samples: list[Sample], unshifted: np.ndarray, name: str,
                 batch_size: int, progress: bool) -> dict:
    """Metrics of the same cells with one scanner/stain shift applied, and how many cells keep
    their unshifted top-1 class."""
    items = [(str(s.path), lambda s=s: scanner_shifts.shifted_png(decode_path(s.path).rgb, name))
             for s in samples]
    results = pipeline.run(items, predictor, with_cam=False, batch_size=batch_size)
    probs = np.stack([r.prediction.probs for r in tqdm(results, total=len(items), unit="img",
                                                         desc=name, file=sys.stderr, disable=not progress)])
    labels = np.asarray([s.label for s in samples])
    report = classification_report(labels, probs.argmax(1), predictor.card.codes)
    return {"description": scanner_shifts.describe()[name], "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"], "ece": expected_calibration_error(probs, labels),
            "same_top1": float((probs.argmax(1) == unshifted.argmax(1)).mean())}


def _gallery(predictor: Predictor, root: Path, samples: list[Sample], batch_size: int) -> list[WrongCell]:
    """Re-run the kept wrong cells with Grad-CAM (of the predicted class)."""
    classes = predictor.card.codes
    items = [(str(s.path), None) for s in samples]
    results = pipeline.run(items, predictor, with_cam=True, batch_size=batch_size)
    return [WrongCell(file=s.path.relative_to(root).as_posix(), true=classes[s.label],
                      predicted=r.prediction.code, confidence=r.prediction.probability,
                      top3=r.prediction.top3, image=r.image, cam=r.prediction.cam)
            for s, r in zip(samples, results)]


def format_table(metrics: dict) -> str:
    """The metrics as a plain-text table (summary, per class, confusion matrix)."""
    classes = metrics["classes"]
    lines = [f"model {metrics['model_version']}  images {metrics['n_images']}  "
             f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
             f"ECE {metrics['ece']:.4f}", "",
             f"{'class':<6}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for code in classes:
        m = metrics["per_class"][code]
        lines.append(f"{code:<6}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>9d}")
    width = max(5, *(len(str(v)) for row in metrics["confusion_matrix"] for v in row)) + 1
    lines += ["", "confusion matrix (rows true, columns predicted)",
              f"{'':<6}" + "".join(f"{c:>{width}}" for c in classes)]
    for code, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"{code:<6}" + "".join(f"{v:>{width}d}" for v in row))
    if metrics.get("shifts"):
        lines += ["", "under scanner/stain shifts (same cells)",
                  f"{'shift':<16}{'accuracy':>10}{'macro-F1':>10}{'ECE':>8}{'same top-1':>12}",
                  f"{'(none)':<16}{metrics['accuracy']:>10.4f}{metrics['macro_f1']:>10.4f}{metrics['ece']:>8.4f}"
                  f"{1.0:>12.3f}"]
        for name, m in metrics["shifts"].items():
            lines.append(f"{name:<16}{m['accuracy']:>10.4f}{m['macro_f1']:>10.4f}{m['ece']:>8.4f}"
                         f"{m['same_top1']:>12.3f}")
    if metrics.get("unreadable"):
        lines += ["", f"{len(metrics['unreadable'])} unreadable file(s) left out of the metrics:"]
        lines += [f"  {f}" for f in metrics["unreadable"]]
    return "\n".join(lines)
