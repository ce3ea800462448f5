"""Reference implementations the tests check the product against (not product code)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from app.ml.decode import decode_bytes
from app.ml.gradcam import target_layer
from app.ml.quality import QualityRecord, Thresholds, assess


def reference_gradcam(model: torch.nn.Module, batch: torch.Tensor, targets: list[int]) -> np.ndarray:
    """Grad-CAM from the `grad-cam` package for a batch (one forward + one backward)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[target_layer(model)]) as cam:
        return cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(t)) for t in targets])


def check_bytes(name: str, data: bytes, thresholds: Thresholds | None = None,
                repair: bool = True) -> tuple[QualityRecord, np.ndarray | None]:
    """Quality checks of an encoded image, as the pipeline runs them on an upload."""
    return assess(name, decode_bytes(data), thresholds or Thresholds.load(), repair)


def deletion_drops(predictor, images: list[np.ndarray], fraction: float = 0.2,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """How much the predicted class's probability falls when the top `fraction` of Grad-CAM
    pixels are deleted, and when the same number of random pixels are (per image).

    "Deleted" pixels take the values of a heavily blurred copy of the cell, which removes their
    detail without adding the sharp artefacts a constant fill would. `predictor` is an
    `app.ml.predictor.Predictor`; images are RGB uint8 at its input size.
    """
    rng = np.random.default_rng(seed)
    first = predictor.predict(images, with_cam=True)
    edited, targets = [], []
    for img, pred in zip(images, first):
        cam = cv2.resize(pred.cam, img.shape[1::-1])  # the network's map over the image's pixels
        top = cam >= np.quantile(cam, 1 - fraction)
        rand = np.zeros(cam.size, bool)
        rand[rng.choice(cam.size, int(top.sum()), replace=False)] = True
        blurred = cv2.GaussianBlur(img, (0, 0), 10)
        for mask in (top, rand.reshape(cam.shape)):
            out = img.copy()
            out[mask] = blurred[mask]
            edited.append(out)
        targets.append(int(pred.probs.argmax()))
    after = predictor.predict(edited)
    before = np.array([p.probs[t] for p, t in zip(first, targets)])
    top_after = np.array([after[2 * i].probs[t] for i, t in enumerate(targets)])
    rand_after = np.array([after[2 * i + 1].probs[t] for i, t in enumerate(targets)])
    return before - top_after, before - rand_after
