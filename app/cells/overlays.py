"""Grad-CAM overlays, drawn the first time a reviewer opens a cell.

The worker keeps each cell's Grad-CAM map in the cell's row (`stored_heatmap`: 49 grey levels
for ReXNet-150, and the square of the image they cover) instead of a coloured overlay or a
heatmap file: drawing and encoding an overlay took about as long as the cell's quality checks,
and most cells of a 500-cell case are never opened. The overlay drawn here is stored under the
key the cell already names, so every later request (and every other web process) serves the file.
Cells processed before migration 0004 have a grey heatmap PNG in the storage instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from app.cells.models import Cell
from app.errors import NotFound
from app.ml.decode import decode_bytes
from app.ml.gradcam import Box, cam_in_image, heatmap_from_png, overlay_jpeg
from app.storage import Storage


def stored_heatmap(cam: np.ndarray, box: Box) -> dict:
    """A prediction's Grad-CAM map (floats in [0, 1]) as the cell row keeps it (`Cell.gradcam`)."""
    return {"map": np.rint(255 * np.clip(cam, 0, 1)).astype(np.uint8).tolist(), "box": [int(v) for v in box]}


def _heatmap(storage: Storage, cell: Cell, shape: tuple[int, ...]) -> np.ndarray:
    """The cell's heatmap over its whole image (H×W in [0, 1])."""
    if cell.gradcam is not None:
        levels = np.asarray(cell.gradcam["map"], np.float32) / 255.0
        return cam_in_image(levels, tuple(cell.gradcam["box"]), shape)
    return heatmap_from_png(storage.read(Storage.heatmap_key(cell.overlay_path)), shape)


def overlay_file(storage: Storage, cell: Cell) -> Path:
    """The path of a processed cell's overlay JPEG (`cell.overlay_path`), drawn from its heatmap
    and image where still absent."""
    path = storage.path(cell.overlay_path)
    if path.exists():  # drawn before, or stored by a worker of an earlier release
        return path
    try:
        rgb = decode_bytes(storage.read(cell.image_path), checked=True).rgb  # stored: it passed the upload check
        if rgb is None:
            raise NotFound(f"cell {cell.id}'s Grad-CAM cannot be drawn: its stored image is unreadable")
        heatmap = _heatmap(storage, cell, rgb.shape)
    except FileNotFoundError as e:
        raise NotFound(f"cell {cell.id}'s Grad-CAM cannot be drawn: {Path(e.filename).name} is missing "
                       "from the storage folder") from e
    storage.put(cell.overlay_path, overlay_jpeg(rgb, heatmap))
    return path
