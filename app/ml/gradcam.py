"""Grad-CAM heatmaps for whole batches, and the coloured overlay shown to reviewers.

For a network whose head is global-average-pool + linear (ReXNet-150 here), the gradient of
class logit c with respect to the last-stage feature map F is W[c] / (h·w) at every position,
so Grad-CAM's channel weights are W[c] / (h·w) and the heatmap is ReLU(Σ_k W[c,k]·F_k),
min-max scaled. That needs no backward pass: the product computes it from the features of the
same forward pass that gave the probabilities. The tests check it against the maintained
`grad-cam` package (one forward and one backward per batch); the scaling and the coloured
overlay are that package's `scale_cam_image` and `show_cam_on_image`, copied here line for line
(importing them imports torch, torchvision and matplotlib, ~700 MB a worker does not need) and
checked against the package in `tests/ml/test_gradcam.py`.
"""
from __future__ import annotations

import cv2
import numpy as np

from app.ml import encode


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


def show_cam_on_image(img: np.ndarray, mask: np.ndarray, use_rgb: bool = False,
                      colormap: int = cv2.COLORMAP_JET, image_weight: float = 0.5) -> np.ndarray:
    """grad-cam's `pytorch_grad_cam.utils.image.show_cam_on_image`: the mask as a colour
    heatmap blended over the image (float in [0, 1]), scaled so the brightest value is 255."""
    heatmap = cv2.applyColorMap(np.uint8(255 * mask), colormap)
    if use_rgb:
        heatmap = cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB)
    heatmap = np.float32(heatmap) / 255
    if np.max(img) > 1:
        raise ValueError("The input image should np.float32 in the range [0, 1]")
    if image_weight < 0 or image_weight > 1:
        raise ValueError(f"image_weight should be in the range [0, 1]. Got: {image_weight}")
    cam = (1 - image_weight) * heatmap + image_weight * img
    cam = cam / np.max(cam)
    return np.uint8(255 * cam)


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
    """JET-coloured heatmap blended over the cell (RGB uint8, the cell's own size): grad-cam's
    `show_cam_on_image`, which also scales the blend so that its brightest value is 255."""
    h, w = rgb.shape[:2]
    heat = cv2.resize(cam.astype(np.float32), (w, h)) if cam.shape != (h, w) else cam
    return show_cam_on_image(rgb.astype(np.float32) / 255, np.clip(heat, 0, 1), use_rgb=True,
                             colormap=cv2.COLORMAP_JET, image_weight=1 - alpha)


def overlay_cell(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The overlay in the cell's own frame (RGB uint8).

    A non-square cell was padded to a square for the model; the heatmap is cut back to the
    cell's own frame so it lines up with the image.
    """
    h, w = rgb.shape[:2]
    if h != w and cam.shape != (h, w):  # (a framed cell's heatmap is already in the image's frame)
        side = max(h, w)
        big = cv2.resize(cam.astype(np.float32), (side, side))
        top, left = (side - h) // 2, (side - w) // 2
        cam = big[top:top + h, left:left + w]
    return overlay(rgb, cam, alpha)


def overlay_png(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> bytes:
    """The overlay encoded as PNG bytes (lossless, for reports)."""
    return encode.png(overlay_cell(rgb, cam, alpha))


def overlay_jpeg(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45, quality: int = 90) -> bytes:
    """The overlay encoded as JPEG bytes: what the web app stores per cell (a photographic
    overlay encodes ~10x faster and ~3x smaller than PNG)."""
    return encode.jpeg(overlay_cell(rgb, cam, alpha), quality)
