"""Decode cell images by content, not by file name, without ever raising on bad input.

Every outcome is a `Decoded`: either an 8-bit RGB array or a short reason a technologist can
act on ("not an image", "truncated", "too large: W×H", ...). Image size is read from the
header and refused before any pixel is decoded, so a decompression bomb costs nothing.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# Formats a lab scanner or export produces; anything else is "not an image".
ACCEPTED_FORMATS = {"JPEG", "PNG", "TIFF", "BMP", "GIF", "WEBP", "MPO"}
MAX_PIXELS = 40_000_000  # ~6300×6300; single-cell crops are far smaller
ImageFile.LOAD_TRUNCATED_IMAGES = False
Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit, with our own message


@dataclass
class Decoded:
    """One decoded image, or the reason it could not be decoded."""

    rgb: np.ndarray | None  # H×W×3 uint8
    format: str | None = None
    mode: str | None = None  # the file's own pixel mode, e.g. "RGB", "L", "I;16", "RGBA"
    width: int = 0
    height: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Any PIL mode to 8-bit RGB: 16-bit scaled by its range, alpha composited on white (an
    alpha channel that is 0 everywhere is ignored: a writer left it empty, the colours are the cell)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        gray = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][1] == 0:
            return np.asarray(rgba.convert("RGB"))
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode == "RGB":
        return np.asarray(img)
    return np.asarray(img.convert("RGB"))


def _whole_rgb_jpeg(data: bytes, img: Image.Image) -> np.ndarray | None:
    """A colour JPEG that passed the upload check and ends with its end-of-image marker, decoded
    by OpenCV: the same libjpeg-turbo decoding as PIL's, pixel for pixel (tests/ml/test_quality.py
    checks it on real cells of both labs and on progressive, subsampled and EXIF-rotated files),
    for less CPU (`bench-steps` decode 0.85 -> 0.76 ms a cell, Zen 4). Only checked files: where
    libjpeg meets a marker inside the image data, PIL reports the file truncated while OpenCV
    fills the rest grey without a word. None, and PIL decodes it, for anything else: a file cut
    short, other modes (CMYK, grey), whatever OpenCV declines. EXIF orientation is ignored, as
    PIL does."""
    if img.format != "JPEG" or img.mode != "RGB" or not data.endswith(b"\xff\xd9"):
        return None
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        return None
    if bgr is None or bgr.shape[:2] != (img.height, img.width):
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _sixteen_bit_rgb(data: bytes) -> np.ndarray | None:
    """PIL reads 16-bit-per-channel RGB(A) TIFFs poorly; OpenCV reads them exactly."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return None
    rgb = cv2.cvtColor(arr[:, :, :3], cv2.COLOR_BGR2RGB).astype(np.float64) / 257.0
    if arr.shape[2] == 4 and arr[:, :, 3].any():  # composite on white, as for 8-bit alpha
        alpha = arr[:, :, 3:4].astype(np.float64) / 65535.0
        rgb = rgb * alpha + 255.0 * (1.0 - alpha)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def decode_bytes(data: bytes, max_pixels: int = MAX_PIXELS, reduced: bool = False,
                 checked: bool = False) -> Decoded:
    """Decode image bytes; never raises for bad input.

    `reduced`: decode a JPEG at 1/8 of its size (libjpeg's DCT scaling), for checking an upload:
    every entropy-coded block is still read, so a truncated or corrupt file fails as in a full
    decode, at a fraction of the cost; `rgb` is then the small image, `width`/`height` the file's.
    `checked`: the bytes passed that check already (every image the workers read from the
    storage), so a colour JPEG may take the faster decoder (`_whole_rgb_jpeg`).
    """
    if not data:
        return Decoded(None, error="empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return Decoded(None, error="not an image")
    except Exception as exc:  # noqa: BLE001 - header parsers raise many types
        return Decoded(None, error=f"not an image ({type(exc).__name__})")
    fmt, (w, h) = img.format, img.size
    if fmt not in ACCEPTED_FORMATS:
        return Decoded(None, format=fmt, error=f"unsupported format: {fmt}")
    if w <= 0 or h <= 0:
        return Decoded(None, format=fmt, error="not an image (empty dimensions)")
    if w * h > max_pixels:
        return Decoded(None, format=fmt, width=w, height=h, error=f"too large: {w}×{h}")
    mode = img.mode
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.seek(0)  # animated GIF/TIFF: the first frame is the cell
            if reduced and fmt == "JPEG":
                img.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            rgb = _whole_rgb_jpeg(data, img) if checked and not reduced else None
            if rgb is None:
                img.load()
                rgb = _to_rgb8(img)
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc).lower()
        if "truncated" in msg or "premature" in msg or "broken" in msg or "end of file" in msg:
            return Decoded(None, format=fmt, mode=mode, width=w, height=h, error="truncated")
        if fmt == "TIFF":
            rgb16 = _sixteen_bit_rgb(data)
            if rgb16 is not None:
                return Decoded(rgb16, format=fmt, mode="RGB;16", width=w, height=h)
        return Decoded(None, format=fmt, mode=mode, width=w, height=h,
                       error=f"cannot decode {fmt}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a corrupt file must never stop a batch
        return Decoded(None, format=fmt, mode=mode, width=w, height=h,
                       error=f"cannot decode {fmt}: {type(exc).__name__}")
    return Decoded(np.ascontiguousarray(rgb), format=fmt, mode=mode, width=w, height=h)


def decode_loaded(load: Callable[[], bytes], max_pixels: int = MAX_PIXELS, checked: bool = False) -> Decoded:
    """Decode the bytes `load` returns (a file, a stored image); a file it cannot read gets a
    reason like an undecodable one, so one missing file never stops a batch."""
    try:
        data = load()
    except OSError as exc:
        return Decoded(None, error=f"cannot read file: {exc.strerror or exc}")
    return decode_bytes(data, max_pixels, checked=checked)


def decode_path(path: str | Path, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode a file; unreadable files get a reason like undecodable ones."""
    return decode_loaded(Path(path).read_bytes, max_pixels)
