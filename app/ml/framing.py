"""Frame the central nucleated cell the same way whatever lab or scanner made the crop.

Labs crop cells differently: the Matek bone-marrow crops (250 px) are filled by the cell, the
PBC crops (CellaVision, 360 px) show it at about a third of the frame among red cells. A model
trained on both learns "which lab" as a cue for the class unless the framing is the same. So
every image, in training and in the product, goes through `frame()`:

1. find the nucleus of the cell nearest the centre: MGG-stained pixels (the QC stain window)
   darker in green than an Otsu threshold taken over the stained pixels, then the connected
   region nearest the centre, joined with nearby regions (the lobes of a segmented nucleus);
2. crop a square centred on it, the model's `Crop.side_per_nucleus` times the nucleus's extent
   (its card's `framing`; 2.0 when a card does not say), never smaller than `min_fraction` of
   the frame (a platelet is not blown up to a cell's size) nor larger than the frame (no
   invented border), moved inside the frame where it would cross an edge.

A Matek crop is clipped by its own frame (70 % of them at a median 1.59x the nucleus) while a
PBC crop is cut at the full side, which is why the shipped model frames at 1.8x (README,
"Framing at 1.8x"; tests/ml/test_framing.py checks both labs on real crops). An image in which
no stained nucleus is found is returned whole and reported as `found = False`, which the
unidentified rule treats as "not a nucleated cell".
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.ml.preprocess import square_box
from app.ml.quality import stain_mask

WORK_SIDE = 256  # the nucleus is looked for at this size (long side)
SIDE_PER_NUCLEUS = 2.0
MIN_FRACTION = 0.4
MIN_NUCLEUS_AREA = 0.004  # of the frame: smaller stained specks are not a nucleus
CENTRE_SIGMA = 0.18  # of the diagonal: how strongly a region near the centre is preferred
LOBE_GAP = 0.04  # of the frame: regions this close to the chosen one belong to the same nucleus


@dataclass(frozen=True)
class Crop:
    """How a model's cells are cropped around the nucleus (stored in its card's `framing`)."""

    side_per_nucleus: float = SIDE_PER_NUCLEUS
    min_fraction: float = MIN_FRACTION

    @classmethod
    def from_card(cls, framing: dict | None) -> "Crop | None":
        """The card's crop; None for a model fed whole images (an empty `framing`)."""
        if not framing:
            return None
        return cls(float(framing.get("side_per_nucleus", SIDE_PER_NUCLEUS)),
                   float(framing.get("min_fraction", MIN_FRACTION)))

    def as_card(self) -> dict:
        return {"method": f"central nucleus (MGG stain window, Otsu on green), square crop "
                          f"{self.side_per_nucleus}x its extent, {self.min_fraction:.0%}..100% of the frame's short side",
                "side_per_nucleus": self.side_per_nucleus, "min_fraction": self.min_fraction}


DEFAULT_CROP = Crop()


@dataclass(frozen=True)
class Framing:
    """Where the cell is in the input image (pixels of the input)."""

    found: bool
    x: int  # top-left corner of the square crop (all 0 when not found: the whole image is used)
    y: int
    side: int
    nucleus_extent: float  # largest side of the nucleus's bounding box, 0 when not found


def nucleus_mask(rgb: np.ndarray) -> np.ndarray:
    """uint8 mask (255 = nucleus) of dark MGG-stained pixels, at the image's own size."""
    smooth = cv2.GaussianBlur(rgb, (0, 0), 1.5)
    stained = stain_mask(smooth, max_value=255)
    if cv2.countNonZero(stained) < 20:
        return np.zeros(rgb.shape[:2], np.uint8)
    green = np.ascontiguousarray(smooth[..., 1])
    t, _ = cv2.threshold(green[stained > 0].reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    _, dark = cv2.threshold(green, t, 255, cv2.THRESH_BINARY_INV)  # green <= t
    mask = cv2.bitwise_and(stained, dark)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))


def _central_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of the nucleus nearest the centre, with its lobes."""
    # 16-bit labels (a 256-px mask has far fewer than 65536 regions): about half the time of 32-bit
    n, labels, stats, centres = cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_16U, cv2.CCL_GRANA)
    if n < 2:
        return None
    h, w = mask.shape
    min_area = MIN_NUCLEUS_AREA * h * w
    area = stats[1:, cv2.CC_STAT_AREA]
    d = np.hypot(*(centres[1:] - np.array([w / 2, h / 2])).T) / float(np.hypot(w, h))
    score = np.where(area >= min_area, area * np.exp(-(d / CENTRE_SIGMA) ** 2), 0.0)
    if not score.max() > 0:
        return None
    best = int(np.argmax(score)) + 1
    # the lobes: regions the chosen one reaches when grown by r (dilated only around it)
    r = max(3, int(LOBE_GAP * max(h, w)))
    bx, by, bw, bh = stats[best, :4]
    x0, y0, x1, y1 = max(bx - r, 0), max(by - r, 0), min(bx + bw + r, w), min(by + bh + r, h)
    if not _regions_meeting(stats, best, min_area, (x0, y0, x1, y1)):  # most cells: one region
        return int(bx), int(by), int(bx + bw - 1), int(by + bh - 1)
    roi = labels[y0:y1, x0:x1]
    grown = cv2.dilate((roi == best).astype(np.uint8),
                       cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    lobes = [i for i in np.unique(roi[(grown > 0) & (roi > 0)]) if stats[i, cv2.CC_STAT_AREA] >= min_area or i == best]
    left, top = stats[lobes, cv2.CC_STAT_LEFT], stats[lobes, cv2.CC_STAT_TOP]
    right = left + stats[lobes, cv2.CC_STAT_WIDTH] - 1
    bottom = top + stats[lobes, cv2.CC_STAT_HEIGHT] - 1
    return int(left.min()), int(top.min()), int(right.max()), int(bottom.max())


def _regions_meeting(stats: np.ndarray, best: int, min_area: float, box: tuple[int, int, int, int]) -> bool:
    """Whether a nucleus-sized region other than `best` has a bounding box overlapping `box`
    (x0, y0, x1 exclusive, y1 exclusive): without one, growing `best` can reach no lobe, and the
    dilation, the costliest part of the search, is skipped (the same boxes; most cells)."""
    x0, y0, x1, y1 = box
    left, top, width, height, area = stats.T[:5]  # cv2.CC_STAT_LEFT ... CC_STAT_AREA
    meets = (left < x1) & (left + width > x0) & (top < y1) & (top + height > y0) & (area >= min_area)
    meets[[0, best]] = False
    return bool(meets.any())


def locate(rgb: np.ndarray, crop: Crop = DEFAULT_CROP) -> Framing:
    """Where to crop `rgb` (H×W×3 uint8) so the central cell is framed as in training."""
    h, w = rgb.shape[:2]
    short = min(h, w)
    scale = WORK_SIDE / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    scale = small.shape[1] / w
    box = _central_box(nucleus_mask(small))
    if box is None:
        return Framing(False, 0, 0, 0, 0.0)
    x0, y0, x1, y1 = (v / scale for v in box)
    extent = max(x1 - x0, y1 - y0) + 1 / scale
    side = int(round(min(short, max(crop.min_fraction * short, crop.side_per_nucleus * extent))))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x = int(round(min(max(cx - side / 2, 0), w - side)))
    y = int(round(min(max(cy - side / 2, 0), h - side)))
    return Framing(True, x, y, side, float(extent))


def frame(rgb: np.ndarray, framing: Framing | None = None) -> np.ndarray:
    """The square crop of `rgb` around its central cell (see module docstring)."""
    f = framing or locate(rgb)
    if not f.found:
        return rgb
    return np.ascontiguousarray(rgb[f.y:f.y + f.side, f.x:f.x + f.side])


def input_square(f: Framing, shape: tuple[int, ...], framed: bool) -> tuple[int, int, int]:
    """(x, y, side) of the square of the image the model is given: the crop around the nucleus
    (a model trained on framed cells, the nucleus found), else the whole image padded square."""
    return (f.x, f.y, f.side) if framed and f.found else square_box(*shape[:2])
