"""The model's input transform, shared by training, evaluation and the product.

Crops from other scanners are not always square: they are padded to a square with their own
edge pixels (never cropped, so the cell is never cut), then resized to the input size and
normalised with the checkpoint's mean/std. The model card records exactly this.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DESCRIPTION = ("RGB uint8 -> pad to square (edge replicate, centred) -> resize to input_size "
               "(INTER_AREA when shrinking, bilinear when enlarging) -> /255 -> (x - mean) / std, CHW")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def square_box(h: int, w: int) -> tuple[int, int, int]:
    """(x, y, side) of the centred square an h×w image is padded to, in its pixels (x or y
    negative where padding is added): the square the model sees of a whole image."""
    side = max(h, w)
    return -((side - w) // 2), -((side - h) // 2), side


def square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Pad to a centred square with replicated edges, then resize to size×size (uint8 RGB)."""
    h, w = rgb.shape[:2]
    if h != w:
        x, y, side = square_box(h, w)
        top, left = -y, -x
        bottom, right = side - h - top, side - w - left
        rgb = cv2.copyMakeBorder(rgb, top, bottom, left, right, cv2.BORDER_REPLICATE)
    if rgb.shape[0] != size:
        interp = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (size, size), interpolation=interp)
    return np.ascontiguousarray(rgb)


def normalize(batch_u8: np.ndarray, mean, std) -> np.ndarray:
    """N×H×W×3 uint8 -> N×3×H×W float32, normalised.

    Channel by channel into the output's planes: the same float32 operations in the same order as
    on the whole N×H×W×3 array (bit for bit), without numpy's slow broadcasting over a last axis
    of 3 and the transposing copy after it."""
    n, h, w, channels = batch_u8.shape
    out = np.empty((n, channels, h, w), np.float32)
    for c in range(channels):
        plane = out[:, c]
        np.multiply(batch_u8[..., c], np.float32(1.0 / 255.0), out=plane)
        plane -= np.float32(mean[c])
        plane /= np.float32(std[c])
    return out


def squares(images: list[np.ndarray], size: int) -> np.ndarray:
    """N×size×size×3 uint8: each image padded and resized (`square_resize`), not yet normalised.
    What the inference backends take (each normalises in its own way, `Normalisation`)."""
    return np.stack([square_resize(im, size) for im in images])


def to_batch(images: list[np.ndarray], size: int, mean, std) -> np.ndarray:
    return normalize(squares(images, size), mean, std)


@dataclass(frozen=True)
class Normalisation:
    """A checkpoint's per-channel mean and std (fractions of 255, RGB), applied to its input
    squares: (x / 255 - mean) / std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, card) -> "Normalisation":
        return cls(tuple(card.mean), tuple(card.std))

    def __call__(self, batch_u8: np.ndarray) -> np.ndarray:
        return normalize(batch_u8, self.mean, self.std)
