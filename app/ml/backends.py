"""Inference backends, chosen by the CPU and verified against fp32 when they are loaded.

A backend turns the model's input squares (N×S×S×3 uint8 RGB, `preprocess.squares`) into
(logits N×C, last-stage features N×K×h×w): one forward pass gives both the probabilities and the
Grad-CAM map (see `gradcam`). Each normalises the squares with the checkpoint's mean and std
(`preprocess.Normalisation`) its own way: ONNX Runtime and PyTorch in numpy, OpenVINO inside its
compiled graph.

| name | runtime | precision | needs |
|---|---|---|---|
| `onnx` | ONNX Runtime, channel-padded graph | fp32 | any x86-64/ARM CPU: the baseline and the fallback |
| `openvino-fp32` | OpenVINO on the same graph | fp32 | `openvino` installed |
| `openvino-bf16` | OpenVINO, `INFERENCE_PRECISION_HINT=bf16` | bf16 (fp32 accumulation) | a CPU with AVX512_BF16 or AMX-BF16 |
| `openvino-int8` | OpenVINO on the NNCF-quantised graph (`marrow quantize`) | int8 | AVX512-VNNI, AVX-VNNI or AMX-INT8, and a quantised graph whose report says it ships (`marrow quantize`: validation split and probe check) |
| `torch` | PyTorch eager (CUDA: optional bf16 autocast) | fp32 / bf16 | torch (imported only for this one) |

`auto` (`select`) tries, on CPU, int8 (when shipped), then bf16, where the CPU has the units for
them, then `onnx`; each candidate is verified on the probe cells (`probe`) against PyTorch
eager's fp32 outputs stored at export time: top-1 agreement, the largest difference of a
calibrated probability and of a (min-max scaled) Grad-CAM map must be within `LIMITS`, else the
next candidate is tried and the reason logged. On CUDA `auto` is `torch`. A named backend is
used as asked (its check is still run and reported; a failed one is a warning).

The CPU backends read the exported graph from the model cache (`cache`, `export`); exporting
needs PyTorch and runs in a child process when the cache lacks it, so a worker on these
backends never imports torch.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from filelock import FileLock
from scipy.special import softmax

from app.ml import preprocess, probe
from app.ml.cache import GraphPaths, graph_paths
from app.ml.card import WEIGHTS_FILE

if TYPE_CHECKING:
    import openvino

log = logging.getLogger(__name__)

ORT_ALLOW_SPINNING = "0"  # see OnnxBackend.session
# Network runs the CPU pipeline keeps going at once, each with threads // SIDE_BY_SIDE threads: on
# 2 cores two 1-thread runs beat one 2-thread run (docs/bench-ml.md); OpenVINO has one stream each.
SIDE_BY_SIDE = 2
# Cells per network call on CPU (the pipeline's default batch). OpenVINO is compiled for this
# batch and for 1 (see OpenVinoBackend).
CPU_BATCH = 4
BACKENDS = ("onnx", "openvino-fp32", "openvino-bf16", "openvino-int8", "torch")
PRECISION = {"onnx": "fp32", "openvino-fp32": "fp32", "openvino-bf16": "bf16", "openvino-int8": "int8",
             "torch": "fp32"}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class Limits:
    """What a backend must keep on the probe cells, against PyTorch eager fp32."""

    min_top1_agreement: float  # share of probe cells with the same top class
    max_prob_diff: float  # largest |p - p_fp32| of any calibrated class probability
    max_cam_diff: float  # largest difference of the top-class Grad-CAM maps, each min-max scaled


# fp32: summation order alone (measured ~1e-6). bf16: 8-bit mantissa inputs with fp32
# accumulation; measured here (AMD EPYC, AVX512_BF16) 0.03 in a logit, < 0.01 in a probability;
# one probe cell in 16 may change its top class where its top two are nearly tied. int8: the
# shipping rule is on the validation split (`quantize`); at load it must stay this close.
LIMITS = {"fp32": Limits(1.0, 1e-3, 1e-3), "bf16": Limits(15 / 16, 0.05, 0.10),
          "int8": Limits(14 / 16, 0.10, 0.20)}


def cpu_flags() -> list[str]:
    """The instruction-set flags among CPU_FLAGS this CPU reports (Linux /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in CPU_FLAGS if f in have]
    return []


class Backend(Protocol):
    name: str
    precision: str

    def forward(self, squares: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """N×S×S×3 uint8 input squares -> (logits N×C, last-stage features N×K×h×w)."""


class OnnxBackend:
    """ONNX Runtime (CPU, fp32) on the exported graph; one session per intra-op thread count."""

    name = "onnx"
    precision = "fp32"

    def __init__(self, path: Path, threads: int, normalisation: preprocess.Normalisation):
        self.path, self.threads, self.normalisation = Path(path), threads, normalisation
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()
        self.session(1)  # fail here, not at the first batch, if the graph cannot be loaded

    def session(self, threads: int):
        """The session with `threads` intra-op threads (made once, thread-safe).

        Spinning pool threads are turned off: on a small or shared CPU they burn the cores the
        other threads (decoding, a second session, other processes) need; measured faster here.
        """
        import onnxruntime as ort

        with self._lock:
            if threads not in self._sessions:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.add_session_config_entry("session.intra_op.allow_spinning", ORT_ALLOW_SPINNING)
                self._sessions[threads] = ort.InferenceSession(str(self.path), opts,
                                                               providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    def forward(self, squares: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        # sessions are made on first use: the pipeline's side-by-side calls use only 1-thread
        # ones, and each session holds its own buffers (~250 MB at batch 4)
        logits, feats = self.session(threads or self.threads).run(None, {"input": self.normalisation(squares)})
        return logits, feats


def _openvino_cache_lock(cache_dir: Path | None) -> AbstractContextManager:
    """One process at a time compiles into (or loads from) `<cache>/openvino`. OpenVINO writes a
    compiled model's blob there without a lock between processes; two workers starting together
    on one cache could fail on the same blob ("cannot set permissions: No such file or
    directory"), and one fell back to ONNX Runtime fp32 in a `bench-load` start. Held, the second
    loads the first's blob. The kernel drops the lock of a process that dies."""
    if cache_dir is None:
        return nullcontext()
    return FileLock(Path(cache_dir) / "openvino.lock")  # creates the folder if need be


@dataclass
class _Compiled:
    """One fixed batch size of an OpenVINO backend: its compiled model and a pool of requests."""

    model: "openvino.CompiledModel"
    requests: queue.Queue
    outputs: list

    def outputs_of(self, request) -> tuple[np.ndarray, np.ndarray]:
        logits, feats = (np.array(request.get_tensor(o).data, copy=True) for o in self.outputs)
        return logits, feats


class OpenVinoBackend:
    """OpenVINO (CPU) on the exported graph (or the int8 model): SIDE_BY_SIDE streams sharing
    the thread budget, one per network run the pipeline keeps going at once, so each run has
    `threads // SIDE_BY_SIDE` threads as with ONNX Runtime (1 each on 2 cores). One stream per
    thread would leave a larger machine's cores idle: the pipeline's two runs would get one
    thread each.

    Compiled twice, for fixed batches of CPU_BATCH and of 1 cell, each taking the uint8 squares
    and normalising them inside the graph (the numpy normalising the other backends do costs
    0.12 ms a cell outside the network). With the batch left open, every call paid for
    resolving its shapes: on an AMX Xeon a cell at batch 1 cost a third more than at batch 4
    and the first call after the batch size changed 2-3 ms more. Fixed, one thread, bf16: 8.6
    ms a cell at batch 1, 8.3 at 4 (docs/performance-history.md, 2026-12-05, twenty-fourth
    session). The two compiled models together take no more memory than the open one did (a
    loaded predictor 425 against 428 MB).

    `forward(squares)` runs batches of CPU_BATCH and single cells; over the streams at once (so
    the pipeline's one-batch-at-a-time path uses every core, a batch smaller than one per stream
    cell by cell), or, with `threads` below the budget (what a caller running its own batches side
    by side asks for), one after another on one stream. Compiled models are cached under
    `<cache>/openvino` (a second start skips compiling).
    """

    def __init__(self, model_path: Path, precision: str, threads: int,
                 normalisation: preprocess.Normalisation, cache_dir: Path | None = None):
        import openvino as ov

        self.precision, self.threads = precision, threads
        self.streams = min(SIDE_BY_SIDE, threads)
        self.name = f"openvino-{precision}"
        core = ov.Core()
        if cache_dir is not None:
            core.set_property({"CACHE_DIR": str(Path(cache_dir) / "openvino")})
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "NUM_STREAMS": self.streams, "INFERENCE_NUM_THREADS": threads,
                  "ENABLE_CPU_PINNING": False}  # several workers share the cores: never pin
        self.compiled: dict[int, _Compiled] = {}
        graph = core.read_model(str(model_path))  # read once, a copy reshaped for each batch size
        with _openvino_cache_lock(cache_dir):
            for size in (CPU_BATCH, 1):
                model = core.compile_model(_fixed_batch_graph(graph.clone(), size, normalisation), "CPU", config)
                requests: queue.Queue = queue.Queue()
                for _ in range(2 * self.streams):
                    requests.put(model.create_infer_request())
                self.compiled[size] = _Compiled(model, requests, [model.output("logits"), model.output("features")])
        hint = self.compiled[1].model.get_property("INFERENCE_PRECISION_HINT")
        self.executed_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        if precision == "bf16" and self.executed_precision != "bf16":  # the CPU lacks bf16: says so
            self.precision = "fp32"

    def forward(self, squares: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        squares = np.ascontiguousarray(squares, dtype=np.uint8)
        at_once = 1 if threads is not None and threads < self.threads else self.streams
        size = CPU_BATCH if len(squares) >= at_once * CPU_BATCH else 1
        starts = list(range(0, len(squares) - len(squares) % size, size))
        runs = [(i, size) for i in starts] + [(i, 1) for i in range(len(starts) * size, len(squares))]
        outs = []
        for k in range(0, len(runs), at_once):
            wave = runs[k:k + at_once]
            taken = [(self.compiled[n], self.compiled[n].requests.get()) for _, n in wave]
            try:
                for (i, n), (_, request) in zip(wave, taken):
                    request.start_async({0: squares[i:i + n]})
                for compiled, request in taken:
                    request.wait()
                    outs.append(compiled.outputs_of(request))
            finally:
                for compiled, request in taken:
                    compiled.requests.put(request)
        if len(outs) == 1:
            return outs[0]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def _fixed_batch_graph(model: "openvino.Model", size: int, normalisation: preprocess.Normalisation):
    """`model` (changed in place) for batches of `size`, taking N×S×S×3 uint8 squares: the
    conversion to float and the normalisation are its first operations."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    shape = model.inputs[0].get_partial_shape()
    shape[0] = size
    model.reshape({model.inputs[0]: shape})
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32) \
        .mean([255 * m for m in normalisation.mean]).scale([255 * d for d in normalisation.std])
    return ppp.build()


class TorchBackend:
    """PyTorch eager, optionally with CUDA bfloat16 autocast (imports torch)."""

    name = "torch"

    def __init__(self, network, device: str, normalisation: preprocess.Normalisation, amp: bool = False):
        self.network, self.device, self.amp = network, device, amp and device == "cuda"
        self.normalisation = normalisation
        self.precision = "bf16" if self.amp else "fp32"

    def forward(self, squares: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode(), torch.autocast("cuda", enabled=self.amp):
            x = torch.from_numpy(self.normalisation(squares)).to(self.device, non_blocking=True)
            logits, feats = self.network(x)
        return logits.float().cpu().numpy(), feats.float().cpu().numpy()


# --- the exported graph -------------------------------------------------------------------------

def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _torch_loaded() -> bool:
    return "torch" in sys.modules


def ensure_exported(model_dir: Path, cache_dir: Path) -> GraphPaths:
    """The cache's files for this checkpoint, exported first when missing: in this process if
    torch is already loaded, else in a child process (torch never enters this one)."""
    paths = graph_paths(Path(model_dir) / WEIGHTS_FILE, cache_dir)
    if paths.exported():
        return paths
    try:  # before a minute of exporting
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeError(f"the model cache {cache_dir} cannot be written: {exc.strerror or exc}; "
                           f"point MARROW_MODEL_CACHE_DIR at a folder this user can write") from exc
    if _torch_loaded():
        from app.ml.export import export

        export(model_dir, cache_dir)
        return paths
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_repo_root()), env.get("PYTHONPATH")) if p)
    log.info("exporting %s into %s (a child process; needs PyTorch)", model_dir, cache_dir)
    done = subprocess.run([sys.executable, "-m", "app.ml.export", str(model_dir), str(cache_dir)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0 or not paths.exported():
        log.error("exporting %s failed:\n%s", model_dir, done.stderr[-4000:])
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]  # the exception, after its traceback
        raise RuntimeError(f"exporting {model_dir} failed (exit {done.returncode}): {reason}")
    return paths


def classifier_weight(model_dir: Path, paths: GraphPaths) -> np.ndarray:
    """The classifier's C×K weight, read from model.safetensors with numpy (no torch)."""
    from safetensors import safe_open

    key = json.loads(paths.meta.read_text())["classifier_key"]
    with safe_open(str(Path(model_dir) / WEIGHTS_FILE), framework="numpy") as f:
        return f.get_tensor(key).astype(np.float32)


# --- verification -------------------------------------------------------------------------------

def _scaled(cams: np.ndarray) -> np.ndarray:
    lo = cams.min(axis=(1, 2), keepdims=True)
    hi = cams.max(axis=(1, 2), keepdims=True)
    return (cams - lo) / np.maximum(hi - lo, 1e-12)


def compare(reference: dict[str, np.ndarray], logits: np.ndarray, features: np.ndarray,
            fc_weight: np.ndarray, temperature: float, limits: Limits) -> dict:
    """The check's figures for one backend's outputs on the probe cells, and whether they pass."""
    ref_logits = reference["logits"]
    top_ref = ref_logits.argmax(1)
    agreement = float((logits.argmax(1) == top_ref).mean())
    probs, ref_probs = (softmax(z / temperature, axis=1) for z in (logits, ref_logits))
    prob_diff = float(np.abs(probs - ref_probs).max())
    cams = np.maximum(np.einsum("nk,nkhw->nhw", fc_weight[top_ref], features.astype(np.float32)), 0)
    cam_diff = float(np.abs(_scaled(cams) - _scaled(reference["cams"])).max())
    passed = (agreement >= limits.min_top1_agreement and prob_diff <= limits.max_prob_diff
              and cam_diff <= limits.max_cam_diff)
    return {"top1_agreement": round(agreement, 4), "max_prob_diff": float(f"{prob_diff:.3g}"),
            "max_logit_diff": float(f"{np.abs(logits - ref_logits).max():.3g}"),
            "max_cam_diff": float(f"{cam_diff:.3g}"), "cells": int(len(ref_logits)),
            "limits": asdict(limits), "passed": bool(passed)}


def verify(backend: Backend, paths: GraphPaths, card, fc_weight: np.ndarray,
           limits: Limits | None = None) -> dict:
    """Run the probe cells through `backend` and compare with the stored fp32 reference."""
    reference = dict(np.load(paths.probe))
    squares = preprocess.squares(probe.probe_cells(), card.input_size)
    logits, feats = backend.forward(squares, threads=1)  # one stream/session: what the pipeline's workers use
    return compare(reference, logits, feats, fc_weight, card.temperature,
                   limits or LIMITS[backend.precision])


# --- choosing -----------------------------------------------------------------------------------

def int8_ships(paths: GraphPaths) -> tuple[bool, str]:
    """Whether a quantised graph exists and its validation report lets it ship."""
    if not paths.int8_xml.is_file() or not paths.int8_report.is_file():
        return False, "no quantised graph in the cache (marrow quantize)"
    report = json.loads(paths.int8_report.read_text())
    if not report.get("ships"):
        return False, f"the quantised graph does not ship: {report.get('verdict', '')}"
    return True, ""


def _openvino_available() -> tuple[bool, str]:
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        return False, f"openvino is not installed ({exc})"
    return True, ""


def candidates(flags: list[str], paths: GraphPaths) -> tuple[list[str], list[dict]]:
    """The CPU backends `auto` tries, fastest first, and why the others were left out."""
    out, skipped = [], []
    ov_ok, ov_why = _openvino_available()
    if not ov_ok:
        skipped += [{"backend": b, "reason": ov_why} for b in ("openvino-int8", "openvino-bf16")]
    else:
        ok, why = int8_ships(paths)
        if not any(f in flags for f in INT8_FLAGS):
            skipped.append({"backend": "openvino-int8", "reason": f"the CPU has none of {', '.join(INT8_FLAGS)}"})
        elif not ok:
            skipped.append({"backend": "openvino-int8", "reason": why})
        else:
            out.append("openvino-int8")
        if any(f in flags for f in BF16_FLAGS):
            out.append("openvino-bf16")
        else:
            skipped.append({"backend": "openvino-bf16", "reason": f"the CPU has none of {', '.join(BF16_FLAGS)}"})
    out.append("onnx")
    return out, skipped


def make_cpu_backend(name: str, paths: GraphPaths, threads: int, cache_dir: Path,
                     normalisation: preprocess.Normalisation) -> Backend:
    if name == "onnx":
        return OnnxBackend(paths.onnx, threads, normalisation)
    if name == "openvino-int8":
        if not paths.int8_xml.is_file():
            raise RuntimeError(f"no quantised graph at {paths.int8_xml}: run `marrow quantize` first")
        return OpenVinoBackend(paths.int8_xml, "int8", threads, normalisation, cache_dir)
    if name in ("openvino-fp32", "openvino-bf16"):
        return OpenVinoBackend(paths.onnx, PRECISION[name], threads, normalisation, cache_dir)
    raise ValueError(f"unknown CPU backend {name!r}")


def select(requested: str, paths: GraphPaths, card, fc_weight: np.ndarray, threads: int,
           cache_dir: Path, flags: list[str] | None = None,
           limits: dict[str, Limits] | None = None) -> tuple[Backend, dict]:
    """The CPU backend to use and the record of how it was chosen (logged, shown by the worker's
    health report and the bench JSON)."""
    flags = cpu_flags() if flags is None else flags
    limits = limits or LIMITS
    record: dict = {"requested": requested, "cpu_flags": flags, "checks": [], "skipped": []}
    if requested != "auto":
        names = [requested]
    else:
        names, record["skipped"] = candidates(flags, paths)
    chosen = None
    for name in names:
        try:
            backend = make_cpu_backend(name, paths, threads, cache_dir, preprocess.Normalisation.of(card))
            check = verify(backend, paths, card, fc_weight, limits[backend.precision])
        except Exception as exc:  # noqa: BLE001 - a backend that cannot load is skipped, saying why
            if requested != "auto":
                raise
            record["checks"].append({"backend": name, "passed": False, "error": f"{type(exc).__name__}: {exc}"})
            log.warning("backend %s could not be loaded (%s); trying the next", name, exc)
            continue
        record["checks"].append({"backend": name, **check})
        if check["passed"] or requested != "auto" or name == "onnx":
            chosen = backend
            break
        log.warning("backend %s failed its check on the probe cells (top-1 agreement %.3f, max probability "
                    "difference %.3g, max Grad-CAM difference %.3g; limits %s); falling back",
                    name, check["top1_agreement"], check["max_prob_diff"], check["max_cam_diff"],
                    check["limits"])
        del backend
    if chosen is None:
        raise RuntimeError(f"no CPU backend could load the cached graph {paths.onnx} (if it is damaged, "
                           f"`marrow export --force` writes it again): " + "; ".join(
                               f"{c['backend']}: {c.get('error', 'check failed')}" for c in record["checks"]))
    last = record["checks"][-1]
    if not last["passed"]:
        log.warning("backend %s is used but failed its check on the probe cells: %s", chosen.name, last)
    failed = record["checks"][:-1]
    record.update(backend=chosen.name, precision=chosen.precision, check=last,
                  fallback_reason="; ".join(f"{c['backend']}: " + (c.get("error") or "failed its check")
                                            for c in failed) or None)
    return chosen, record
