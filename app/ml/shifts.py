"""What another lab's scanner and stain do to a cell image, for `marrow evaluate --shifts`.

Each shift is a deterministic change a lab adopting MarrowDiff is likely to meet: a different
field of view (the cell smaller or larger in the crop), a lower-resolution camera, stronger
JPEG compression, slight defocus, a warmer or paler May-Grünwald-Giemsa stain. Evaluating a
model under each tells how far its accuracy can be trusted off its own scanner; it does not
replace a validation on the new lab's own labelled cells.

The shifted image is encoded losslessly (PNG; an RGBA TIFF for `tiff_400`, the third lab's
export) and goes through the product's whole pipeline (decode, quality checks, unsharp repair
of blurry cells, prediction), as an upload would.
"""
from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from app.ml import encode


def _wider_field(rgb: np.ndarray) -> np.ndarray:
    """The cell smaller in the crop: 25 % more background on every side (mirrored)."""
    h, w = rgb.shape[:2]
    dy, dx = h // 4, w // 4
    return cv2.copyMakeBorder(rgb, dy, dy, dx, dx, cv2.BORDER_REFLECT_101)


def _tighter_crop(rgb: np.ndarray) -> np.ndarray:
    """The cell larger in the crop: the central 75 %."""
    h, w = rgb.shape[:2]
    dy, dx = h // 8, w // 8
    return np.ascontiguousarray(rgb[dy:h - dy, dx:w - dx])


def _low_resolution(rgb: np.ndarray) -> np.ndarray:
    """A coarser camera: down to 40 % of the size and back."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * 0.4)), max(1, round(h * 0.4))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _jpeg_q30(rgb: np.ndarray) -> np.ndarray:
    """A scanner exporting strongly compressed JPEGs (quality 30)."""
    data = np.frombuffer(encode.jpeg(rgb, quality=30), np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _defocus(rgb: np.ndarray) -> np.ndarray:
    """Slightly out of focus: Gaussian blur, sigma 1.5 px."""
    return cv2.GaussianBlur(rgb, (0, 0), 1.5)


def _hsv(rgb: np.ndarray, hue: int, saturation: float, value: float) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * value, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _warmer_stain(rgb: np.ndarray) -> np.ndarray:
    """A redder, stronger stain: hue 10° towards red, saturation × 1.2."""
    return _hsv(rgb, hue=5, saturation=1.2, value=1.0)


def _paler_stain(rgb: np.ndarray) -> np.ndarray:
    """A weaker stain on a brighter field: saturation × 0.6, brightness × 1.08."""
    return _hsv(rgb, hue=0, saturation=0.6, value=1.08)


def _tiff_400(rgb: np.ndarray) -> np.ndarray:
    """Another lab's scanner export: 400 x 400 px (bicubic), saved as an RGBA TIFF."""
    return cv2.resize(rgb, (400, 400), interpolation=cv2.INTER_CUBIC)


def _rgba_tiff(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("RGBA").save(buf, "TIFF")
    return buf.getvalue()


SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "wider_field": _wider_field,
    "tighter_crop": _tighter_crop,
    "low_resolution": _low_resolution,
    "jpeg_q30": _jpeg_q30,
    "defocus": _defocus,
    "warmer_stain": _warmer_stain,
    "paler_stain": _paler_stain,
    "tiff_400": _tiff_400,
}
ENCODERS: dict[str, Callable[[np.ndarray], bytes]] = {"tiff_400": _rgba_tiff}  # else PNG


def describe() -> dict[str, str]:
    """Each shift's one-line description, for the report and `--help`."""
    return {name: (fn.__doc__ or "").strip() for name, fn in SHIFTS.items()}


def shifted_bytes(rgb: np.ndarray, name: str) -> bytes:
    """The shifted cell as a lossless file (PNG, or the shift's own format), so only the shift
    itself changes the pixels."""
    return ENCODERS.get(name, encode.png)(SHIFTS[name](rgb))
