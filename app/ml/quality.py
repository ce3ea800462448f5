"""Per-image quality checks: colour type, brightness, May-Grünwald-Giemsa stain, blur, repair.

Metrics are measured on the image as the model will see it (short side scaled to
`MEASURE_SIDE` px), so a 1000-px crop from another scanner and a 250-px crop from ours are
judged on the same scale. Thresholds come from `qc_thresholds.json`, written by
`marrow calibrate-qc` from the real cells (see README, "Quality thresholds").
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from app.ml.decode import Decoded, decode_path

MEASURE_SIDE = 224
THRESHOLDS_FILE = Path(__file__).with_name("qc_thresholds.json")

# HSV window for MGG-stained chromatin and cytoplasm (OpenCV hue is degrees / 2):
# blue-violet to magenta, saturated enough not to be the pale background.
STAIN_HUE_RANGE = (115, 175)  # 230°–350°
STAIN_MIN_SATURATION = 40
STAIN_MAX_VALUE = 245


@dataclass(frozen=True)
class Thresholds:
    dark_below: float  # mean gray level 0..255
    bright_above: float
    stain_below: float  # fraction of stained pixels
    blur_below: float  # variance of the Laplacian
    gray_tolerance: float = 2.0  # max mean |channel difference| for "grayscale"
    unsharp_amount: float = 1.5
    unsharp_sigma: float = 2.0

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Thresholds":
        data = json.loads(Path(path or THRESHOLDS_FILE).read_text())
        return cls(**data["thresholds"])


@dataclass
class QualityRecord:
    """One image's quality: metrics, flags, and whether unsharp masking was applied."""

    file: str
    error: str | None = None
    format: str | None = None
    width: int = 0
    height: int = 0
    color_type: str | None = None  # "color" | "grayscale"
    brightness: float | None = None
    stain_fraction: float | None = None
    blur_variance: float | None = None
    flags: list[str] = field(default_factory=list)
    repaired: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def measure_view(rgb: np.ndarray) -> np.ndarray:
    """The image scaled so its short side is MEASURE_SIDE, as the model sees it."""
    h, w = rgb.shape[:2]
    scale = MEASURE_SIDE / min(h, w)
    if abs(scale - 1.0) < 1e-6:
        return rgb
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)


def is_grayscale(rgb: np.ndarray, tolerance: float = 2.0) -> bool:
    """A 3-channel image whose channels are (nearly) equal is grayscale."""
    r, g, b = cv2.split(rgb)
    diff = (cv2.mean(cv2.absdiff(r, g))[0] + cv2.mean(cv2.absdiff(g, b))[0]) / 2
    return bool(diff <= tolerance)


def stain_fraction(rgb: np.ndarray) -> float:
    """Fraction of pixels in the MGG purple window of HSV."""
    return cv2.countNonZero(stain_mask(rgb)) / float(rgb.shape[0] * rgb.shape[1])


def stain_mask(rgb: np.ndarray, max_value: int = STAIN_MAX_VALUE) -> np.ndarray:
    """uint8 mask (255 = stained) of the pixels in the MGG purple window of HSV."""
    lo, hi = STAIN_HUE_RANGE
    return cv2.inRange(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV), (lo, STAIN_MIN_SATURATION, 0), (hi, 255, max_value))


def laplacian_variance(rgb: np.ndarray) -> float:
    return _gray_laplacian_variance(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def _gray_laplacian_variance(gray: np.ndarray) -> float:
    # OpenCV's one mean/std pass: faster than numpy's .var(), the same value but for rounding.
    # 16-bit Laplacian: a 3x3 Laplacian of 8-bit grey is an integer within ±1020, held exactly.
    _, std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))
    return float(std[0, 0]) ** 2


def unsharp_mask(rgb: np.ndarray, amount: float = 1.5, sigma: float = 2.0) -> np.ndarray:
    """original + amount × (original − GaussianBlur(original)), clipped to 8 bits."""
    blurred = cv2.GaussianBlur(rgb, (0, 0), sigma)
    return cv2.addWeighted(rgb, 1.0 + amount, blurred, -amount, 0)


def view_metrics(view: np.ndarray) -> dict[str, float]:
    """Brightness, stain fraction and Laplacian variance of an image already at the model's scale."""
    gray = cv2.cvtColor(view, cv2.COLOR_RGB2GRAY)
    return {"brightness": float(gray.mean()), "stain_fraction": stain_fraction(view),
            "blur_variance": _gray_laplacian_variance(gray)}


def measure(rgb: np.ndarray, thresholds: Thresholds, view: np.ndarray | None = None) -> dict:
    """Metrics and flags of a decoded RGB image (measured at the model's scale: `view`, when the
    caller has it already, is `measure_view(rgb)`)."""
    view = measure_view(rgb) if view is None else view
    gray = is_grayscale(view, thresholds.gray_tolerance)
    metrics = {"color_type": "grayscale" if gray else "color", **view_metrics(view)}
    flags = []
    if gray:
        flags.append("grayscale")
    if metrics["brightness"] < thresholds.dark_below:
        flags.append("too_dark")
    if metrics["brightness"] > thresholds.bright_above:
        flags.append("too_bright")
    if metrics["stain_fraction"] < thresholds.stain_below:
        flags.append("no_stain")
    if metrics["blur_variance"] < thresholds.blur_below:
        flags.append("blurry")
    metrics["flags"] = flags
    return metrics


def assess(name: str, decoded: Decoded, thresholds: Thresholds, repair: bool = True,
           view: np.ndarray | None = None) -> tuple[QualityRecord, np.ndarray | None]:
    """The quality record of a decoded image and the image to classify (repaired if blurry);
    `view` as in `measure`."""
    rec = QualityRecord(file=name, error=decoded.error, format=decoded.format,
                        width=decoded.width, height=decoded.height)
    if decoded.rgb is None:
        rec.flags = ["unreadable"]
        return rec, None
    m = measure(decoded.rgb, thresholds, view)
    rec.color_type = m["color_type"]
    rec.brightness = round(m["brightness"], 3)
    rec.stain_fraction = round(m["stain_fraction"], 5)
    rec.blur_variance = round(m["blur_variance"], 3)
    rec.flags = m["flags"]
    image = decoded.rgb
    if repair and "blurry" in rec.flags:
        image = unsharp_mask(image, thresholds.unsharp_amount, thresholds.unsharp_sigma)
        rec.repaired = True
    return rec, image


def check_file(path: str | Path, thresholds: Thresholds | None = None,
               repair: bool = True) -> tuple[QualityRecord, np.ndarray | None]:
    return assess(str(path), decode_path(path), thresholds or Thresholds.load(), repair)
