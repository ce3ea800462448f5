"""Synthetic non-cells made from real cell images: what a lab's artefact crops look like to a model.

A marrow smear's crops are not all cells: smudged and broken cells, cells cut by the frame's edge,
background between cells. The product must not count them (issue: "artefact crops ... not
counted"), yet no labelled artefacts are at hand. These four kinds keep a real crop's stain,
texture and scanner while removing the one thing that makes it a countable cell:

- `shuffled`: the crop cut into 4 × 4 tiles and put back in random order (no whole cell left);
- `smeared`: a directional smear across a sixth of the frame (a crushed or dragged cell);
- `corner`: one corner (35 % of the side) enlarged to the frame: background, red cells, fragments;
- `edge`: the outer 38 % strip of one side stretched to the frame (a cell cut by the crop's edge).

Training shows them to the network with a uniform target (outlier exposure, Hendrycks et al.
2019), so that it answers "none of these" with low confidence and high energy and the UNK rule
rejects them; `marrow evaluate --non-cells` makes them from the evaluated cells and reports how
many the product does not count. They are a proxy for real artefacts, not a substitute: a model
that learns them can still count a real artefact of another kind.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from app.ml import encode
from app.ml.decode import decode_path

GRID = 4
SMEAR_FRACTION = 1 / 6
CORNER_FRACTION = 0.35
EDGE_FRACTION = 0.38


def _shuffled(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = (s - s % GRID for s in rgb.shape[:2])  # a remainder strip keeps its place
    th, tw = h // GRID, w // GRID
    tiles = rgb[:h, :w].reshape(GRID, th, GRID, tw, 3).swapaxes(1, 2).reshape(GRID * GRID, th, tw, 3)
    tiles = tiles[rng.permutation(len(tiles))]
    out = rgb.copy()
    out[:h, :w] = tiles.reshape(GRID, GRID, th, tw, 3).swapaxes(1, 2).reshape(h, w, 3)
    return out


def _smeared(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = max(3, int(min(rgb.shape[:2]) * SMEAR_FRACTION) | 1)
    kernel = np.zeros((n, n), np.float32)
    kernel[n // 2, :] = 1
    turn = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
    kernel = cv2.warpAffine(kernel, turn, (n, n))
    return cv2.filter2D(rgb, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT_101)


def _corner(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = max(8, int(min(h, w) * CORNER_FRACTION))
    y = 0 if rng.random() < 0.5 else h - s
    x = 0 if rng.random() < 0.5 else w - s
    return cv2.resize(rgb[y:y + s, x:x + s], (w, h), interpolation=cv2.INTER_LINEAR)


def _edge(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    turned = np.rot90(rgb, int(rng.integers(4)))
    strip = turned[:, int(turned.shape[1] * (1 - EDGE_FRACTION)):]
    return cv2.resize(np.ascontiguousarray(strip), (w, h), interpolation=cv2.INTER_LINEAR)


KINDS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "shuffled": _shuffled,
    "smeared": _smeared,
    "corner": _corner,
    "edge": _edge,
}


def make(rgb: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A non-cell of `kind` made from one H×W×3 uint8 cell image (same size and dtype)."""
    return KINDS[kind](rgb, rng)


def kind_in_turn(i: int) -> str:
    """The kind the i-th cell of an evaluation is turned into (the kinds in turn)."""
    return list(KINDS)[i % len(KINDS)]


def make_in_turn(rgb: np.ndarray, i: int) -> np.ndarray:
    """The i-th cell's non-cell, of `kind_in_turn(i)` and seeded by i, so a report is repeatable."""
    return make(rgb, kind_in_turn(i), np.random.default_rng(i))


def pipeline_items(paths: list[Path]) -> list[tuple[str, Callable[[], bytes]]]:
    """Pipeline items (`pipeline.Item`) turning the i-th cell image into `make_in_turn(.., i)`,
    made when the pipeline reads it; named "kind:path"."""
    return [(f"{kind_in_turn(i)}:{path}", lambda i=i, path=path: encode.png(make_in_turn(decode_path(path).rgb, i)))
            for i, path in enumerate(paths)]
