"""Grad-CAM overlays, drawn the first time a reviewer opens a cell.

The worker stores each cell's heatmap (a small grey PNG, `Storage.heatmap_key`) instead of a
coloured overlay: drawing and encoding one took about as long as the cell's quality checks, and
most cells of a 500-cell case are never opened. The overlay drawn here is stored under the key
the cell already names, so every later request (and every other web process) serves the file.
"""
from __future__ import annotations

from pathlib import Path

from app.cells.models import Cell
from app.errors import NotFound
from app.ml.decode import decode_bytes
from app.ml.gradcam import heatmap_from_png, overlay_jpeg
from app.storage import Storage


def overlay_file(storage: Storage, cell: Cell) -> Path:
    """The path of a processed cell's overlay JPEG (`cell.overlay_path`), drawn from its heatmap
    and image where still absent."""
    path = storage.path(cell.overlay_path)
    if path.exists():  # drawn before, or stored by a worker of an earlier release
        return path
    try:
        heatmap = storage.read(Storage.heatmap_key(cell.overlay_path))
        rgb = decode_bytes(storage.read(cell.image_path), checked=True).rgb  # stored: it passed the upload check
    except FileNotFoundError as e:
        raise NotFound(f"cell {cell.id}'s Grad-CAM cannot be drawn: {Path(e.filename).name} is missing "
                       "from the storage folder") from e
    if rgb is None:
        raise NotFound(f"cell {cell.id}'s Grad-CAM cannot be drawn: its stored image is unreadable")
    storage.put(cell.overlay_path, overlay_jpeg(rgb, heatmap_from_png(heatmap, rgb.shape)))
    return path
