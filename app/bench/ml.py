"""Throughput of the product's cell pipeline against the naive one-image demo loop.

Four ways of classifying the same real cells, measured in one process:

(a)  naive:          the loop a one-image demo app runs. The model is loaded once; then per image:
                     PIL open -> torchvision Resize(224) + ToTensor + Normalize -> PyTorch eager
                     forward at batch 1 under `torch.no_grad()` (torch's default thread count)
                     -> softmax -> top class.
(a') naive_gradcam:  the same loop, plus per image a Grad-CAM of the top class with the `grad-cam`
                     package (`pytorch_grad_cam.GradCAM` on the last conv stage, built once).
(b)  batched:        the product's pipeline (`app.ml.pipeline.run`): decode + quality checks +
                     repair + batched prediction with `Predictor` on the backend `auto` chose for
                     this CPU (or `--backend`), verified at load (see `app.ml.backends`).
(c)  gradcam:        the same pipeline with Grad-CAM heatmaps (analytic, from the same forward).
(f)  fp32:           on CPU, the same pipeline on ONNX Runtime fp32 (the baseline and fallback
                     backend), when (b) runs another backend; `agreement_top1` is the share of the
                     cells whose top class (b) and (f) agree on.

The machine may be shared, so the four are interleaved finely: every round goes through the `n`
cells in slices of a few batches, and each slice is run by every method in turn (the order
rotated at each step); a method's cells/s is all the cells it classified over all its time. The
methods thus see the same background load, and their ratios are comparable within one run.
Peak memory is the process's peak resident set size (all four methods, both models loaded).

Pure ML code: no web or database imports.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.bench.cells import DEFAULT_DATA_DIR, pick_cells
from app.bench.machine import CpuMeter, cpu_name, steal_note
from app.config import get_settings
from app.ml.card import CARD_FILE, SHIPPED_MODEL, WEIGHTS_FILE, is_checkpoint, require_checkpoint


def resolve_model(model_dir: str | Path | None, scratch: Path) -> tuple[Path, str]:
    """The checkpoint to measure and a line saying which it is.

    No --model and no shipped model yet: a seeded random-weights ReXNet-150 is built in
    `scratch` (the speed of a network does not depend on its weights).
    """
    from app.ml.card import ModelCard

    explicit = model_dir is not None
    d = Path(model_dir) if explicit else SHIPPED_MODEL
    if explicit or is_checkpoint(d):
        card = ModelCard.load(require_checkpoint(d) / CARD_FILE)
        return d, f"{d} (version {card.version}, {card.architecture}, input {card.input_size})"
    import torch

    from app.ml.checkpoint import build_model, save_checkpoint

    out = scratch / "bench-random"
    if not (out / WEIGHTS_FILE).is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model()
        save_checkpoint(model, ModelCard(version="bench-random",
                                         notes="random weights (seed 0), for speed measurements only"), out)
    return out, (f"RANDOM WEIGHTS (version bench-random, rexnet_150, input 224): the shipped model "
                 f"{SHIPPED_MODEL} is not there yet; speed does not depend on the weights")


def peak_rss_mb() -> float:
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024 if sys.platform != "darwin" else kb / 2**20
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20


class NaiveDemo:
    """The one-image demo app: torch eager, batch 1, torchvision transforms on PIL images."""

    def __init__(self, model_dir: Path, device: str):
        import torch
        from torchvision import transforms

        from app.ml.checkpoint import load_checkpoint

        self.torch = torch
        self.device = device
        self.model, self.card = load_checkpoint(model_dir, device)
        self.transform = transforms.Compose([
            transforms.Resize(self.card.input_size),
            transforms.ToTensor(),
            transforms.Normalize(self.card.mean, self.card.std),
        ])

    def _input(self, path: Path):
        from PIL import Image

        with Image.open(path) as img:
            return self.transform(img.convert("RGB")).unsqueeze(0).to(self.device)

    def _classify(self, x) -> tuple[int, float]:
        with self.torch.no_grad():
            probs = self.model(x).softmax(1)[0]
        k = int(probs.argmax())
        return k, float(probs[k])

    def run(self, paths: list[Path]) -> list[int]:
        return [self._classify(self._input(p))[0] for p in paths]

    def run_gradcam(self, paths: list[Path]) -> list[np.ndarray]:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        from app.ml.gradcam import target_layer

        out = []
        with GradCAM(model=self.model, target_layers=[target_layer(self.model)]) as cam:
            for p in paths:
                x = self._input(p)
                k, _ = self._classify(x)
                out.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(k)])[0])
        return out


def _product(predictor, paths: list[Path], with_cam: bool, batch_size: int, workers: int | None):
    from app.ml import pipeline

    kwargs = {} if workers is None else {"workers": workers}
    results = list(pipeline.run([(str(p), None) for p in paths], predictor, with_cam=with_cam,
                                batch_size=batch_size, **kwargs))
    bad = [r for r in results if r.prediction is None]
    if bad:
        raise RuntimeError(f"{len(bad)} cells could not be classified, e.g. {bad[0].name}: {bad[0].error}")
    return results


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def run_bench(data_dir: str | Path | None = None, n: int = 64, device: str = "cpu",
              model_dir: str | Path | None = None, batch_size: int | None = None,
              workers: int | None = None, rounds: int = 3, warmup: int | None = None,
              slice_cells: int | None = None,
              scratch: str | Path | None = None, backend: str = "auto",
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> dict:
    """Measure (a), (a'), (b), (c) on the same `n` real cells; the result dict (see module doc)."""
    import tempfile

    import torch

    from app.ml.checkpoint import resolve_device
    from app.ml.pipeline import DEFAULT_BATCH_SIZE
    from app.ml.predictor import Predictor

    device = resolve_device(device)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    batch_size = batch_size or DEFAULT_BATCH_SIZE.get(device, 8)
    paths = pick_cells(data_dir or DEFAULT_DATA_DIR, n)
    tmp = tempfile.TemporaryDirectory(prefix="marrow-bench-") if scratch is None else None
    scratch = Path(scratch) if scratch is not None else Path(tmp.name)
    try:
        model_dir, model_line = resolve_model(model_dir, scratch)
        log(f"model: {model_line}")
        log(f"cells: {len(paths)} from {Path(data_dir or DEFAULT_DATA_DIR)}; device {device}; "
            f"{rounds} rounds; batch size {batch_size}")

        naive = NaiveDemo(model_dir, device)
        cache = get_settings().model_cache  # the product's: exported and compiled once, for every run
        products = {"batched": Predictor(model_dir, device=device, cache_dir=cache, backend=backend)}
        if device == "cuda":
            products["amp"] = Predictor(model_dir, device=device, amp=True)
        predictor = products["batched"]
        log(f"backend: {predictor.backend} ({predictor.precision}); check on the probe cells: "
            f"{predictor.selection.get('check')}; fallback: {predictor.selection.get('fallback_reason')}")
        fp32 = None
        if device == "cpu":
            fp32 = predictor if predictor.backend == "onnx" else Predictor(
                model_dir, device=device, cache_dir=cache, backend="onnx")

        methods: dict[str, Callable[[list[Path]], object]] = {
            "naive": naive.run,
            "naive_gradcam": naive.run_gradcam,
            "batched": lambda cells: _product(predictor, cells, False, batch_size, workers),
            "gradcam": lambda cells: _product(predictor, cells, True, batch_size, workers),
        }
        if fp32 is not None and fp32 is not predictor:
            methods["fp32"] = lambda cells: _product(fp32, cells, False, batch_size, workers)
        if device == "cuda":
            amp = products["amp"]
            methods["batched_amp"] = lambda cells: _product(amp, cells, False, batch_size, workers)
            methods["gradcam_amp"] = lambda cells: _product(amp, cells, True, batch_size, workers)

        warm = paths[:warmup or min(len(paths), max(8, 2 * batch_size))]
        log(f"warm-up on {len(warm)} cells ...")
        for fn in methods.values():
            fn(warm)
        _sync(device)

        names = list(methods)
        times = {k: [0.0] * rounds for k in names}
        step_cells = slice_cells or max(32, 4 * batch_size)
        slices = [paths[i:i + step_cells] for i in range(0, len(paths), step_cells)]
        step = 0
        meter = CpuMeter()
        for r in range(rounds):
            for cells in slices:
                for name in names[step % len(names):] + names[:step % len(names)]:
                    _sync(device)
                    t0 = time.perf_counter()
                    methods[name](cells)
                    _sync(device)
                    times[name][r] += time.perf_counter() - t0
                step += 1
            log("round %d: %s" % (r + 1, ", ".join(f"{k} {len(paths) / times[k][r]:.1f}/s" for k in names)))

        steal = meter.steal_share()  # over the timed rounds
        rate = {k: len(paths) * len(v) / sum(v) for k, v in times.items()}
        if fp32 is not None and "fp32" not in rate:
            rate["fp32"] = rate["batched"]  # (b) is ONNX Runtime fp32 itself
        agreement = None
        if fp32 is not None:  # untimed: each cell's top class on (b) and on fp32
            codes = [r.prediction.code for r in _product(predictor, paths, False, batch_size, workers)]
            ref = [r.prediction.code for r in _product(fp32, paths, False, batch_size, workers)]
            agreement = sum(a == b for a, b in zip(codes, ref)) / len(ref)
        out = {
            "naive_cells_per_s": round(rate["naive"], 2),
            "naive_gradcam_cells_per_s": round(rate["naive_gradcam"], 2),
            "batched_cells_per_s": round(rate["batched"], 2),
            "gradcam_cells_per_s": round(rate["gradcam"], 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "device": device,
            "n": len(paths),
            "ratio_batched_over_naive": round(rate["batched"] / rate["naive"], 2),
            "ratio_gradcam_over_naive_gradcam": round(rate["gradcam"] / rate["naive_gradcam"], 2),
            "ratio_gradcam_over_batched": round(rate["gradcam"] / rate["batched"], 2),
            "backend": predictor.backend,
            "precision": predictor.precision,
            "cpu_flags": predictor.selection.get("cpu_flags") or [],
            "fp32_cells_per_s": round(rate["fp32"], 2) if "fp32" in rate else None,
            "agreement_top1": None if agreement is None else round(agreement, 4),
            "ratio_batched_over_fp32": round(rate["batched"] / rate["fp32"], 2) if "fp32" in rate else None,
            "backend_check": predictor.selection.get("check"),
            "backend_fallback_reason": predictor.selection.get("fallback_reason"),
            "backend_skipped": predictor.selection.get("skipped"),
        }
        if device == "cuda":
            out["batched_amp_cells_per_s"] = round(rate["batched_amp"], 2)
            out["gradcam_amp_cells_per_s"] = round(rate["gradcam_amp"], 2)
            out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            out["gpu"] = torch.cuda.get_device_name()
        out.update({
            "model": model_line,
            "batch_size": batch_size,
            "rounds": rounds,
            "slice_cells": step_cells,
            "round_seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
            "torch_threads": torch.get_num_threads(),
            "ort_threads": fp32.threads if fp32 is not None else None,
            "predictor_threads": predictor.threads,
            "cpu": cpu_name(),
            "cpu_steal_share": steal,
            "cpu_count": os.cpu_count(),
            "loadavg_1min_start": None if load_start is None else round(load_start, 2),
            "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        })
        if out["loadavg_1min"] is not None and max(out["loadavg_1min"], load_start) > 1.5 * (os.cpu_count() or 1):
            log(f"note: the machine was busy (load average {load_start:.1f} -> {out['loadavg_1min']:.1f} on "
                f"{os.cpu_count()} CPUs); PyTorch eager suffers more from contention than the pipeline, "
                f"so the ratios are higher than on a quiet machine")
        if note := steal_note(steal, "the timed rounds"):
            log(note)
        return out
    finally:
        if tmp is not None:
            tmp.cleanup()

