"""`marrow quantize`: int8 post-training quantisation (NNCF) of the exported graph, and the
measurement that decides whether it ships.

1. Calibration: `calibration` cells drawn (seeded) from the checkpoint's *training* split (every
   cell of the sources not in the card's `training.split.val_files`), through the product's own
   preprocessing (decode, quality repair, framing when the model uses it, resize, normalise).
2. `nncf.quantize` on the channel-padded network the cached ONNX graph was exported from,
   converted by OpenVINO from PyTorch (`_network_graph`; preset "mixed": symmetric weights,
   asymmetric activations, which suits SiLU's negative tail; "performance": symmetric both; fast
   or full bias correction), saved beside the graph as `<digest>-pad16-int8.xml/.bin`.
3. On the *validation* split, through the same preprocessing: top-1 of ONNX Runtime fp32 and of
   OpenVINO int8, macro-F1 of each against the labels, and their top-1 agreement.
   With `--accuracy-control N`, NNCF's accuracy-controlled variant instead: the layers whose
   quantisation costs most top-1 agreement with fp32 on N further training cells go back to
   float until that agreement is ≥ 99.5 % (the validation split stays unseen).
4. It ships (the `auto` backend may pick it on CPUs with VNNI or AMX-INT8) only if macro-F1 drops
   by at most `MAX_F1_DROP`, the agreement is at least `MIN_AGREEMENT`, and it passes the check
   every worker makes when it loads a backend (`backends.verify` on the probe cells); the report
   `<digest>-pad16-int8.json` says which, with every figure, either way.
"""
from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.ml import backends, framing, pipeline, preprocess
from app.ml.card import CARD_FILE, ModelCard
from app.ml.dataset import KNOWN_CODES, class_folders, load_sources, recorded_split
from app.ml.metrics import classification_report
from app.ml.quality import Thresholds

if TYPE_CHECKING:
    import openvino

MAX_F1_DROP = 0.005
MIN_AGREEMENT = 0.99
MAX_CONTROL_DROP = 0.005  # accuracy control's target on held-out training cells: agreement ≥ 99.5 %
BATCH = 8


def _prepared(paths: list[Path], card: ModelCard, repair: bool = True) -> tuple[np.ndarray, list[int]]:
    """The input squares of the readable cells (N×S×S×3 uint8, what the backends take) and their
    indices."""
    checks = pipeline.CellChecks(Thresholds.load(), repair, framing.Crop.from_card(card.framing), upload_checked=False,
                                 input_size=card.input_size)
    inputs, kept = [], []
    for i, p in enumerate(paths):
        checked = checks((str(p), None))
        if checked.model_input is not None:
            inputs.append(checked.model_input)
            kept.append(i)
    return preprocess.squares(inputs, card.input_size), kept


def _network_graph(model_dir: Path, card: ModelCard, example: np.ndarray) -> "openvino.Model":
    """The OpenVINO model NNCF quantises: the checkpoint's channel-padded network, as exported to
    ONNX, converted from PyTorch. Read from the ONNX file instead, the network carries the ONNX
    import's shape arithmetic and SiLU split into sigmoid and product; NNCF then placed 149
    quantisers instead of 99, OpenVINO could not fuse them, and the int8 graph ran at half the
    speed (throw-away run on Zen 4, 2 threads, batch 8: 81-87 against 174-177 cells/s,
    docs/performance-history.md)."""
    import openvino as ov
    import torch

    from app.ml.checkpoint import load_checkpoint
    from app.ml.export import LogitsAndFeatures, exported_network

    model, _ = load_checkpoint(model_dir, "cpu")
    network, _ = exported_network(LogitsAndFeatures(model).eval(), card.input_size)
    size = card.input_size
    graph = ov.convert_model(network, example_input=torch.from_numpy(example[:1]),
                             input=[ov.PartialShape([-1, 3, size, size])])
    for output, name in zip(graph.outputs, ("logits", "features")):
        output.get_tensor().set_names({name})
    return graph


def _top1(backend, squares: np.ndarray) -> tuple[np.ndarray, float]:
    """Top-1 class per cell, and cells/s (batches of BATCH, the backend's own threads)."""
    out = []
    t = time.perf_counter()
    for i in range(0, len(squares), BATCH):
        logits, _ = backend.forward(squares[i:i + BATCH])
        out.append(logits.argmax(1))
    return np.concatenate(out), len(squares) / (time.perf_counter() - t)


def split_samples(sources: list[Path], card: ModelCard) -> tuple[list, list]:
    """The sources' cells of the model's classes, split as its card recorded (train, validation)."""
    codes = card.codes
    classes = tuple(codes + [c for c in class_folders(sources) if c not in codes and c in KNOWN_CODES])
    samples = [s for s in load_sources(sources, classes) if s.label < len(codes)]
    return recorded_split(samples, card.training)


def _with_accuracy_control(nncf, model, dataset, train, calib, card, paths, threads, n, seed, common, log):
    """NNCF's accuracy-controlled quantisation: layers whose quantisation costs the most top-1
    agreement with fp32, on `n` further *training* cells (neither calibration nor validation),
    are put back to float until the agreement is within MAX_CONTROL_DROP."""
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    used = {s.path for s in calib}
    pool = [s for s in train if s.path not in used]
    held = random.Random(seed + 1).sample(pool, min(n, len(pool)))
    squares, _ = _prepared([s.path for s in held], card)
    normalisation = preprocess.Normalisation.of(card)
    ref, _ = _top1(backends.OnnxBackend(paths.onnx, threads, normalisation), squares)
    batch = normalisation(squares)  # NNCF's float model takes the normalised input
    items = [(batch[i:i + 1], int(ref[i])) for i in range(len(batch))]

    def agreement(compiled, data) -> tuple[float, list[float]]:
        hits = [float(compiled(x)[0].argmax() == top) for x, top in data]
        return float(np.mean(hits)), hits

    t = time.perf_counter()
    quantised = nncf.quantize_with_accuracy_control(
        model, dataset, nncf.Dataset(items), agreement, max_drop=MAX_CONTROL_DROP,
        drop_type=nncf.DropType.ABSOLUTE,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            max_num_iterations=30, ranking_subset_size=min(100, len(items))), **common)
    log(f"accuracy control on {len(items)} held-out training cells in {time.perf_counter() - t:.0f} s")
    return quantised, {"held_out_training_cells": len(items), "metric": "top-1 agreement with fp32",
                       "max_drop": MAX_CONTROL_DROP}


def _probe_failure(check: dict) -> str:
    """Why the load-time check on the probe cells (`backends.verify`) would refuse the graph: a
    graph that passes on the validation split but not there would be refused by every worker."""
    lim = check["limits"]
    return (f"load-time probe check failed (top-1 agreement {check['top1_agreement']:.4f}, limit "
            f"{lim['min_top1_agreement']:.4f}; probability difference {check['max_prob_diff']}, limit "
            f"{lim['max_prob_diff']}; Grad-CAM difference {check['max_cam_diff']}, limit {lim['max_cam_diff']})")


def quantize(sources: list[str | Path], model_dir: str | Path, cache_dir: str | Path, calibration: int = 300,
             seed: int = 0, threads: int | None = None, max_val: int = 0, preset: str = "mixed",
             bias_correction: str = "fast", ignore_types: list[str] | None = None,
             accuracy_control: int = 0,
             log=lambda s: print(s, file=sys.stderr, flush=True)) -> dict:
    import nncf
    import openvino as ov

    model_dir, cache_dir = Path(model_dir), Path(cache_dir)
    card = ModelCard.load(model_dir / CARD_FILE)
    threads = threads or 2
    paths = backends.ensure_exported(model_dir, cache_dir)
    train, val = split_samples([Path(s) for s in sources], card)
    if max_val:
        val = random.Random(seed).sample(val, min(max_val, len(val)))
    calib = random.Random(seed).sample(train, min(calibration, len(train)))
    log(f"{len(train)} training cells ({len(calib)} for calibration), {len(val)} validation cells")

    t0 = time.perf_counter()
    normalisation = preprocess.Normalisation.of(card)
    calib_squares, _ = _prepared([s.path for s in calib], card)
    calib_batch = normalisation(calib_squares)
    dataset = nncf.Dataset([calib_batch[i:i + 1] for i in range(len(calib_batch))])
    model = _network_graph(model_dir, card, calib_batch)
    common = dict(subset_size=len(calib_batch), preset=nncf.QuantizationPreset(preset),
                  fast_bias_correction=bias_correction == "fast",
                  ignored_scope=nncf.IgnoredScope(types=list(ignore_types)) if ignore_types else None)
    control = None
    if accuracy_control:
        quantised, control = _with_accuracy_control(nncf, model, dataset, train, calib, card, paths, threads,
                                                    accuracy_control, seed, common, log)
    else:
        quantised = nncf.quantize(model, dataset, **common)
    ov.save_model(quantised, str(paths.int8_xml), compress_to_fp16=False)
    quantise_s = time.perf_counter() - t0
    log(f"quantised in {quantise_s:.0f} s -> {paths.int8_xml}")

    val_squares, kept = _prepared([s.path for s in val], card)
    labels = np.array([val[i].label for i in kept])
    fp32 = backends.OnnxBackend(paths.onnx, threads, normalisation)
    int8 = backends.OpenVinoBackend(paths.int8_xml, "int8", threads, normalisation, cache_dir)
    top_fp32, fp32_rate = _top1(fp32, val_squares)
    top_int8, int8_rate = _top1(int8, val_squares)
    rep_fp32 = classification_report(labels, top_fp32, card.codes)
    rep_int8 = classification_report(labels, top_int8, card.codes)
    agreement = float((top_fp32 == top_int8).mean())
    drop = rep_fp32["macro_f1"] - rep_int8["macro_f1"]
    fc = backends.classifier_weight(model_dir, paths)
    probe_check = backends.verify(int8, paths, card, fc)
    ships = drop <= MAX_F1_DROP and agreement >= MIN_AGREEMENT and probe_check["passed"]
    verdict = (f"macro-F1 {rep_fp32['macro_f1']:.4f} -> {rep_int8['macro_f1']:.4f} (drop {drop:+.4f}, limit "
               f"{MAX_F1_DROP}), top-1 agreement {agreement:.4f} (limit {MIN_AGREEMENT})"
               + ("" if probe_check["passed"] else f", {_probe_failure(probe_check)}")
               + (": ships" if ships else ": does not ship"))
    report = {
        "model_version": card.version, "weights_sha256_16": paths.digest, "graph": paths.int8_xml.name,
        "calibration_cells": len(calib_batch), "calibration_from": "training split", "seed": seed,
        "quantised_from": "the channel-padded PyTorch network (openvino.convert_model)",
        "preset": preset, "bias_correction": bias_correction, "ignored_types": list(ignore_types or []),
        "accuracy_control": control,
        "validation_cells": int(len(labels)), "sources": [str(s) for s in sources],
        "fp32_macro_f1": round(rep_fp32["macro_f1"], 4), "int8_macro_f1": round(rep_int8["macro_f1"], 4),
        "fp32_accuracy": round(rep_fp32["accuracy"], 4), "int8_accuracy": round(rep_int8["accuracy"], 4),
        "macro_f1_drop": round(drop, 4), "top1_agreement": round(agreement, 4),
        "limits": {"max_macro_f1_drop": MAX_F1_DROP, "min_top1_agreement": MIN_AGREEMENT},
        "ships": bool(ships), "verdict": verdict, "probe_check": probe_check,
        "fp32_cells_per_s": round(fp32_rate, 1), "int8_cells_per_s": round(int8_rate, 1), "threads": threads,
        "cpu_flags": backends.cpu_flags(), "quantise_seconds": round(quantise_s, 1),
        "nncf": nncf.__version__, "openvino": ov.__version__,
    }
    paths.int8_report.write_text(json.dumps(report, indent=2) + "\n")
    log(verdict)
    return report
