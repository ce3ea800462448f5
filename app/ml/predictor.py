"""Batched prediction with a loaded checkpoint, on the inference backend the CPU suits best.

`Predictor` runs a batch through the network once and returns, per image, the full probability
vector, the top-3 and (on request) the Grad-CAM heatmap, which for a global-average-pool +
linear head comes from the same forward pass (see `gradcam`): every backend returns the
last-stage feature map beside the logits.

The backends and how `auto` chooses and verifies one are in `backends`: on CPU OpenVINO bf16
(or int8, where a quantised graph passed its validation) where the CPU has the units for it,
ONNX Runtime fp32 otherwise and as the fallback; PyTorch on CUDA. The CPU backends run the
graph exported into the model cache and read the classifier's weights with safetensors' numpy
API, so a predictor on them never imports torch (`model` loads the PyTorch network on demand,
for tests and tools that want it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
import os
from pathlib import Path

import numpy as np
from scipy.special import softmax

from app.ml import backends, preprocess
from app.ml.backends import BACKENDS, Backend
from app.ml.card import CARD_FILE, SHIPPED_MODEL, CellClass, ModelCard, require_checkpoint
from app.ml.unidentified import UNK, energy

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    probs: np.ndarray  # calibrated probabilities, in card class order
    top3: list[tuple[str, str, float]]  # (code, name, probability)
    cam: np.ndarray | None = None  # Grad-CAM heatmap in [0, 1] at the network's resolution (h×w of
    # the last feature map) over the model's input square (see gradcam.cam_in_image)
    energy: float = 0.0  # out-of-distribution score, see app.ml.unidentified
    unidentified: str | None = None  # why the product will not name this cell (set by the pipeline)

    @property
    def code(self) -> str:
        """The network's top class."""
        return self.top3[0][0]

    @property
    def label(self) -> str:
        """The class the product counts: the top class, or UNK."""
        return UNK if self.unidentified else self.code

    @property
    def probability(self) -> float:
        return self.top3[0][2]


class Predictor:
    """Batched prediction with a loaded checkpoint.

    backend: "auto" (see `backends`), or one of `BACKENDS` to force it; default $MARROW_BACKEND
    or "auto". The exported graph is
    cached in `cache_dir` (default `<model_dir>/.cache`) per weights file. `selection` records
    the choice: backend, precision, CPU flags, each candidate's check on the probe cells.
    """

    def __init__(self, model_dir: str | Path = SHIPPED_MODEL, device: str = "cpu",
                 backend: str | None = None, cache_dir: str | Path | None = None,
                 amp: bool = False, threads: int | None = None):
        # default: $MARROW_BACKEND (so `MARROW_BACKEND=onnx marrow evaluate ...` measures fp32), else auto
        backend = backend or os.environ.get("MARROW_BACKEND") or "auto"
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected auto or one of {', '.join(BACKENDS)}")
        self.model_dir = require_checkpoint(model_dir)
        self.card = ModelCard.load(self.model_dir / CARD_FILE)
        self.device = device
        if device == "cuda":
            from app.ml.checkpoint import resolve_device

            resolve_device(device)
        self.amp = amp and device == "cuda"
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.cache_dir = Path(cache_dir) if cache_dir else self.model_dir / ".cache"
        self._model = None
        if device == "cuda" or backend == "torch":
            self.runner: Backend = self._torch_backend()
            self.fc_weight = self.model.get_classifier().weight.detach().float().cpu().numpy()
            self.selection = {"requested": backend, "backend": "torch", "precision": self.runner.precision,
                              "cpu_flags": backends.cpu_flags(), "checks": [], "skipped": [], "check": None,
                              "fallback_reason": None}
        else:
            try:
                paths = backends.ensure_exported(self.model_dir, self.cache_dir)
                self.fc_weight = backends.classifier_weight(self.model_dir, paths)
                self.runner, self.selection = backends.select(backend, paths, self.card, self.fc_weight,
                                                              self.threads, self.cache_dir)
            except RuntimeError as exc:
                raise RuntimeError(f"{self.model_dir}: {exc}") from exc
        self.backend = self.runner.name
        self.precision = self.runner.precision

    def _torch_backend(self) -> Backend:
        from app.ml.export import LogitsAndFeatures

        return backends.TorchBackend(LogitsAndFeatures(self.model).eval(), self.device,
                                     preprocess.Normalisation.of(self.card), self.amp)

    @property
    def model(self):
        """The PyTorch network (loaded on first use: imports torch)."""
        if self._model is None:
            from app.ml.checkpoint import load_checkpoint

            self._model, _ = load_checkpoint(self.model_dir, self.device)
        return self._model

    def describe(self) -> dict:
        """What this predictor runs, for logs, health reports and the bench JSON."""
        return {"model_dir": str(self.model_dir), "version": self.version, "device": self.device,
                "threads": self.threads, **self.selection}

    @property
    def classes(self) -> list[CellClass]:
        return self.card.cell_classes

    @property
    def version(self) -> str:
        return self.card.version

    def forward(self, squares: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """N×S×S×3 uint8 input squares (`prepare`) -> (logits N×C, last-stage features N×K×h×w).

        `threads`: intra-op threads for this call on CPU (default: the predictor's own);
        the pipeline runs several 1-thread calls side by side.
        """
        return self.runner.forward(squares, threads)

    def prepare(self, images: list[np.ndarray]) -> np.ndarray:
        """The images as the model's input squares, not yet normalised (each backend does that)."""
        return preprocess.squares(images, self.card.input_size)

    def predict(self, images: list[np.ndarray], with_cam: bool = False,
                targets: list[int] | None = None, threads: int | None = None) -> list[Prediction]:
        """Predictions for RGB uint8 images (any size); heatmaps for the top class or `targets`."""
        from app.ml.gradcam import cam_from_features

        if not images:
            return []
        logits, feats = self.forward(self.prepare(images), threads)
        probs = softmax(logits / self.card.temperature, axis=1)
        energies = energy(logits, self.card.temperature)
        cams = None
        if with_cam:
            tgt = np.asarray(targets) if targets is not None else probs.argmax(1)
            cams = cam_from_features(feats, self.fc_weight, tgt)
        classes = self.classes
        out = []
        for i, p in enumerate(probs):
            order = np.argsort(-p)[:3]
            top3 = [(classes[j].code, classes[j].name, float(p[j])) for j in order]
            out.append(Prediction(p, top3, None if cams is None else cams[i], float(energies[i])))
        return out

