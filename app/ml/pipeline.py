"""The product's per-cell pipeline: decode -> quality -> (unsharp repair) -> framing of the
central cell (models trained with it) -> batched prediction with Grad-CAM -> counted under its
top class or unidentified (`UNK`, see `unidentified`). Used by `marrow classify`, `evaluate`,
`bench` and the background workers.

On CPU (ONNX Runtime, OpenVINO) `workers` network runs go side by side, each with
`threads // workers` threads (one OpenVINO stream): on a 2-core CPU two 1-thread runs side by
side beat one 2-thread run (no thread hand-offs inside the network), see docs/bench-ml.md and
README "Inference backends". Each of `workers + 1` threads takes whole batches through decode,
checks and the network: one batch more than the network runs is being checked at any time, so
the core a check leaves idle while its Python holds the GIL is taken by a network run. On CUDA,
and for PyTorch eager, decoding and checks of the next batch run in a thread pool while the
current batch is in the network. OpenCV, PIL, ONNX Runtime and OpenVINO release the GIL.
OpenCV's own thread pool is switched off while the pipeline runs (`opencv_in_caller_threads`).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from threading import Semaphore

import cv2
import numpy as np

from app.ml import framing
from app.ml.backends import CPU_BATCH, SIDE_BY_SIDE
from app.ml.decode import decode_loaded, decode_path
from app.ml.gradcam import Box, cam_in_image
from app.ml.predictor import Prediction, Predictor
from app.ml.quality import QualityRecord, Thresholds, assess, measure_view
from app.ml.unidentified import Rule, decide


@dataclass
class CellResult:
    name: str
    quality: QualityRecord
    prediction: Prediction | None  # None when the image could not be decoded
    image: np.ndarray | None  # the decoded (unrepaired) RGB cell, the frame of its heatmap
    framing: framing.Framing | None = None  # where the central nucleus is (the model is given
    # that crop when its card says `framing`)
    view: np.ndarray | None = None  # the decoded cell at the scale QC measured it (short side
    # MEASURE_SIDE): the source of a thumbnail, already scaled
    cam_box: Box | None = None  # the square of `image` the model was given, which the
    # prediction's heatmap (at the network's resolution) covers

    @property
    def error(self) -> str | None:
        return self.quality.error

    def heatmap(self) -> np.ndarray:
        """The prediction's Grad-CAM over the whole image (H×W in [0, 1]), for drawing an overlay."""
        return cam_in_image(self.prediction.cam, self.cam_box, self.image.shape)


# An item is a name plus a way to get its bytes (or a path to read).
Item = tuple[str, Callable[[], bytes] | None]

# Cells per network call. CPU: 2, 4 and 8 ran equally fast with `marrow bench` (docs/bench-ml.md), 16
# slower, and each doubling adds ~250 MB of ONNX Runtime buffers; CUDA: not measured yet.
DEFAULT_BATCH_SIZE = {"cpu": CPU_BATCH, "cuda": 8}


@dataclass
class _Checked:
    record: QualityRecord
    rgb: np.ndarray | None  # None: not decodable, or not kept (CellChecks.keep_image)
    shape: tuple[int, ...] | None  # the decoded image's
    model_input: np.ndarray | None  # None: not decodable
    framing: framing.Framing | None  # None: not decodable
    view: np.ndarray | None  # None: not decodable


def network_image(image: np.ndarray, cell: np.ndarray, view: np.ndarray, repaired: bool, size: int) -> np.ndarray:
    """What to prepare for the network: `image` (the cell after repair and framing), or QC's view
    where that is the same pixels already at the input size: the whole square cell, unrepaired,
    whose view (`measure_view`, short side 224) is the reduction `prepare` would make of it,
    with the same call. About half the bone-marrow crops are framed whole, and theirs is made
    once instead of twice."""
    whole = not repaired and image.shape == cell.shape and image.shape[0] == image.shape[1]
    return view if whole and view.shape[:2] == (size, size) else image


@dataclass(frozen=True)
class CellChecks:
    """How each cell is checked before the network: QC thresholds, unsharp repair, the model's
    crop (None: the model takes whole images), whether the bytes passed the upload check, and
    the network's input size."""

    thresholds: Thresholds
    repair: bool
    crop: framing.Crop | None
    upload_checked: bool
    input_size: int
    keep_image: bool = True  # False: results carry no decoded image (the worker draws none)

    @property
    def framed(self) -> bool:
        """The model is given the crop around the nucleus (else the whole image, padded square)."""
        return self.crop is not None

    def __call__(self, item: Item) -> _Checked:
        name, load = item
        decoded = decode_path(name) if load is None else decode_loaded(load, checked=self.upload_checked)
        view = measure_view(decoded.rgb) if decoded.rgb is not None else None
        record, model_input = assess(name, decoded, self.thresholds, self.repair, view)
        # the nucleus is looked for on every model (the count-or-UNK rule needs it); only models
        # trained on framed cells are given the crop
        where = framing.locate(model_input, self.crop or framing.DEFAULT_CROP) if model_input is not None else None
        if self.framed and where is not None:
            model_input = framing.frame(model_input, where)
        if model_input is not None:
            model_input = network_image(model_input, decoded.rgb, view, record.repaired, self.input_size)
        shape = decoded.rgb.shape if decoded.rgb is not None else None
        return _Checked(record, decoded.rgb if self.keep_image else None, shape, model_input, where, view)


def _predict(chunk: list[Item], checked: list[_Checked], predictor: Predictor, with_cam: bool,
             framed: bool, threads: int | None = None) -> list[CellResult]:
    """One network call for a checked batch, then each cell's count-or-UNK decision."""
    good = [i for i, c in enumerate(checked) if c.model_input is not None]
    preds = predictor.predict([checked[i].model_input for i in good], with_cam=with_cam, threads=threads)
    rule = Rule.from_card(predictor.card.unidentified)
    by_index = dict(zip(good, preds))
    out = []
    for i, ((name, _), c) in enumerate(zip(chunk, checked)):
        p = by_index.get(i)
        box = None
        if p is not None:
            p.unidentified = decide(p.probability, p.energy, c.record.flags, c.framing.found, rule)
            box = framing.input_square(c.framing, c.shape, framed)
        out.append(CellResult(name, c.record, p, c.rgb, c.framing, c.view, box))
    return out


def batches(it: Iterable, n: int, total: int | None = None, tail: int = 0, tail_n: int = 1) -> Iterator[list]:
    """Consecutive lists of n items (the last may be shorter), each as soon as its items are
    there. Given the `total` number of items, the last `tail` come in lists of `tail_n` (the
    worker writes a task's last cells on their own, so the task ends soon after its last result)."""
    it = iter(it)
    if total is not None and tail:
        yield from batches(islice(it, max(0, total - tail)), n)
        n = tail_n
    while chunk := list(islice(it, n)):
        yield chunk


@contextmanager
def opencv_in_caller_threads() -> Iterator[None]:
    """OpenCV without its own thread pool while the pipeline's threads run. They already fill
    the cores; OpenCV splitting each resize, blur and labelling across the cores as well only
    adds hand-offs: on 2 cores 1-2 CPU ms a cell more in the worker, for the same pixels,
    metrics and crops (docs/performance-history.md, 2026-12-03)."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def run(items: Iterable[Item], predictor: Predictor, thresholds: Thresholds | None = None,
        repair: bool = True, with_cam: bool = True, batch_size: int = 8,
        workers: int = SIDE_BY_SIDE, upload_checked: bool = False, keep_image: bool = True) -> Iterator[CellResult]:
    """Results in input order; a bad file yields a result with its reason, never an exception.

    `upload_checked`: the items' bytes passed the upload check already (the worker's, read from
    the storage), which lets them be decoded faster (`decode_bytes(checked=True)`).
    `keep_image=False`: results without the decoded image (`CellResult.image` None), so cells
    in flight hold only their crops and views: 40 cells of 6000 × 6000 px took a worker to 4.9 GB."""
    checks = CellChecks(thresholds or Thresholds.load(), repair, framing.Crop.from_card(predictor.card.framing),
                        upload_checked, predictor.card.input_size, keep_image)
    with opencv_in_caller_threads():
        yield from _run(items, predictor, checks, with_cam, batch_size, workers)


def _run(items: Iterable[Item], predictor: Predictor, checks: CellChecks, with_cam: bool, batch_size: int,
         workers: int) -> Iterator[CellResult]:
    if getattr(predictor, "backend", "").startswith(("onnx", "openvino")) and min(workers, predictor.threads) > 1:
        # never more parallel network runs than the predictor's thread budget
        yield from _run_parallel(items, predictor, checks, with_cam, batch_size, min(workers, predictor.threads))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = None
        for chunk in batches(items, batch_size):
            futures = [pool.submit(checks, item) for item in chunk]
            if pending is not None:
                yield from _predict(pending[0], [f.result() for f in pending[1]], predictor, with_cam, checks.framed)
            pending = (chunk, futures)
        if pending is not None:
            yield from _predict(pending[0], [f.result() for f in pending[1]], predictor, with_cam, checks.framed)


def _whole_batch(chunk: list[Item], predictor: Predictor, checks: CellChecks, with_cam: bool,
                 threads: int, network: Semaphore) -> list[CellResult]:
    checked = [checks(item) for item in chunk]
    with network:
        return _predict(chunk, checked, predictor, with_cam, checks.framed, threads)


def _run_parallel(items: Iterable[Item], predictor: Predictor, checks: CellChecks, with_cam: bool, batch_size: int,
                  workers: int) -> Iterator[CellResult]:
    """`workers` batches in the network at once and one more being checked, each batch decoded,
    checked and predicted by one thread. Whole batches to the end: sending a run's last cells one
    at a time, so the network runs end together, cost OpenVINO bf16 more than it saved (6-7 % of
    a 32-cell run on an AMX Xeon; ONNX Runtime fp32 the same either way; docs/performance-history.md,
    2026-12-05, twenty-fourth session)."""
    threads = max(1, predictor.threads // workers)
    network = Semaphore(workers)
    with ThreadPoolExecutor(max_workers=workers + 1) as pool:
        pending: deque = deque()
        for chunk in batches(items, batch_size):
            pending.append(pool.submit(_whole_batch, chunk, predictor, checks, with_cam, threads, network))
            if len(pending) > workers + 1:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
