"""Batched prediction with a loaded checkpoint, on one of several inference backends.

`Predictor` runs a batch through the network once and returns, per image, the full probability
vector, the top-3 and (on request) the Grad-CAM heatmap, which for a global-average-pool +
linear head comes from the same forward pass (see `gradcam.py`).

A backend turns a normalised N×3×S×S float32 batch into (logits, last-stage features); each is
checked against the PyTorch network when it is made:
- "onnx": ONNX Runtime on a channel-padded export of the network (measured faster on CPU than
  PyTorch eager and than the unpadded graph, see the README's benchmark); the graph is exported
  once per weights file into a cache directory, and one session is kept per thread count.
- "torch": PyTorch eager, optionally with CUDA mixed precision.
"auto" picks "onnx" on CPU and "torch" on CUDA. A new backend (OpenVINO, TensorRT, ...) is a
class with `name` and `forward(batch, threads)` registered in `BACKENDS`.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from app.ml import channel_pad, preprocess
from app.ml.card import SHIPPED_MODEL, WEIGHTS_FILE, CellClass
from app.ml.checkpoint import load_checkpoint, resolve_device

ORT_ALLOW_SPINNING = "0"  # see OnnxBackend.session
ONNX_LAYOUT = f"pad{channel_pad.CHANNEL_MULTIPLE}"  # in the cached graph's name: a new layout re-exports
VERIFY_TOLERANCE = 1e-4  # relative to the outputs' scale: float32 summation order alone differs by ~1e-6


@dataclass
class Prediction:
    probs: np.ndarray  # calibrated probabilities, in card class order
    top3: list[tuple[str, str, float]]  # (code, name, probability)
    cam: np.ndarray | None = None  # input_size × input_size heatmap in [0, 1]

    @property
    def code(self) -> str:
        return self.top3[0][0]

    @property
    def probability(self) -> float:
        return self.top3[0][2]


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class LogitsAndFeatures(torch.nn.Module):
    """Exposes the last convolutional stage beside the logits (one forward for both)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        feats = self.model.forward_features(x)
        return self.model.forward_head(feats), feats


def relative_error(want: tuple[torch.Tensor, ...], got: tuple[torch.Tensor, ...]) -> float:
    """Largest difference between two sets of outputs, relative to the reference's scale."""
    return max(float((a - b).abs().max() / (1 + a.abs().max())) for a, b in zip(want, got))


class Backend(Protocol):
    name: str

    def forward(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Normalised N×3×S×S float32 -> (logits N×C, last-stage features N×K×h×w)."""


class TorchBackend:
    name = "torch"

    def __init__(self, network: LogitsAndFeatures, device: str, amp: bool = False):
        self.network, self.device, self.amp = network, device, amp and device == "cuda"

    def forward(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode(), torch.autocast("cuda", enabled=self.amp):
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            logits, feats = self.network(x)
        return logits.float().cpu().numpy(), feats.float().cpu().numpy()


class OnnxBackend:
    """ONNX Runtime (CPU) on the channel-padded export, cached per weights file and layout."""

    name = "onnx"

    def __init__(self, network: LogitsAndFeatures, weights: Path, input_size: int, cache_dir: Path,
                 threads: int):
        self.network, self.input_size, self.threads = network, input_size, threads
        self._sessions: dict[int, object] = {}  # sessions by intra-op thread count
        self._lock = threading.Lock()
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
        self.path = Path(cache_dir) / f"{digest}-{ONNX_LAYOUT}.onnx"
        if not self.path.is_file():
            self._export()
        self._default = self.session(threads)

    def _export(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        size = self.input_size
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        torch.onnx.export(self.exported_network(), torch.zeros(1, 3, size, size), str(tmp),
                          input_names=["input"], output_names=["logits", "features"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}, "features": {0: "n"}},
                          opset_version=17, dynamo=False)
        os.replace(tmp, self.path)

    def exported_network(self) -> torch.nn.Module:
        """What goes to ONNX: ReXNet with its channels padded (same outputs, faster on CPU,
        see `channel_pad`), checked against the network itself on a probe input."""
        try:
            padded = channel_pad.pad_channels(self.network.model)
        except TypeError:  # not a ReXNet: exported as it is
            return self.network
        wrapped = LogitsAndFeatures(padded).eval()
        size = self.input_size
        probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            err = relative_error(self.network(probe), wrapped(probe))
        if err > VERIFY_TOLERANCE:
            raise RuntimeError(f"the channel-padded network differs by {err:.2g} (relative)")
        return wrapped

    def session(self, threads: int):
        """The ONNX Runtime session with `threads` intra-op threads (made once, thread-safe).

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
                self._sessions[threads] = ort.InferenceSession(
                    str(self.path), opts, providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    def forward(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        session = self._default if threads in (None, self.threads) else self.session(threads)
        logits, feats = session.run(None, {"input": batch})
        return logits, feats


BACKENDS = ("onnx", "torch")


class Predictor:
    """Batched prediction with a loaded checkpoint.

    backend "auto" ("onnx" on CPU, "torch" on CUDA), "onnx" or "torch"; the ONNX graph is
    exported once per weights file into `cache_dir` (default `<model_dir>/.cache`) and reused.
    """

    def __init__(self, model_dir: str | Path = SHIPPED_MODEL, device: str = "cpu",
                 backend: str = "auto", cache_dir: str | Path | None = None,
                 amp: bool = False, threads: int | None = None):
        self.device = resolve_device(device)
        self.model_dir = Path(model_dir)
        self.model, self.card = load_checkpoint(self.model_dir, self.device)
        self.backend = ("onnx" if self.device == "cpu" else "torch") if backend == "auto" else backend
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected auto or one of {', '.join(BACKENDS)}")
        self.amp = amp and self.device == "cuda"
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.fc_weight = self.model.get_classifier().weight.detach().float().cpu().numpy()
        network = LogitsAndFeatures(self.model).eval()
        self.runner: Backend = self._make_backend(network, cache_dir)

    def _make_backend(self, network: LogitsAndFeatures, cache_dir) -> Backend:
        if self.backend == "onnx":
            try:
                return OnnxBackend(network, self.model_dir / WEIGHTS_FILE, self.card.input_size,
                                   Path(cache_dir) if cache_dir else self.model_dir / ".cache", self.threads)
            except RuntimeError as exc:
                raise RuntimeError(f"{self.model_dir}: {exc}") from exc
        return TorchBackend(network, self.device, self.amp)

    @property
    def classes(self) -> list[CellClass]:
        return self.card.cell_classes

    @property
    def version(self) -> str:
        return self.card.version

    def forward(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Normalised N×3×S×S float32 -> (logits N×C, last-stage features N×K×h×w).

        `threads`: intra-op threads for this call on CPU (default: the predictor's own);
        the pipeline runs several 1-thread calls side by side.
        """
        return self.runner.forward(batch, threads)

    def prepare(self, images: list[np.ndarray]) -> np.ndarray:
        return preprocess.to_batch(images, self.card.input_size, self.card.mean, self.card.std)

    def predict(self, images: list[np.ndarray], with_cam: bool = False,
                targets: list[int] | None = None, threads: int | None = None) -> list[Prediction]:
        """Predictions for RGB uint8 images (any size); heatmaps for the top class or `targets`."""
        from app.ml.gradcam import cam_from_features

        if not images:
            return []
        logits, feats = self.forward(self.prepare(images), threads)
        probs = softmax(logits / self.card.temperature)
        cams = None
        if with_cam:
            tgt = np.asarray(targets) if targets is not None else probs.argmax(1)
            cams = cam_from_features(feats, self.fc_weight, tgt, self.card.input_size)
        classes = self.classes
        out = []
        for i, p in enumerate(probs):
            order = np.argsort(-p)[:3]
            top3 = [(classes[j].code, classes[j].name, float(p[j])) for j in order]
            out.append(Prediction(p, top3, None if cams is None else cams[i]))
        return out

