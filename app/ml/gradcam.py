"""Grad-CAM heatmaps for whole batches, and the coloured overlay shown to reviewers.

For a network whose head is global-average-pool + linear (ReXNet-150 here), the gradient of
class logit c with respect to the last-stage feature map F is W[c] / (h·w) at every position,
so Grad-CAM's channel weights are W[c] / (h·w) and the heatmap is ReLU(Σ_k W[c,k]·F_k),
min-max scaled. That needs no backward pass: the product computes it from the features of the
same forward pass that gave the probabilities. The tests check it against the maintained
`grad-cam` package (one forward and one backward per batch). The scaling is that package's
`scale_cam_image`, copied line for line (importing it imports torch, torchvision and matplotlib,
~700 MB a worker does not need); the coloured overlay is its `show_cam_on_image` redone in two
OpenCV passes on uint8 instead of float arrays, within one grey level of the package's in
`tests/ml/test_gradcam.py`. The worker stores each cell's heatmap as a small grey PNG
(`heatmap_png`); the web app draws the overlay from it when a reviewer first opens the cell.
"""
from __future__ import annotations

import cv2
import numpy as np

from app.ml import encode

HEATMAP_SIDE = 96  # px, long side of a stored heatmap: it is a smooth 7×7 map upsampled


def scale_cam_image(cam, target_size=None) -> np.ndarray:
    """grad-cam's `pytorch_grad_cam.utils.image.scale_cam_image` for 2-D maps: each map min-max
    scaled, then resized to target_size (width, height)."""
    result = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if target_size is not None:
            img = cv2.resize(np.float32(img), target_size)
        result.append(img)
    return np.float32(result)


def cam_from_features(features: np.ndarray, fc_weight: np.ndarray, targets: np.ndarray,
                      size: int) -> np.ndarray:
    """Analytic Grad-CAM: features N×K×h×w, fc_weight C×K, targets N -> N×size×size in [0, 1]."""
    w = fc_weight[np.asarray(targets)]  # N×K
    cams = np.maximum(np.einsum("nk,nkhw->nhw", w, features.astype(np.float32)), 0.0)
    return scale_cam_image(cams, (size, size))


def target_layer(model):
    """The last convolutional stage (the feature map the head pools)."""
    return model.features[-1] if hasattr(model, "features") else model.conv_head


def overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """JET-coloured heatmap blended over the cell (RGB uint8, the cell's own size), scaled so
    that the blend's brightest value is 255, as grad-cam's `show_cam_on_image` does."""
    h, w = rgb.shape[:2]
    heat = cv2.resize(cam.astype(np.float32), (w, h)) if cam.shape != (h, w) else cam
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET),
                          cv2.COLOR_BGR2RGB)
    blend = cv2.addWeighted(colour, alpha, rgb, 1 - alpha, 0, dtype=cv2.CV_32F)
    return cv2.convertScaleAbs(blend, alpha=255.0 / max(float(blend.max()), 1e-6))


def overlay_cell(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The overlay in the cell's own frame (RGB uint8)."""
    return overlay(rgb, cam_in_frame(cam, rgb.shape), alpha)


def cam_in_frame(cam: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The heatmap over the cell's own frame (same aspect as the image, any resolution).

    A non-square cell was padded to a square for the model; its square heatmap is cut back to
    the cell's frame. A framed cell's heatmap is already in the image's frame (see
    `framing.paste_heatmap`), and so is a stored heatmap."""
    h, w = shape[:2]
    if h == w or cam.shape[0] != cam.shape[1] or cam.shape == (h, w):
        return cam
    side = cam.shape[0]
    ch, cw = max(1, round(side * h / max(h, w))), max(1, round(side * w / max(h, w)))
    top, left = (side - ch) // 2, (side - cw) // 2
    return cam[top:top + ch, left:left + cw]


def heatmap_png(cam: np.ndarray, shape: tuple[int, ...]) -> bytes:
    """The heatmap in the cell's frame as an 8-bit grey PNG at most HEATMAP_SIDE px: what the
    worker stores, so the coloured overlay is drawn only for the cells a reviewer opens."""
    heat = cam_in_frame(cam, shape)
    scale = HEATMAP_SIDE / max(heat.shape)
    if scale < 1:
        heat = cv2.resize(heat.astype(np.float32), (max(1, round(heat.shape[1] * scale)),
                                                   max(1, round(heat.shape[0] * scale))),
                          interpolation=cv2.INTER_LINEAR)
    return encode.png(np.uint8(np.round(255 * np.clip(heat, 0, 1))))


def heatmap_from_png(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """A stored heatmap (`heatmap_png`) back as floats in [0, 1] at the image's size."""
    heat = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if heat is None:
        raise ValueError("the stored Grad-CAM heatmap is not a readable PNG")
    h, w = shape[:2]
    return cv2.resize(heat.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_LINEAR)


def overlay_png(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> bytes:
    """The overlay encoded as PNG bytes (lossless, for reports)."""
    return encode.png(overlay_cell(rgb, cam, alpha))


def overlay_jpeg(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45, quality: int = 90) -> bytes:
    """The overlay encoded as JPEG bytes: what the web app stores per cell (a photographic
    overlay encodes ~10x faster and ~3x smaller than PNG)."""
    return encode.jpeg(overlay_cell(rgb, cam, alpha), quality)
