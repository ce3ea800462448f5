"""The CPU backends (app.ml.backends): each one available on this machine agrees with PyTorch
eager (fp32 ≤ 1e-4 in a probability; bf16 and int8 within their stated limits), `auto` falls
back to ONNX Runtime fp32 when a faster backend fails its check on the probe cells, backends
the CPU lacks the units for are left out (and their tests skipped) with the reason, and a CPU
predictor never imports torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.ml import backends, probe
from app.ml.backends import BF16_FLAGS, INT8_FLAGS, LIMITS, SIDE_BY_SIDE, Limits
from app.ml.cache import graph_paths
from app.ml.card import CARD_FILE, SHIPPED_MODEL, WEIGHTS_FILE, ModelCard, is_checkpoint
from app.ml.decode import decode_path
from app.ml.predictor import Predictor
from app.ml.preprocess import Normalisation

ROOT = Path(__file__).resolve().parents[2]
FLAGS = backends.cpu_flags()


def _openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


needs_openvino = pytest.mark.skipif(not _openvino(), reason="openvino is not installed")
needs_bf16 = pytest.mark.skipif(not any(f in FLAGS for f in BF16_FLAGS),
                                reason=f"this CPU has none of {', '.join(BF16_FLAGS)} (bf16 units): "
                                       f"openvino-bf16 would run in fp32 here")
needs_int8 = pytest.mark.skipif(not any(f in FLAGS for f in INT8_FLAGS),
                                reason=f"this CPU has none of {', '.join(INT8_FLAGS)} (int8 dot-product units)")
needs_shipped = pytest.mark.skipif(not is_checkpoint(SHIPPED_MODEL), reason=f"no shipped model at {SHIPPED_MODEL}")


@pytest.fixture(scope="module")
def cache(model_cache) -> Path:
    """The session's model cache: the random checkpoint exported once for every test."""
    return model_cache


@pytest.fixture(scope="module")
def cells(real_cells_dir: Path) -> list[np.ndarray]:
    """Two real cells of every class folder."""
    out = []
    for d in sorted(p for p in real_cells_dir.iterdir() if p.is_dir()):
        out += [decode_path(f).rgb for f in sorted(d.glob("*.jpg"))[:2]]
    return out[:16]


def _eager(predictor: Predictor, images: list[np.ndarray]) -> np.ndarray:
    import torch

    x = torch.from_numpy(Normalisation.of(predictor.card)(predictor.prepare(images)))
    with torch.no_grad():
        return torch.softmax(predictor.model(x) / predictor.card.temperature, 1).numpy()


def _probs(preds) -> np.ndarray:
    return np.stack([p.probs for p in preds])


# --- fp32 backends: the existing ≤ 1e-4 --------------------------------------------------------

@pytest.mark.parametrize("name", ["onnx", pytest.param("openvino-fp32", marks=needs_openvino)])
def test_fp32_backend_matches_pytorch_eager(name, random_checkpoint, cache, cells):
    predictor = Predictor(random_checkpoint, backend=name, cache_dir=cache, threads=2)
    assert predictor.backend == name and predictor.precision == "fp32"
    eager = _eager(predictor, cells)
    np.testing.assert_allclose(_probs(predictor.predict(cells)), eager, rtol=0, atol=1e-4)
    # the pipeline's single-thread calls (a batch on one stream / one session) give the same
    np.testing.assert_allclose(_probs(predictor.predict(cells, threads=1)), eager, rtol=0, atol=1e-4)
    assert predictor.selection["check"]["passed"], predictor.selection


@needs_openvino
def test_openvino_gradcam_comes_from_the_same_forward(random_checkpoint, cache, cells):
    """Grad-CAM maps on OpenVINO equal ONNX Runtime's (the feature map is an output)."""
    ov = Predictor(random_checkpoint, backend="openvino-fp32", cache_dir=cache, threads=2)
    ort = Predictor(random_checkpoint, backend="onnx", cache_dir=cache, threads=2)
    a = np.stack([p.cam for p in ov.predict(cells[:4], with_cam=True)])
    b = np.stack([p.cam for p in ort.predict(cells[:4], with_cam=True)])
    assert a.shape == (4, 7, 7)  # the network's resolution (ReXNet-150, 224 px)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-3)


@needs_openvino
def test_openvino_has_a_stream_per_side_by_side_run_over_the_whole_budget(random_checkpoint, cache, cells):
    """The CPU pipeline keeps SIDE_BY_SIDE network runs going, each asking for its share of the
    threads: OpenVINO compiles that many streams over the whole budget (OpenVINO caps the budget
    at the machine's cores), not one 1-thread stream per thread, which left all but two of a
    larger machine's cores idle. A batch on one stream gives what it gives split over all."""
    threads = 2 * SIDE_BY_SIDE
    ov = Predictor(random_checkpoint, backend="openvino-fp32", cache_dir=cache, threads=threads)
    assert ov.runner.streams == SIDE_BY_SIDE
    assert [c.model.get_property("NUM_STREAMS") for c in ov.runner.compiled.values()] == [SIDE_BY_SIDE] * 2
    one_stream = np.stack([p.probs for p in ov.predict(cells, threads=threads // SIDE_BY_SIDE)])
    split = np.stack([p.probs for p in ov.predict(cells)])
    np.testing.assert_allclose(one_stream, split, rtol=0, atol=1e-5)


# --- reduced precision on the shipped model and real cells -----------------------------------

@needs_shipped
@needs_openvino
@needs_bf16
def test_bf16_backend_agrees_with_pytorch_eager_within_its_limits(cache, cells):
    predictor = Predictor(SHIPPED_MODEL, backend="openvino-bf16", cache_dir=cache, threads=2)
    assert predictor.precision == "bf16"
    assert predictor.runner.executed_precision == "bf16"
    preds = predictor.predict(cells, with_cam=True)
    eager = _eager(predictor, cells)
    fast = _probs(preds)
    diff = float(np.abs(fast - eager).max())
    agreement = float((fast.argmax(1) == eager.argmax(1)).mean())
    print(f"bf16 vs eager on {len(cells)} real cells: top-1 agreement {agreement:.3f}, max |dp| {diff:.4f}")
    assert diff <= LIMITS["bf16"].max_prob_diff
    assert agreement >= LIMITS["bf16"].min_top1_agreement
    assert predictor.selection["check"]["passed"], predictor.selection["check"]
    assert all(p.cam is not None and p.cam.shape == (7, 7) for p in preds)


@pytest.fixture(scope="module")
def quantized(real_cells_dir, pbc_cells_dir, tmp_path_factory) -> tuple[Path, dict, dict]:
    """`marrow quantize` of the shipped model on both labs it was trained on, with a quick
    calibration (32 training cells) and measurement (48 validation cells): its cache, its JSON
    and the report it left beside the int8 graph (which `auto` reads)."""
    pytest.importorskip("nncf", reason="nncf is not installed (pip install '.[quantize]')")
    cache = tmp_path_factory.mktemp("int8-cache")
    out = cache / "quantize.json"
    assert main(["quantize", str(real_cells_dir), str(pbc_cells_dir), "--model", str(SHIPPED_MODEL),
                 "--cache", str(cache), "--calibration", "32", "--max-val", "48", "--json", str(out)]) == 0
    paths = graph_paths(SHIPPED_MODEL / WEIGHTS_FILE, cache)
    return cache, json.loads(out.read_text()), json.loads(paths.int8_report.read_text())


@needs_shipped
@needs_openvino
def test_quantize_reports_its_verdict_from_its_own_figures(quantized):
    cache, report, beside_graph = quantized
    paths = graph_paths(SHIPPED_MODEL / WEIGHTS_FILE, cache)
    assert paths.int8_xml.is_file() and report["graph"] == paths.int8_xml.name
    assert beside_graph == report
    assert report["calibration_cells"] == 32 and report["calibration_from"] == "training split"
    assert report["validation_cells"] == 48
    assert report["macro_f1_drop"] == pytest.approx(report["fp32_macro_f1"] - report["int8_macro_f1"], abs=2e-4)
    limits = report["limits"]
    assert report["ships"] == (report["macro_f1_drop"] <= limits["max_macro_f1_drop"]
                               and report["top1_agreement"] >= limits["min_top1_agreement"]
                               and report["probe_check"]["passed"])  # else every worker would refuse it
    assert report["verdict"].endswith("does not ship" if not report["ships"] else ": ships")
    assert ("load-time probe check failed" in report["verdict"]) == (not report["probe_check"]["passed"])
    assert report["fp32_macro_f1"] > 0.5  # the shipped model on its own validation cells
    # quantised from the PyTorch network: none of the ONNX import's shape arithmetic, which kept
    # OpenVINO from fusing the int8 layers (half the speed)
    import openvino as ov

    ops = {op.get_type_name() for op in ov.Core().read_model(str(paths.int8_xml)).get_ops()}
    assert "FakeQuantize" in ops and "ShapeOf" not in ops


@needs_shipped
@needs_openvino
@needs_int8
def test_int8_backend_agrees_with_pytorch_eager_within_its_limits(quantized, cells):
    int8_cache, _, _ = quantized
    paths = graph_paths(SHIPPED_MODEL / WEIGHTS_FILE, int8_cache)
    paths.int8_report.write_text(json.dumps({"ships": True, "verdict": "test"}))  # whatever 48 cells said
    predictor = Predictor(SHIPPED_MODEL, backend="openvino-int8", cache_dir=int8_cache, threads=2)
    fast = _probs(predictor.predict(cells))
    eager = _eager(predictor, cells)
    diff = float(np.abs(fast - eager).max())
    agreement = float((fast.argmax(1) == eager.argmax(1)).mean())
    print(f"int8 vs eager on {len(cells)} real cells: top-1 agreement {agreement:.3f}, max |dp| {diff:.4f}")
    assert agreement >= LIMITS["int8"].min_top1_agreement
    assert diff <= 2 * LIMITS["int8"].max_prob_diff  # real cells, a 32-cell calibration
    # a shipped int8 graph is auto's first choice on a CPU with int8 units
    auto = Predictor(SHIPPED_MODEL, cache_dir=int8_cache, threads=2)
    assert auto.selection["checks"][0]["backend"] == "openvino-int8"


# --- choosing and falling back -----------------------------------------------------------------

@needs_openvino
def test_auto_falls_back_to_onnx_fp32_when_the_check_fails(random_checkpoint, cache, monkeypatch, caplog):
    """A bf16 candidate (forced onto the list) whose check cannot pass: auto uses onnx and says why."""
    monkeypatch.setattr(backends, "cpu_flags", lambda: ["avx2", "avx512f", "avx512_bf16"])
    monkeypatch.setitem(backends.LIMITS, "bf16", Limits(1.01, 0.0, 0.0))  # unattainable
    predictor = Predictor(random_checkpoint, cache_dir=cache, threads=2)
    sel = predictor.selection
    assert predictor.backend == "onnx" and predictor.precision == "fp32"
    assert [c["backend"] for c in sel["checks"]] == ["openvino-bf16", "onnx"]
    assert sel["checks"][0]["passed"] is False and sel["checks"][1]["passed"] is True
    assert "openvino-bf16" in sel["fallback_reason"]
    assert "failed its check" in caplog.text


@needs_openvino
def test_auto_falls_back_when_a_backend_cannot_load(random_checkpoint, cache, monkeypatch):
    monkeypatch.setattr(backends, "cpu_flags", lambda: ["avx512_bf16"])

    def broken(*_a, **_k):
        raise RuntimeError("no such device")
    monkeypatch.setattr(backends, "OpenVinoBackend", broken)
    predictor = Predictor(random_checkpoint, cache_dir=cache, threads=2)
    assert predictor.backend == "onnx"
    assert "no such device" in predictor.selection["fallback_reason"]


def test_candidates_follow_the_cpu(random_checkpoint, cache):
    paths = backends.ensure_exported(random_checkpoint, cache)
    names, skipped = backends.candidates(["avx2"], paths)  # an AVX2-only CPU
    assert names == ["onnx"]
    if _openvino():
        reasons = {s["backend"]: s["reason"] for s in skipped}
        assert "avx512_bf16" in reasons["openvino-bf16"]
        assert "avx512_vnni" in reasons["openvino-int8"]
        names, skipped = backends.candidates(["avx2", "avx512_bf16", "avx512_vnni"], paths)
        assert names == ["openvino-bf16", "onnx"]  # no quantised graph in this cache
        assert "marrow quantize" in {s["backend"]: s["reason"] for s in skipped}["openvino-int8"]


def test_a_forced_backend_is_used_and_unknown_names_refused(random_checkpoint, cache):
    assert Predictor(random_checkpoint, backend="onnx", cache_dir=cache).selection["requested"] == "onnx"
    with pytest.raises(ValueError, match="unknown backend"):
        Predictor(random_checkpoint, backend="tensorrt", cache_dir=cache)


def test_probe_reference_is_pytorch_eager_on_the_shipped_probe_cells(random_checkpoint, cache):
    paths = backends.ensure_exported(random_checkpoint, cache)
    ref = np.load(paths.probe)
    predictor = Predictor(random_checkpoint, backend="torch")
    cells = probe.probe_cells()
    assert len(cells) == probe.N_PROBE and all(c.dtype == np.uint8 and c.ndim == 3 for c in cells)
    import torch

    with torch.no_grad():
        logits = predictor.model(torch.from_numpy(Normalisation.of(predictor.card)(predictor.prepare(cells)))).numpy()
    np.testing.assert_allclose(ref["logits"], logits, rtol=0, atol=1e-4)


def test_probe_cells_are_the_generators():
    """The shipped PNGs are what `python -m app.ml.probe --write` draws (within a grey level:
    OpenCV's anti-aliasing may differ between versions)."""
    for shipped, drawn in zip(probe.probe_cells(), probe.generate()):
        assert shipped.shape == drawn.shape
        assert np.abs(shipped.astype(int) - drawn).mean() < 1.0


# --- memory: a CPU worker does not import torch ------------------------------------------------

def test_cpu_predictor_and_the_worker_modules_do_not_import_torch(random_checkpoint, cache):
    backends.ensure_exported(random_checkpoint, cache)  # (in this process: torch is loaded here)
    code = (
        "import sys, json\n"
        "import app.processing.service, app.ml.pipeline, app.ml.gradcam\n"
        "from app.ml.predictor import Predictor\n"
        f"p = Predictor({str(random_checkpoint)!r}, cache_dir={str(cache)!r}, threads=1)\n"
        "import numpy as np\n"
        "p.predict([np.full((64, 64, 3), 120, np.uint8)], with_cam=True)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'timm': 'timm' in sys.modules, 'backend': p.backend}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info == {"torch": False, "timm": False, "backend": info["backend"]}


def test_export_in_a_child_process_when_the_cache_is_missing(random_checkpoint, tmp_path, monkeypatch):
    """ensure_exported without torch in the process exports through `python -m app.ml.export`."""
    monkeypatch.setattr(backends, "_torch_loaded", lambda: False)
    paths = backends.ensure_exported(random_checkpoint, tmp_path)
    assert paths.exported()
    meta = json.loads(paths.meta.read_text())
    assert meta["classifier_key"] == "head.fc.weight" and meta["input_size"] == 224
    w = backends.classifier_weight(random_checkpoint, paths)
    assert w.shape == (7, 1920) and w.dtype == np.float32
    assert paths == graph_paths(random_checkpoint / WEIGHTS_FILE, tmp_path)


def test_a_cache_it_cannot_write_or_weights_it_cannot_read_say_why_in_one_line(random_checkpoint, tmp_path,
                                                                               monkeypatch):
    """MARROW_MODEL_CACHE_DIR on a file (a mistyped or read-only path reads the same) is named at
    once, not after a minute of exporting; damaged weights fail the export child with its
    exception's line, not 2,000 characters of its traceback."""
    import shutil

    monkeypatch.setattr(backends, "_torch_loaded", lambda: False)
    blocked = tmp_path / "cache"
    blocked.write_text("not a folder")
    with pytest.raises(RuntimeError) as err:
        backends.ensure_exported(random_checkpoint, blocked)
    assert str(err.value) == (f"the model cache {blocked} cannot be written: File exists; point "
                              f"MARROW_MODEL_CACHE_DIR at a folder this user can write")
    damaged = tmp_path / "model"
    shutil.copytree(random_checkpoint, damaged)
    (damaged / WEIGHTS_FILE).write_bytes((damaged / WEIGHTS_FILE).read_bytes()[:1000])
    with pytest.raises(RuntimeError) as err:
        backends.ensure_exported(damaged, tmp_path / "cache-2")
    assert str(err.value).startswith(f"exporting {damaged} failed (exit 1): ")
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value), str(err.value)


def test_a_damaged_cached_graph_is_named_and_export_force_writes_it_again(random_checkpoint, cache, tmp_path,
                                                                          capsys):
    """A cached graph cut short (a disk that filled, a bad copy): no backend loads it and the
    error says so with the remedy; `marrow export` leaves a complete-looking cache alone, and
    `--force` writes the graph again (the same description and probe reference)."""
    import shutil

    damaged = tmp_path / "cache"
    shutil.copytree(backends.ensure_exported(random_checkpoint, cache).onnx.parent, damaged)
    paths = graph_paths(random_checkpoint / WEIGHTS_FILE, damaged)
    meta, probe_logits = json.loads(paths.meta.read_text()), np.load(paths.probe)["logits"]
    paths.onnx.write_bytes(paths.onnx.read_bytes()[:100_000])
    with pytest.raises(RuntimeError, match=r"(?s)no CPU backend could load the cached graph .*"
                                           r"`marrow export --force` writes it again\): .*onnx: "):
        Predictor(random_checkpoint, cache_dir=damaged, threads=2)
    assert main(["export", "--model", str(random_checkpoint), "--cache", str(damaged)]) == 0
    assert capsys.readouterr().out.strip() == str(paths.onnx)
    assert paths.onnx.stat().st_size == 100_000  # left alone: its files are all there
    assert main(["export", "--model", str(random_checkpoint), "--cache", str(damaged), "--force"]) == 0
    assert capsys.readouterr().out.strip() == str(paths.onnx)
    assert json.loads(paths.meta.read_text()) == meta
    np.testing.assert_allclose(np.load(paths.probe)["logits"], probe_logits, rtol=0, atol=1e-5)
    assert Predictor(random_checkpoint, cache_dir=damaged, threads=2).selection["check"]["passed"]


@pytest.mark.parametrize("command", ["export", "bench"])
def test_a_folder_without_a_model_is_named_by_export_and_bench(command, tmp_path, capsys):
    assert main([command, "--model", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"marrow {command}: error: {tmp_path}: not a MarrowDiff checkpoint "
                                       f"(needs model.safetensors and model_card.json)\n")


@needs_openvino
def test_openvino_compiles_into_a_shared_cache_one_process_at_a_time(random_checkpoint, tmp_path):
    """Workers starting together share the model cache: while another process holds the cache's
    lock, a backend neither compiles into it nor writes a blob there; once released it compiles,
    and the next start loads that blob."""
    import threading

    from filelock import FileLock

    cache = tmp_path / "model-cache"
    backends.ensure_exported(random_checkpoint, cache)
    paths = graph_paths(random_checkpoint / WEIGHTS_FILE, cache)
    norm = Normalisation.of(ModelCard.load(random_checkpoint / CARD_FILE))
    blobs = lambda: sorted((cache / "openvino").glob("*.blob"))  # noqa: E731
    made: list = []
    held = FileLock(cache / "openvino.lock")  # a separate FileLock object: a separate flock
    with held:
        t = threading.Thread(target=lambda: made.append(backends.OpenVinoBackend(paths.onnx, "fp32", 2, norm, cache)))
        t.start()
        t.join(timeout=6)  # without the lock a compile of this graph ends within about 3 s
        assert t.is_alive() and not made and not blobs()
    t.join(timeout=120)
    assert made and len(blobs()) == 2  # the graph for batches of CPU_BATCH and for single cells
    again = backends.OpenVinoBackend(paths.onnx, "fp32", 2, norm, cache)
    assert len(blobs()) == 2 and again.streams == made[0].streams


@needs_openvino
def test_openvino_gives_the_same_whatever_the_batch_is_split_into(random_checkpoint, cache, cells):
    """OpenVINO is compiled for fixed batches of CPU_BATCH and of 1 and takes the uint8 squares,
    normalising them in its graph: batches of any size, on one stream or over all, give what
    ONNX Runtime fp32 gives, cell for cell, probabilities and Grad-CAM maps alike."""
    ov = Predictor(random_checkpoint, backend="openvino-fp32", cache_dir=cache, threads=2)
    ort = Predictor(random_checkpoint, backend="onnx", cache_dir=cache, threads=2)
    assert sorted(ov.runner.compiled) == [1, backends.CPU_BATCH]
    for size, c in ov.runner.compiled.items():
        port = c.model.inputs[0]
        assert port.get_element_type().get_type_name() == "u8" and list(port.get_shape()) == [size, 224, 224, 3]
    for n in (1, 3, backends.CPU_BATCH, 5, 2 * backends.CPU_BATCH + 1):
        want = ort.predict(cells[:n], with_cam=True)
        for threads in (None, 1):
            got = ov.predict(cells[:n], with_cam=True, threads=threads)
            np.testing.assert_allclose(_probs(got), _probs(want), rtol=0, atol=1e-4, err_msg=f"{n} cells")
            np.testing.assert_allclose(np.stack([p.cam for p in got]), np.stack([p.cam for p in want]),
                                       rtol=0, atol=1e-3, err_msg=f"{n} cells")
