"""The CPU fast path (ONNX Runtime, batched, pipeline workers, analytic Grad-CAM) gives what
PyTorch eager and the `grad-cam` package give, on real cells. Speed itself is measured by
`marrow bench`, never by a timed test."""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from app.ml import framing, pipeline
from app.ml.decode import decode_path
from app.ml.gradcam import scale_maps
from support.oracles import reference_gradcam
from app.ml.predictor import Predictor
from app.ml.preprocess import Normalisation, square_resize
from app.ml.quality import Thresholds, assess

N_CELLS = 8


@pytest.fixture(scope="module")
def cells(real_cells_dir: Path) -> list[tuple[str, np.ndarray]]:
    """A few real cells of different classes, decoded to RGB uint8."""
    out = []
    for code in sorted(d.name for d in real_cells_dir.iterdir() if d.is_dir()):
        for path in sorted((real_cells_dir / code).glob("*.jpg"))[:2]:
            out.append((str(path), decode_path(path).rgb))
    assert out, f"no cells in {real_cells_dir}"
    return out[:N_CELLS]


@pytest.fixture(scope="module")
def onnx_predictor(random_checkpoint: Path, tmp_path_factory) -> Predictor:
    return Predictor(random_checkpoint, device="cpu", backend="onnx",
                     cache_dir=tmp_path_factory.mktemp("onnx-cache"), threads=2)


@pytest.fixture(scope="module")
def torch_predictor(random_checkpoint: Path) -> Predictor:
    return Predictor(random_checkpoint, device="cpu", backend="torch")


def _probs(preds) -> np.ndarray:
    return np.stack([p.probs for p in preds])


def test_onnx_matches_pytorch_eager(cells, onnx_predictor, torch_predictor):
    images = [im for _, im in cells]
    fast = _probs(onnx_predictor.predict(images))
    eager = _probs(torch_predictor.predict(images))
    assert fast.shape == eager.shape == (len(images), 7)
    np.testing.assert_allclose(fast, eager, rtol=0, atol=1e-4)
    # the pipeline's 1-thread sessions run the same graph
    one = _probs(onnx_predictor.predict(images, threads=1))
    np.testing.assert_allclose(one, eager, rtol=0, atol=1e-4)


def test_onnx_matches_independent_eager_forward(cells, onnx_predictor):
    """Against a plain model(x) forward under no_grad (no Predictor code on the reference side)."""
    images = [im for _, im in cells[:4]]
    x = torch.from_numpy(Normalisation.of(onnx_predictor.card)(onnx_predictor.prepare(images)))
    with torch.no_grad():
        eager = torch.softmax(onnx_predictor.model(x) / onnx_predictor.card.temperature, 1).numpy()
    np.testing.assert_allclose(_probs(onnx_predictor.predict(images)), eager, rtol=0, atol=1e-4)


def test_batch_equals_single_image(cells, onnx_predictor):
    images = [im for _, im in cells]
    batched = onnx_predictor.predict(images, with_cam=True)
    single = [onnx_predictor.predict([im], with_cam=True)[0] for im in images]
    np.testing.assert_allclose(_probs(batched), _probs(single), rtol=0, atol=1e-5)
    assert [p.code for p in batched] == [p.code for p in single]
    for b, s in zip(batched, single):
        np.testing.assert_allclose(b.cam, s.cam, rtol=0, atol=1e-4)


def test_pipeline_workers_keep_order_and_values(cells, onnx_predictor):
    """The parallel CPU pipeline (whole batches per worker, 1-thread runs) in input order."""
    items = [(name, None) for name, _ in cells]
    direct = {r.name: r.prediction for r in
              pipeline.run(items, onnx_predictor, with_cam=False, batch_size=len(items), workers=1)}
    results = list(pipeline.run(items, onnx_predictor, with_cam=True, batch_size=3, workers=2))
    assert [r.name for r in results] == [name for name, _ in cells]
    for r in results:
        assert r.prediction is not None, r.error
        np.testing.assert_allclose(r.prediction.probs, direct[r.name].probs, rtol=0, atol=1e-5)
        assert r.prediction.cam.shape == (7, 7) and r.heatmap().shape == r.image.shape[:2]


def test_the_workers_pipeline_keeps_no_decoded_image_and_gives_the_same_results(cells, onnx_predictor):
    """`keep_image=False` (the worker: its cells wait to be written 32 at a time, and 40 cells of
    6000 × 6000 px held 4.9 GB) drops each decoded image, and nothing else: the same
    predictions, heatmaps, squares and thumbnail views."""
    items = [(name, Path(name).read_bytes) for name, _ in cells]
    kept = list(pipeline.run(items, onnx_predictor, batch_size=3, upload_checked=True))
    dropped = list(pipeline.run(items, onnx_predictor, batch_size=3, upload_checked=True, keep_image=False))
    assert all(r.image is not None for r in kept) and all(r.image is None for r in dropped)
    for k, d in zip(kept, dropped, strict=True):
        assert (d.name, d.cam_box, d.quality.flags, d.prediction.code) == (k.name, k.cam_box, k.quality.flags,
                                                                             k.prediction.code)
        np.testing.assert_array_equal(d.view, k.view)
        np.testing.assert_allclose(d.prediction.cam, k.prediction.cam, rtol=0, atol=1e-6)


def test_pipeline_checks_a_batch_more_than_the_network_runs(cells, onnx_predictor, monkeypatch):
    """The pipeline's extra thread checks the next batch while the others are in the network:
    never more network runs at once than `workers` (the predictor's thread budget)."""
    running, most, lock = 0, 0, threading.Lock()
    predict = onnx_predictor.predict

    def counted(*args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return predict(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(onnx_predictor, "predict", counted)
    items = [(name, None) for name, _ in cells]
    results = list(pipeline.run(items, onnx_predictor, with_cam=True, batch_size=1, workers=2))
    assert [r.name for r in results] == [name for name, _ in cells]
    assert most == 2


def test_pipeline_sends_whole_batches_to_the_end(cells, onnx_predictor, monkeypatch):
    """Batches of `batch_size` to the last (sending the last cells one at a time cost OpenVINO
    bf16 more than it saved); every cell comes out once, in order."""
    sizes, lock = [], threading.Lock()
    predict = onnx_predictor.predict

    def recorded(images, *args, **kwargs):
        with lock:
            sizes.append(len(images))
        return predict(images, *args, **kwargs)

    monkeypatch.setattr(onnx_predictor, "predict", recorded)
    items = [(name, None) for name, _ in cells]
    results = list(pipeline.run(items, onnx_predictor, with_cam=True, batch_size=2, workers=2))
    assert [r.name for r in results] == [name for name, _ in cells]
    assert len(cells) % 2 == 0 and sizes == [2] * (len(cells) // 2)


def test_batches_split_the_tail_when_the_total_is_known():
    assert list(pipeline.batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert [len(b) for b in pipeline.batches(range(128), 32, 128, tail=8, tail_n=8)] == [32, 32, 32, 24, 8]
    assert [len(b) for b in pipeline.batches(range(10), 4, 10, tail=4)] == [4, 2, 1, 1, 1, 1]
    assert [len(b) for b in pipeline.batches(range(3), 4, 3, tail=8)] == [1, 1, 1]
    # fewer items than announced: all of them, none twice
    assert [x for b in pipeline.batches(range(5), 4, 9, tail=4) for x in b] == list(range(5))


def test_pipeline_runs_opencv_in_its_own_threads(cells, onnx_predictor):
    """While the pipeline's threads run, OpenCV does not split work across the cores as well
    (they are full already); the caller's setting is back when the run ends."""
    cv2.setNumThreads(2)
    items = [(name, None) for name, _ in cells]
    during = [cv2.getNumThreads() for _ in pipeline.run(items, onnx_predictor, with_cam=True, batch_size=3)]
    assert during == [1] * len(items)
    assert cv2.getNumThreads() == 2


def _minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    lo = a.min(axis=(-2, -1), keepdims=True)
    hi = a.max(axis=(-2, -1), keepdims=True)
    return (a - lo) / np.maximum(hi - lo, 1e-12)


def test_analytic_heatmap_matches_grad_cam_package(cells, onnx_predictor):
    images = [im for _, im in cells[:4]]
    preds = onnx_predictor.predict(images, with_cam=True)
    targets = [int(p.probs.argmax()) for p in preds]
    batch = torch.from_numpy(Normalisation.of(onnx_predictor.card)(onnx_predictor.prepare(images)))
    reference = reference_gradcam(onnx_predictor.model, batch, targets)
    # at the input's size, as grad-cam gives it (its own upsampling of the 7×7 map)
    analytic = scale_maps(np.stack([p.cam for p in preds]), 224)
    assert reference.shape == analytic.shape == (4, 224, 224)
    assert np.isfinite(analytic).all()
    diff = np.abs(_minmax(analytic) - _minmax(reference)).max()
    assert diff < 0.02, f"analytic Grad-CAM differs from grad-cam's by {diff:.4f}"
    # and for a class other than the top one (explicit targets)
    other = [(t + 1) % 7 for t in targets]
    analytic2 = scale_maps(np.stack([p.cam for p in onnx_predictor.predict(images, with_cam=True, targets=other)]),
                           224)
    reference2 = reference_gradcam(onnx_predictor.model, batch, other)
    flat = [i for i in range(4) if reference2[i].max() - reference2[i].min() < 1e-6]
    keep = [i for i in range(4) if i not in flat]  # an all-negative map is all zero in both
    if keep:
        d2 = np.abs(_minmax(analytic2[keep]) - _minmax(reference2[keep])).max()
        assert d2 < 0.02, f"analytic Grad-CAM (other targets) differs by {d2:.4f}"


def test_a_whole_square_cell_is_given_to_the_network_as_qcs_view(real_cells_dir, pbc_cells_dir):
    """Where the model is given the whole square cell, unrepaired, its input is QC's view (the
    reduction made once): the network gets exactly the pixels of reducing the framed, repaired
    cell again, for every real cell of both labs tried; bone-marrow crops framed whole take it."""
    size, crop = 224, framing.Crop(1.8, 0.4)
    thresholds = Thresholds.load()
    checks = pipeline.CellChecks(thresholds, True, crop, upload_checked=False, input_size=size)
    reused = {}
    for lab, folder in (("bone-marrow-7", real_cells_dir), ("pbc", pbc_cells_dir)):
        files = [f for d in sorted(folder.iterdir()) if d.is_dir() for f in sorted(d.glob("*.jpg"))[:6]]
        reused[lab] = 0
        for path in files:
            checked = checks((str(path), None))
            record, image = assess(str(path), decode_path(path), thresholds, True)
            expected = square_resize(framing.frame(image, framing.locate(image, crop)), size)
            assert np.array_equal(square_resize(checked.model_input, size), expected), path
            reused[lab] += checked.model_input is checked.view
        reused[lab] /= len(files)
    assert reused["bone-marrow-7"] > 0.25 and reused["pbc"] == 0  # 47 % of all Matek cells; PBC crops zoom in
