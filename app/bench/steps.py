"""`marrow bench-steps`: where a cell's CPU goes, step by step.

`marrow bench-app` gives the whole product's cells/s against the network's. On a machine whose
cores the network fills, every CPU millisecond spent outside the network lowers that ratio, and
on a shared machine the end-to-end figures move more between minutes than one step's change.
This times each step the web process and the worker take a cell through, with the product's
own functions in the order they call them, one step at a time: CPU time per cell, the median
of `rounds` passes over the same real cells. The network runs one batch at a time on one
thread, as each of the worker's pipeline threads does, and OpenCV runs in the calling thread as
in the pipeline (`opencv_in_caller_threads`), so a step's thread time is all its CPU. Not in
it: the database writes, the queue and the HTTP layer (bench-app's `cpu_ms_per_cell` has the
whole processes). `store` and `write` (the image; the thumbnail) are mostly creating files,
whose cost depends on the file system's state more than on the product: on ext4 without a
journal it is several times higher for about 30 s after many files were removed anywhere on the
disk (the kernel skips every recently freed inode), so run it apart from test runs and other
benches, and every pass's storage is removed only after the last pass. `heatmap` is making the
Grad-CAM map the cell's row keeps (the row itself is written with the database's).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from app.bench.cells import pick_cells
from app.cells.overlays import stored_heatmap
from app.config import get_settings
from app.ml import framing
from app.ml.card import SHIPPED_MODEL
from app.ml.decode import decode_bytes
from app.ml.gradcam import cam_from_features
from app.ml.pipeline import DEFAULT_BATCH_SIZE, network_image, opencv_in_caller_threads
from app.ml.predictor import Predictor
from app.ml.quality import Thresholds, assess, measure_view
from app.processing.service import thumbnail_jpeg
from app.storage import Storage, sha256

WEB_STEPS = ("upload_check", "store")
WORKER_STEPS = ("read", "decode", "qc_view", "qc_checks", "framing", "prepare", "network", "gradcam",
                "heatmap", "thumbnail", "write")


class _Clock:
    """CPU seconds summed per step: this thread's, and for the network the whole process's (its
    own threads run it; they may spin on after a call, which would be counted in the steps after
    it if those took the process's time too)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(WEB_STEPS + WORKER_STEPS, 0.0)

    def run(self, step: str, call: Callable, *args):
        clock = time.process_time if step == "network" else time.thread_time
        start = clock()
        out = call(*args)
        self.seconds[step] += clock() - start
        return out


def _one_pass(datas: list[bytes], predictor: Predictor, thresholds: Thresholds, batch_size: int,
              storage: Storage) -> dict[str, float]:
    """Every cell once through every step; CPU seconds per step."""
    clock = _Clock()
    crop = framing.Crop.from_card(predictor.card.framing)
    for i in range(0, len(datas), batch_size):
        cells = []
        for data in datas[i:i + batch_size]:  # the upload request, then the worker's checks
            _, digest = clock.run("upload_check", lambda d: (decode_bytes(d, reduced=True), sha256(d)), data)
            key = storage.image_key(digest)
            clock.run("store", storage.put, key, data)
            data = clock.run("read", storage.read, key)
            decoded = clock.run("decode", lambda d: decode_bytes(d, checked=True), data)
            view = clock.run("qc_view", measure_view, decoded.rgb)
            record, image = clock.run("qc_checks", assess, key, decoded, thresholds, True, view)
            where = clock.run("framing", framing.locate, image, crop or framing.DEFAULT_CROP)
            if crop is not None:
                image = framing.frame(image, where)
            image = network_image(image, decoded.rgb, view, record.repaired, predictor.card.input_size)
            cells.append((digest, decoded.rgb, view, where, image))
        batch = clock.run("prepare", predictor.prepare, [c[4] for c in cells])
        logits, features = clock.run("network", predictor.forward, batch, 1)
        cams = clock.run("gradcam", cam_from_features, features, predictor.fc_weight, logits.argmax(1))
        for (digest, rgb, view, where, _), cam in zip(cells, cams):
            clock.run("heatmap", stored_heatmap, cam, framing.input_square(where, rgb.shape, crop is not None))
            thumb = clock.run("thumbnail", thumbnail_jpeg, view)
            clock.run("write", storage.put, storage.thumbnail_key(digest), thumb)
    return clock.seconds


def _storage(root: Path) -> Storage:
    """An empty storage whose folders exist, as in a lab's after its first cases (creating a
    folder is a first file's cost, not a cell's)."""
    storage = Storage(root)
    for digest in (f"{i:02x}" for i in range(256)):
        for key in (storage.image_key(digest), storage.thumbnail_key(digest), storage.overlay_key(digest, "")):
            storage.path(key).parent.mkdir(parents=True, exist_ok=True)
    return storage


def run_steps(data_dir: Path, n: int, rounds: int, model_dir: Path | None, backend: str) -> dict:
    cells = pick_cells(data_dir, n)
    datas = [p.read_bytes() for p in cells]
    predictor = Predictor(model_dir or SHIPPED_MODEL, backend=backend)
    batch_size = DEFAULT_BATCH_SIZE["cpu"]
    thresholds = Thresholds.load()
    passes = []
    data_root = get_settings().data_dir  # scratch storage where the product keeps its files
    data_root.mkdir(parents=True, exist_ok=True)
    # each pass into its own empty storage, all removed after the last (see the module doc)
    with opencv_in_caller_threads(), tempfile.TemporaryDirectory(prefix="marrow-steps-", dir=data_root) as tmp:
        for i in range(rounds + 1):  # the first pass warms caches and the network; not counted
            passes.append(_one_pass(datas, predictor, thresholds, batch_size, _storage(Path(tmp) / str(i))))
    ms = {step: round(1000 * statistics.median(p[step] for p in passes[1:]) / len(datas), 3)
          for step in WEB_STEPS + WORKER_STEPS}
    outside = [s for s in WORKER_STEPS if s != "network"]
    info = predictor.describe()
    return {"cells": len(datas), "rounds": rounds, "batch_size": batch_size, "model_version": predictor.version,
            "backend": info["backend"], "precision": info["precision"], "cpu_flags": info["cpu_flags"],
            "cpu_ms_per_cell": ms, "web_ms_per_cell": round(sum(ms[s] for s in WEB_STEPS), 3),
            "worker_outside_network_ms_per_cell": round(sum(ms[s] for s in outside), 3),
            "network_ms_per_cell": ms["network"]}
