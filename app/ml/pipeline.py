"""The product's per-cell pipeline: decode -> quality -> (unsharp repair) -> batched
prediction with Grad-CAM. Decoding and quality checks of the next batch run in a thread pool
while the current batch is in the network (OpenCV, PIL and ONNX Runtime release the GIL).
Used by `marrow classify`, `marrow bench` and the background workers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np

from app.ml.decode import decode_bytes, decode_path
from app.ml.model import Prediction, Predictor
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
