"""Grad-CAM heatmaps for whole batches, and the coloured overlay shown to reviewers.

For a network whose head is global-average-pool + linear (ReXNet-150 here), the gradient of
class logit c with respect to the last-stage feature map F is W[c] / (h·w) at every position,
so Grad-CAM's channel weights are W[c] / (h·w) and the heatmap is ReLU(Σ_k W[c,k]·F_k),
min-max scaled. That needs no backward pass: the product computes it from the features of the
same forward pass that gave the probabilities. The tests check it against the maintained
`grad-cam` package (one forward and one backward per batch). The worker cannot use that package
itself (importing it imports torch, torchvision and matplotlib, ~700 MB a worker does not
need), so the per-map min-max scaling (`scale_maps`) and the coloured overlay (`overlay`, two
OpenCV passes on uint8) are our own, checked against the package's `scale_cam_image` and
`show_cam_on_image` in `tests/ml/test_gradcam.py`.

A heatmap is kept at the network's own resolution (7×7 for ReXNet-150 at 224 px) with the
square of the image it covers (`cam_in_image`); it is brought to the image's size only when an
overlay is drawn: the worker stores the small map in the cell's row (app.cells.overlays) and the
web app draws the overlay when a reviewer first opens the cell.
"""
from __future__ import annotations

import cv2
import numpy as np

from app.ml import encode

Box = tuple[int, int, int]  # (x, y, side): a square of an image in its pixels, possibly reaching past its edges


def scale_maps(maps: np.ndarray, size: int | None = None) -> np.ndarray:
    """N×h×w maps -> float32 N×h×w with each map stretched to [0, 1] (a flat map becomes all
    zero), then resized bilinearly to N×size×size when `size` is given."""
    maps = np.asarray(maps, np.float32)
    shifted = maps - maps.min(axis=(1, 2), keepdims=True)
    scaled = shifted / (shifted.max(axis=(1, 2), keepdims=True) + np.float32(1e-7))
    if size is None:
        return scaled
    resized = [cv2.resize(m, (size, size)) for m in scaled]
    return np.array(resized, np.float32).reshape(len(scaled), size, size)


def cam_from_features(features: np.ndarray, fc_weight: np.ndarray, targets: np.ndarray,
                      size: int | None = None) -> np.ndarray:
    """Analytic Grad-CAM: features N×K×h×w, fc_weight C×K, targets N -> N×h×w in [0, 1]
    (N×size×size when `size` is given, as grad-cam returns it)."""
    w = fc_weight[np.asarray(targets)]  # N×K
    cams = np.maximum(np.einsum("nk,nkhw->nhw", w, features.astype(np.float32)), 0.0)
    return scale_maps(cams, size)


def target_layer(model):
    """The last convolutional stage (the feature map the head pools)."""
    return model.features[-1] if hasattr(model, "features") else model.conv_head


def overlay(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """JET-coloured heatmap (H×W in [0, 1], in the image's frame: `cam_in_image`) blended over
    the cell (RGB uint8, H×W), scaled so that the blend's brightest value is 255, as grad-cam's
    `show_cam_on_image` does."""
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET),
                          cv2.COLOR_BGR2RGB)
    blend = cv2.addWeighted(colour, alpha, rgb, 1 - alpha, 0, dtype=cv2.CV_32F)
    return cv2.convertScaleAbs(blend, alpha=255.0 / max(float(blend.max()), 1e-6))


def cam_in_image(cam: np.ndarray, box: Box, shape: tuple[int, ...]) -> np.ndarray:
    """The heatmap over the whole image (H×W floats in [0, 1]; 0 outside the box).

    `cam` covers the square `box` of the image that the model was given: the framed crop, or
    the whole image padded to a centred square (`preprocess.square_box`, x or y negative)."""
    h, w = shape[:2]
    x, y, side = box
    heat = cv2.resize(cam.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    full = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, w), min(y + side, h)
    if x1 > x0 and y1 > y0:
        full[y0:y1, x0:x1] = heat[y0 - y:y1 - y, x0 - x:x1 - x]
    return full


def heatmap_from_png(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """A heatmap stored as a grey PNG in the cell's frame (by releases before 2026-12-03) back
    as floats in [0, 1] at the image's size."""
    heat = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if heat is None:
        raise ValueError("the stored Grad-CAM heatmap is not a readable PNG")
    h, w = shape[:2]
    return cv2.resize(heat.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_LINEAR)


def overlay_png(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> bytes:
    """The overlay of a heatmap in the image's frame (`cam_in_image`) as PNG bytes (lossless, for reports)."""
    return encode.png(overlay(rgb, heat, alpha))


def overlay_jpeg(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45, quality: int = 90) -> bytes:
    """The overlay as JPEG bytes: what the web app stores per cell (a photographic overlay
    encodes ~10x faster and ~3x smaller than PNG)."""
    return encode.jpeg(overlay(rgb, heat, alpha), quality)
