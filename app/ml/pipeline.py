"""The product's per-cell pipeline: decode -> quality -> (unsharp repair) -> batched
prediction with Grad-CAM. Used by `marrow classify`, `marrow bench` and the background workers.

On CPU (ONNX Runtime) each of `workers` threads takes whole batches through decode, checks and
the network, the network with `threads // workers` intra-op threads: on a 2-core CPU two
1-thread runs side by side beat one 2-thread run (no thread hand-offs inside the network, and
one worker's decoding fills the gaps of the other's), see docs/bench-ml.md. On CUDA decoding
and checks of the next batch run in a thread pool while the current batch is on the GPU.
OpenCV, PIL and ONNX Runtime release the GIL.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np

from app.ml.decode import decode_bytes, decode_path
from app.ml.predictor import Prediction, Predictor
from app.ml.quality import QualityRecord, Thresholds, assess


@dataclass
class CellResult:
    name: str
    quality: QualityRecord
    prediction: Prediction | None  # None when the image could not be decoded
    image: np.ndarray | None  # the decoded (unrepaired) RGB cell, for thumbnails and overlays

    @property
    def error(self) -> str | None:
        return self.quality.error


# An item is a name plus a way to get its bytes (or a path to read).
Item = tuple[str, Callable[[], bytes] | None]

# Cells per network call. CPU: 2, 4 and 8 ran equally fast with `marrow bench` (docs/bench-ml.md), 16
# slower, and each doubling adds ~250 MB of ONNX Runtime buffers; CUDA: not measured yet.
DEFAULT_BATCH_SIZE = {"cpu": 4, "cuda": 8}


def _check(item: Item, thresholds: Thresholds, repair: bool):
    name, load = item
    decoded = decode_path(name) if load is None else decode_bytes(load())
    record, model_input = assess(name, decoded, thresholds, repair)
    return record, decoded.rgb, model_input


def _batches(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


def run(items: Iterable[Item], predictor: Predictor, thresholds: Thresholds | None = None,
        repair: bool = True, with_cam: bool = True, batch_size: int = 8,
        workers: int = 2) -> Iterator[CellResult]:
    """Results in input order; a bad file yields a result with its reason, never an exception."""
    thresholds = thresholds or Thresholds.load()
    if getattr(predictor, "backend", None) == "onnx" and min(workers, predictor.threads) > 1:
        # never more parallel network runs than the predictor's thread budget
        yield from _run_parallel(items, predictor, thresholds, repair, with_cam, batch_size,
                                 min(workers, predictor.threads))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = None
        for chunk in _batches(items, batch_size):
            futures = [pool.submit(_check, item, thresholds, repair) for item in chunk]
            if pending is not None:
                yield from _finish(*pending, predictor, with_cam)
            pending = (chunk, futures)
        if pending is not None:
            yield from _finish(*pending, predictor, with_cam)


def _finish(chunk: list[Item], futures, predictor: Predictor, with_cam: bool) -> list[CellResult]:
    checked = [f.result() for f in futures]
    good = [i for i, (_, _, x) in enumerate(checked) if x is not None]
    preds = predictor.predict([checked[i][2] for i in good], with_cam=with_cam)
    by_index = dict(zip(good, preds))
    return [CellResult(name, rec, by_index.get(i), rgb)
            for i, ((name, _), (rec, rgb, _)) in enumerate(zip(chunk, checked))]


def _whole_batch(chunk: list[Item], predictor: Predictor, thresholds: Thresholds, repair: bool,
                 with_cam: bool, threads: int) -> list[CellResult]:
    checked = [_check(item, thresholds, repair) for item in chunk]
    good = [i for i, (_, _, x) in enumerate(checked) if x is not None]
    preds = predictor.predict([checked[i][2] for i in good], with_cam=with_cam, threads=threads)
    by_index = dict(zip(good, preds))
    return [CellResult(name, rec, by_index.get(i), rgb)
            for i, ((name, _), (rec, rgb, _)) in enumerate(zip(chunk, checked))]


def _run_parallel(items, predictor, thresholds, repair, with_cam, batch_size, workers):
    """`workers` batches in flight at once, each decoded, checked and predicted by one thread."""
    threads = max(1, predictor.threads // workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for chunk in _batches(items, batch_size):
            pending.append(pool.submit(_whole_batch, chunk, predictor, thresholds, repair,
                                       with_cam, threads))
            if len(pending) > workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
