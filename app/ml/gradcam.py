"""Grad-CAM heatmaps for whole batches, and the coloured overlay shown to reviewers.

For a network whose head is global-average-pool + linear (ReXNet-150 here), the gradient of
class logit c with respect to the last-stage feature map F is W[c] / (h·w) at every position,
so Grad-CAM's channel weights are W[c] / (h·w) and the heatmap is ReLU(Σ_k W[c,k]·F_k),
min-max scaled. That needs no backward pass: the product computes it from the features of the
same forward pass that gave the probabilities. `reference_gradcam` runs the maintained
`grad-cam` package (one forward and one backward for the batch) for checking and for heads
where the shortcut does not hold; tests assert the two agree.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


def _scale(cams: np.ndarray, size: int) -> np.ndarray:
    """Per image: subtract min, divide by max (as pytorch-grad-cam does), resize to size×size."""
    out = np.empty((cams.shape[0], size, size), np.float32)
    for i, cam in enumerate(cams):
        cam = cam - cam.min()
        cam = cam / (1e-7 + cam.max())
        out[i] = cv2.resize(cam.astype(np.float32), (size, size))
    return out


def cam_from_features(features: np.ndarray, fc_weight: np.ndarray, targets: np.ndarray,
                      size: int) -> np.ndarray:
    """Analytic Grad-CAM: features N×K×h×w, fc_weight C×K, targets N -> N×size×size in [0, 1]."""
    w = fc_weight[np.asarray(targets)]  # N×K
    cams = np.maximum(np.einsum("nk,nkhw->nhw", w, features.astype(np.float32)), 0.0)
    return _scale(cams, size)


def target_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The last convolutional stage (the feature map the head pools)."""
    return model.features[-1] if hasattr(model, "features") else model.conv_head


def reference_gradcam(model: torch.nn.Module, batch: torch.Tensor, targets: list[int]) -> np.ndarray:
    """Grad-CAM from the `grad-cam` package for a batch (one forward + one backward)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[target_layer(model)]) as cam:
        return cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(t)) for t in targets])


def overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """JET-coloured heatmap blended over the cell (RGB uint8, the cell's own size)."""
    h, w = rgb.shape[:2]
    heat = cv2.resize(cam.astype(np.float32), (w, h)) if cam.shape != (h, w) else cam
    colour = cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1 - alpha, colour, alpha, 0)


def overlay_cell(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The overlay in the cell's own frame (RGB uint8).

    A non-square cell was padded to a square for the model; the heatmap is cut back to the
    cell's own frame so it lines up with the image.
    """
    h, w = rgb.shape[:2]
    if h != w:
        side = max(h, w)
        big = cv2.resize(cam.astype(np.float32), (side, side))
        top, left = (side - h) // 2, (side - w) // 2
        cam = big[top:top + h, left:left + w]
    return overlay(rgb, cam, alpha)


def _encode(rgb: np.ndarray, ext: str, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"{ext} encoding failed")
    return buf.tobytes()


def overlay_png(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> bytes:
    """The overlay encoded as PNG bytes (lossless, for reports)."""
    return _encode(overlay_cell(rgb, cam, alpha), ".png", [])


def overlay_jpeg(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45, quality: int = 90) -> bytes:
    """The overlay encoded as JPEG bytes: what the web app stores per cell (a photographic
    overlay encodes ~10x faster and ~3x smaller than PNG)."""
    return _encode(overlay_cell(rgb, cam, alpha), ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])


def deletion_drops(predictor, images: list[np.ndarray], fraction: float = 0.2,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """How much the predicted class's probability falls when the top `fraction` of Grad-CAM
    pixels are deleted, and when the same number of random pixels are (per image).

    "Deleted" pixels take the values of a heavily blurred copy of the cell, which removes their
    detail without adding the sharp artefacts a constant fill would. `predictor` is an
    `app.ml.model.Predictor`; images are RGB uint8 at its input size.
    """
    rng = np.random.default_rng(seed)
    first = predictor.predict(images, with_cam=True)
    edited, targets = [], []
    for img, pred in zip(images, first):
        cam = pred.cam
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
