"""RGB uint8 images to encoded bytes: the one encoder for overlays, thumbnails and shifted cells."""
from __future__ import annotations

import cv2
import numpy as np


def encode(rgb: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    """`rgb` (H×W×3 uint8, RGB order, or H×W grey) as `ext` (".png", ".jpg", ...) bytes; OpenCV `params`."""
    ok, buf = cv2.imencode(ext, rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params or [])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {rgb.shape} image as {ext}")
    return buf.tobytes()


def png(rgb: np.ndarray) -> bytes:
    return encode(rgb, ".png")


def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    return encode(rgb, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])
