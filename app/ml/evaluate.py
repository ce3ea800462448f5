"""Evaluate a checkpoint on one or more folder-per-class datasets (`marrow evaluate`).

Each dataset folder is a source (a lab or scanner) and is also reported on its own. Besides
the network's top-1 metrics, the product's decision is measured: the share of cells sent to
UNK (unidentified), and accuracy and macro-F1 over the cells the product counts, with a
coverage curve (accuracy of the most confident X % of cells). A class folder the model does not
know is evaluated too: its cells are always wrong for the network, and the product should
send them to UNK. `only_validation` keeps the files the model card lists as its validation split.

Every image goes through the product's own pipeline (decode -> quality -> unsharp repair of
blurry cells -> batched prediction), so the numbers are those a lab would see. Only the
probability vectors are kept (N × classes floats), never the decoded images; for the gallery
of confidently wrong cells only the top-k file names are kept and their Grad-CAM is recomputed
at the end. Files that cannot be decoded are listed under `unreadable` and left out of the
metrics (the key is written only when there are such files). With `shifts`, the readable
images are evaluated again under each named scanner/stain shift (`shifts.py`), and
`metrics["shifts"]` says how accuracy holds up. With `non_cells`, each readable image is turned
into one synthetic non-cell (`non_cells.py`; the kinds in turn) and `metrics["non_cells"]` says
how many of them the product does not count (UNK, or a class that is not counted).
"""
from __future__ import annotations

import heapq
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.ml import non_cells as synthetic, pipeline, shifts as scanner_shifts
from app.ml.decode import decode_path
from app.ml.dataset import KNOWN_CODES, Sample, class_folders, load_sources, recorded_split
from app.ml.intervals import interval
from app.ml.metrics import classification_report, counted_report, coverage_curve, expected_calibration_error
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
    cam: np.ndarray  # Grad-CAM of the predicted class over the whole image (H×W in [0, 1])


@dataclass
class Evaluation:
    metrics: dict  # the JSON document
    probs: np.ndarray  # N × C calibrated probabilities of the readable images
    labels: np.ndarray  # N true class indices (into metrics["classes"])
    unk: np.ndarray  # N bools: the product sent the cell to UNK
    wrong: list[WrongCell]  # most confident first
    data_dir: str
    temperature: float  # the card's, already applied to probs


def evaluate(sources: str | Path | list[str | Path], model_dir: str | Path, device: str = "cpu",
             batch_size: int = 16, top_wrong: int = 0, progress: bool = True,
             shifts: list[str] | None = None, only_validation: bool = False,
             non_cells: bool = False) -> Evaluation:
    """Run the product over every image of the sources; folders that are not class codes are an error."""
    unknown = sorted(set(shifts or ()) - set(scanner_shifts.SHIFTS))
    if unknown:
        raise ValueError(f"unknown shift(s) {', '.join(unknown)}; known: {', '.join(scanner_shifts.SHIFTS)}")
    roots = [Path(s) for s in ([sources] if isinstance(sources, (str, Path)) else sources)]
    predictor = Predictor(model_dir, device=device)
    model_codes = predictor.card.codes
    classes = model_codes + [c for c in class_folders(roots) if c not in model_codes and c in KNOWN_CODES]
    samples = load_sources(roots, tuple(classes))
    if only_validation:
        samples = recorded_split(samples, predictor.card.training)[1]
    root_of = {r.resolve().name: r for r in roots}

    def shown(s: Sample) -> str:  # a file's name in the report: CLASS/file, with its source if several
        return s.rel if len(roots) > 1 else f"{s.path.parent.name}/{s.path.name}"
    items = [(str(s.path), None) for s in samples]
    results = pipeline.run(items, predictor, with_cam=False, batch_size=batch_size)

    probs, labels, unk, reasons, unreadable, readable = [], [], [], {}, [], []
    heap: list[tuple[float, int, Sample]] = []  # (confidence, order, sample): the top-k wrong
    for sample, result in zip(samples, tqdm(results, total=len(samples), unit="img", desc="evaluating",
                                            file=sys.stderr, disable=not progress)):
        if result.prediction is None:
            unreadable.append(shown(sample))
            continue
        p = result.prediction.probs
        probs.append(p)
        labels.append(sample.label)
        unk.append(result.prediction.unidentified is not None)
        if result.prediction.unidentified:
            reasons[result.prediction.unidentified] = reasons.get(result.prediction.unidentified, 0) + 1
        readable.append(sample)
        if top_wrong and int(p.argmax()) != sample.label:
            entry = (float(p.max()), len(probs) - 1, sample)
            if len(heap) < top_wrong:
                heapq.heappush(heap, entry)
            else:
                heapq.heappushpop(heap, entry)
    if not probs:
        raise ValueError(f"{', '.join(map(str, roots))}: none of the {len(samples)} images could be decoded")

    probs_arr, labels_arr, unk_arr = np.stack(probs), np.asarray(labels), np.asarray(unk, bool)
    metrics = {
        **_summary(probs_arr, labels_arr, unk_arr, classes, model_codes),
        "classes": classes,
        "n_images": len(labels_arr),
        "model_version": predictor.version,
        "unk_reasons": reasons,
        "coverage_curve": coverage_curve(probs_arr, labels_arr),
    }
    if len(roots) > 1 or only_validation:
        src = np.array([s.source for s in readable])
        metrics["per_source"] = {name: {**_summary(probs_arr[src == name], labels_arr[src == name],
                                                   unk_arr[src == name], classes, model_codes),
                                        "n_images": int((src == name).sum())}
                                 for name in root_of if (src == name).any()}
    if unreadable:
        metrics["unreadable"] = unreadable
    if shifts:
        metrics["shifts"] = {name: _under_shift(predictor, readable, probs_arr, name, batch_size, progress)
                             for name in shifts}
    if non_cells:
        metrics["non_cells"] = _non_cells(predictor, readable, batch_size, progress)
    wrong = _gallery(predictor, classes, [s for *_, s in sorted(heap, reverse=True)], batch_size, shown)
    return Evaluation(metrics, probs_arr, labels_arr, unk_arr, wrong, ", ".join(map(str, roots)),
                      predictor.card.temperature)


def _summary(probs: np.ndarray, labels: np.ndarray, unk: np.ndarray, classes: list[str],
             model_codes: list[str]) -> dict:
    """The network's top-1 metrics, calibration, and the product's UNK rate and counted metrics."""
    known = labels < len(model_codes)
    return {
        **classification_report(labels, probs.argmax(1), classes),  # accuracy ... confusion_matrix
        "ece": expected_calibration_error(probs[known], labels[known]) if known.any() else None,
        **counted_report(labels, probs.argmax(1), unk, classes),
    }


def _under_shift(predictor: Predictor, samples: list[Sample], unshifted: np.ndarray, name: str,
                 batch_size: int, progress: bool) -> dict:
    """Metrics of the same cells with one scanner/stain shift applied, and how many cells keep
    their unshifted top-1 class."""
    items = [(str(s.path), lambda s=s: scanner_shifts.shifted_bytes(decode_path(s.path).rgb, name))
             for s in samples]
    results = list(tqdm(pipeline.run(items, predictor, with_cam=False, batch_size=batch_size),
                        total=len(items), unit="img", desc=name, file=sys.stderr, disable=not progress))
    probs = np.stack([r.prediction.probs for r in results])
    labels = np.asarray([s.label for s in samples])
    report = classification_report(labels, probs.argmax(1), predictor.card.codes)
    unk = np.asarray([r.prediction.unidentified is not None for r in results])
    counted = counted_report(labels, probs.argmax(1), unk, predictor.card.codes)
    return {"description": scanner_shifts.describe()[name], "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"], "ece": expected_calibration_error(probs, labels),
            "same_top1": float((probs.argmax(1) == unshifted.argmax(1)).mean()),
            "unk_rate": float(unk.mean()), "macro_f1_counted": counted["macro_f1_counted"]}


def _non_cells(predictor: Predictor, samples: list[Sample], batch_size: int, progress: bool) -> dict:
    """How many synthetic non-cells (one per cell, the kinds in turn, seeded by position) the
    product does not count."""
    counted = {c.code for c in predictor.card.cell_classes if c.counted}
    items = synthetic.pipeline_items([s.path for s in samples])
    labels: dict[str, Counter] = {k: Counter() for k in synthetic.KINDS}
    for i, r in enumerate(tqdm(pipeline.run(items, predictor, with_cam=False, batch_size=batch_size),
                               total=len(items), unit="img", desc="non-cells", file=sys.stderr,
                               disable=not progress)):
        labels[synthetic.kind_in_turn(i)][r.prediction.label if r.prediction is not None else "unreadable"] += 1

    def summary(tally: Counter) -> dict:
        n = tally.total()
        kept_out = n - sum(v for k, v in tally.items() if k in counted)
        return {"n_images": n, "not_counted": kept_out / n if n else None,
                "not_counted_ci95": interval(kept_out, n)}
    return {**summary(sum(labels.values(), Counter())),
            "per_kind": {k: {**summary(t), "labels": dict(sorted(t.items()))} for k, t in labels.items()}}


def _gallery(predictor: Predictor, classes: list[str], samples: list[Sample], batch_size: int,
             shown) -> list[WrongCell]:
    """Re-run the kept wrong cells with Grad-CAM (of the predicted class)."""
    items = [(str(s.path), None) for s in samples]
    results = pipeline.run(items, predictor, with_cam=True, batch_size=batch_size)
    return [WrongCell(file=shown(s), true=classes[s.label],
                      predicted=r.prediction.code, confidence=r.prediction.probability,
                      top3=r.prediction.top3, image=r.image, cam=r.heatmap())
            for s, r in zip(samples, results)]


def _with_ci(m: dict, key: str, fmt: str = ".4f") -> str:
    """`0.8531 (0.82-0.88)`: a figure with its 95 % interval where the metrics have one."""
    ci = m.get(f"{key}_ci95")
    return f"{m[key]:{fmt}}" + (f" ({ci[0]:{fmt}}-{ci[1]:{fmt}})" if ci else "")


def format_table(metrics: dict) -> str:
    """The metrics as a plain-text table (summary, per class, confusion matrix)."""
    classes = metrics["classes"]
    lines = [f"model {metrics['model_version']}  images {metrics['n_images']}  "
             f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
             f"ECE {metrics['ece'] or 0:.4f}",
             f"product: {_with_ci(metrics, 'unk_rate', '.1%')} sent to UNK; over the cells it counts accuracy "
             f"{_with_ci(metrics, 'accuracy_counted')}  macro-F1 {_with_ci(metrics, 'macro_f1_counted')}", "",
             f"{'class':<6}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for code in classes:
        m = metrics["per_class"][code]
        lines.append(f"{code:<6}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>9d}")
    width = max(5, *(len(str(v)) for row in metrics["confusion_matrix"] for v in row)) + 1
    lines += ["", "confusion matrix (rows true, columns predicted)",
              f"{'':<6}" + "".join(f"{c:>{width}}" for c in classes)]
    for code, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"{code:<6}" + "".join(f"{v:>{width}d}" for v in row))
    for source, m in metrics.get("per_source", {}).items():
        lines.append(f"source {source}: {m['n_images']} images  accuracy {m['accuracy']:.4f}  "
                     f"macro-F1 {m['macro_f1']:.4f}  UNK {_with_ci(m, 'unk_rate', '.1%')}  counted: accuracy "
                     f"{_with_ci(m, 'accuracy_counted')}  macro-F1 {_with_ci(m, 'macro_f1_counted')}")
    if metrics.get("shifts"):
        lines += ["", "under scanner/stain shifts (same cells)",
                  f"{'shift':<16}{'accuracy':>10}{'macro-F1':>10}{'ECE':>8}{'same top-1':>12}{'UNK':>8}",
                  f"{'(none)':<16}{metrics['accuracy']:>10.4f}{metrics['macro_f1']:>10.4f}{metrics['ece'] or 0:>8.4f}"
                  f"{1.0:>12.3f}{metrics['unk_rate']:>8.1%}"]
        for name, m in metrics["shifts"].items():
            lines.append(f"{name:<16}{m['accuracy']:>10.4f}{m['macro_f1']:>10.4f}{m['ece']:>8.4f}"
                         f"{m['same_top1']:>12.3f}{m['unk_rate']:>8.1%}")
    if metrics.get("non_cells"):
        m = metrics["non_cells"]
        lines += ["", f"synthetic non-cells not counted: {_with_ci(m, 'not_counted', '.1%')} of {m['n_images']}"]
        lines += [f"  {kind:<10}{k['not_counted']:>7.1%} of {k['n_images']}  "
                  + " ".join(f"{label}:{n}" for label, n in k["labels"].items())
                  for kind, k in m["per_kind"].items() if k["n_images"]]
    if metrics.get("unreadable"):
        lines += ["", f"{len(metrics['unreadable'])} unreadable file(s) left out of the metrics:"]
        lines += [f"  {f}" for f in metrics["unreadable"]]
    return "\n".join(lines)
