"""ReXNet-150 checkpoints (safetensors + JSON model card) and batched prediction.

A checkpoint is a directory holding `model.safetensors` and `model_card.json`. Loading never
touches a network. `Predictor` runs a batch through the network once and returns, per image,
the full probability vector, the top-3 and (on request) the Grad-CAM heatmap, which for a
global-average-pool + linear head comes from the same forward pass (see `gradcam.py`).
On CPU the forward runs in ONNX Runtime on a channel-padded export of the network (measured
faster than PyTorch eager, and than the unpadded graph, see the README's benchmark), on CUDA in
PyTorch with optional mixed precision.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import load_file, save_file

from app.ml import channel_pad, preprocess, pretrained
from app.ml.shipped import SHIPPED_MODEL
from app.ml.taxonomy import CLASSES, CellClass

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"
DEFAULT_ARCH = "rexnet_150"
ORT_ALLOW_SPINNING = "0"  # see Predictor.session
ONNX_LAYOUT = f"pad{channel_pad.CHANNEL_MULTIPLE}"  # in the cached graph's name: a new layout re-exports


@dataclass
class ModelCard:
    """Everything needed to use, trust and reproduce a checkpoint."""

    architecture: str = DEFAULT_ARCH
    classes: list[dict] = field(default_factory=lambda: [
        {"code": c.code, "name": c.name, "counted": c.counted, "key": c.key} for c in CLASSES])
    input_size: int = 224
    mean: list[float] = field(default_factory=lambda: list(preprocess.IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(preprocess.IMAGENET_STD))
    preprocessing: str = preprocess.DESCRIPTION
    version: str = "untrained"
    temperature: float = 1.0
    training: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    notes: str = ""

    @property
    def codes(self) -> list[str]:
        return [c["code"] for c in self.classes]

    @property
    def cell_classes(self) -> list[CellClass]:
        return [CellClass(c["code"], c["name"], c.get("counted", True), c.get("key", "")) for c in self.classes]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, default=float) + "\n")

    @classmethod
    def load(cls, path: Path) -> "ModelCard":
        data = json.loads(path.read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def build_model(arch: str = DEFAULT_ARCH, num_classes: int = len(CLASSES),
                init_weights: str | Path | None = None, hub: bool = False) -> torch.nn.Module:
    """A fresh network: random init, a local weights file (or a packaged name such as
    "efficientnet-lite0"), or (only when asked) timm's hub.

    A local file may be a classifier of another class count (e.g. ImageNet): its classifier is
    dropped and the rest loaded, and the count of loaded tensors is checked.
    """
    if hub:
        try:
            return timm.create_model(arch, pretrained=True, num_classes=num_classes)
        except Exception as exc:  # noqa: BLE001 - any network failure reads the same to the user
            raise RuntimeError(f"could not download pretrained {arch} weights from the timm hub "
                               f"({type(exc).__name__}: {exc}); this machine may be offline: "
                               f"pass a local weights file instead") from exc
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    if init_weights:
        own = model.state_dict()
        state = _read_state(init_weights)
        if pretrained.is_lukemelas(state):
            state = pretrained.map_efficientnet_lite(state, own)
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if len(usable) < 0.9 * (len(own) - 2):
            raise ValueError(f"{init_weights}: only {len(usable)} of {len(own)} tensors match {arch}")
        model.load_state_dict(usable, strict=False)
    return model


def _read_state(source: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a checkpoint dir, a .safetensors/.pth file, or a packaged name."""
    if str(source) in pretrained.PACKAGE_WEIGHTS:
        source = pretrained.package_weights_path(str(source))
    path = Path(source)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def save_checkpoint(model: torch.nn.Module, card: ModelCard, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    card.save(out / CARD_FILE)
    return out


def load_checkpoint(model_dir: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, ModelCard]:
    d = Path(model_dir)
    if not (d / WEIGHTS_FILE).is_file() or not (d / CARD_FILE).is_file():
        raise FileNotFoundError(f"{d}: not a MarrowDiff checkpoint (needs {WEIGHTS_FILE} and {CARD_FILE})")
    card = ModelCard.load(d / CARD_FILE)
    model = timm.create_model(card.architecture, pretrained=False, num_classes=len(card.classes))
    model.load_state_dict(load_file(str(d / WEIGHTS_FILE)))
    return model.to(device).eval(), card


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


class _LogitsAndFeatures(torch.nn.Module):
    """Exposes the last convolutional stage beside the logits (one forward for both)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        feats = self.model.forward_features(x)
        return self.model.forward_head(feats), feats


def resolve_device(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("MARROW_DEVICE=cuda but no CUDA device is available")
    return device


class Predictor:
    """Batched prediction with a loaded checkpoint.

    backend "onnx" (CPU default) or "torch"; the ONNX graph is exported once per weights
    file into `cache_dir` and reused.
    """

    def __init__(self, model_dir: str | Path = SHIPPED_MODEL, device: str = "cpu",
                 backend: str = "auto", cache_dir: str | Path | None = None,
                 amp: bool = False, threads: int | None = None):
        self.device = resolve_device(device)
        self.model_dir = Path(model_dir)
        self.model, self.card = load_checkpoint(self.model_dir, self.device)
        self.backend = ("onnx" if self.device == "cpu" else "torch") if backend == "auto" else backend
        self.amp = amp and self.device == "cuda"
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.fc_weight = self.model.get_classifier().weight.detach().float().cpu().numpy()
        self._wrapped = _LogitsAndFeatures(self.model).eval()
        self._sessions: dict[int, object] = {}  # ONNX Runtime sessions by intra-op thread count
        self._lock = threading.Lock()
        self._session = self._onnx_session(cache_dir) if self.backend == "onnx" else None

    @property
    def classes(self) -> list[CellClass]:
        return self.card.cell_classes

    @property
    def version(self) -> str:
        return self.card.version

    def _onnx_session(self, cache_dir):
        digest = hashlib.sha256((self.model_dir / WEIGHTS_FILE).read_bytes()).hexdigest()[:16]
        cache = Path(cache_dir) if cache_dir else self.model_dir / ".cache"
        path = cache / f"{digest}-{ONNX_LAYOUT}.onnx"
        if not path.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            size = self.card.input_size
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.onnx.export(self._exported_network(), torch.zeros(1, 3, size, size), str(tmp),
                              input_names=["input"], output_names=["logits", "features"],
                              dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}, "features": {0: "n"}},
                              opset_version=17, dynamo=False)
            os.replace(tmp, path)
        self._onnx_path = path
        return self.session(self.threads)

    def _exported_network(self) -> torch.nn.Module:
        """What goes to ONNX: ReXNet with its channels padded (same outputs, faster on CPU,
        see `channel_pad`), checked against the network itself on a probe input."""
        try:
            padded = channel_pad.pad_channels(self.model)
        except TypeError:  # not a ReXNet: exported as it is
            return self._wrapped
        wrapped = _LogitsAndFeatures(padded).eval()
        size = self.card.input_size
        probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            (want, want_f), (got, got_f) = self._wrapped(probe), wrapped(probe)
        # relative to the outputs' scale: float32 summation order alone differs by ~1e-6 of it
        err = max(float((a - b).abs().max() / (1 + a.abs().max())) for a, b in ((want, got), (want_f, got_f)))
        if err > 1e-4:
            raise RuntimeError(f"{self.model_dir}: the channel-padded network differs by {err:.2g} (relative)")
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
                    str(self._onnx_path), opts, providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    def forward(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Normalised N×3×S×S float32 -> (logits N×C, last-stage features N×K×h×w).

        `threads`: intra-op threads for this call on CPU (default: the predictor's own);
        the pipeline runs several 1-thread calls side by side.
        """
        if self._session is not None:
            session = self._session if threads in (None, self.threads) else self.session(threads)
            logits, feats = session.run(None, {"input": batch})
            return logits, feats
        with torch.inference_mode(), torch.autocast("cuda", enabled=self.amp):
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            logits, feats = self._wrapped(x)
        return logits.float().cpu().numpy(), feats.float().cpu().numpy()

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


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
