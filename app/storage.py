"""Content-addressed file storage: every path is derived from a sha256, never from a file name,
so nothing a client sends can place or name a file, and identical images are stored once.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

PROBE_BYTES = 64 * 1024  # what `writable` writes: about one cell image


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Storage:
    """Files under one root directory (MARROW_STORAGE_DIR), addressed by relative paths."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    @staticmethod
    def image_key(digest: str) -> str:
        return f"images/{digest[:2]}/{digest}"

    @staticmethod
    def thumbnail_key(digest: str) -> str:
        return f"thumbnails/{digest[:2]}/{digest}.jpg"

    @staticmethod
    def overlay_key(digest: str, model_version: str) -> str:
        return f"overlays/{digest[:2]}/{digest}.{sha256(model_version.encode())[:12]}.jpg"

    @staticmethod
    def heatmap_key(overlay_key: str) -> str:
        """The Grad-CAM heatmap (grey PNG) an overlay is drawn from, stored beside it by releases
        before migration 0004 (now the map is in the cell's row)."""
        return overlay_key.removesuffix(".jpg") + ".heatmap.png"

    def path(self, key: str) -> Path:
        path = Path(os.path.normpath(self.root / key))  # ".." folded without touching the disk
        if not path.is_relative_to(self.root):  # keys are ours, but refuse to leave the root anyway
            raise ValueError(f"storage key outside the storage dir: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> None:
        """Write atomically (temp file + rename); an existing file has the same content."""
        path = self.path(key)
        if path.exists():
            return
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        except FileNotFoundError:  # the first file of its folder
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def writable(self) -> str | None:
        """None when a file of a cell image's size can be written (and removed) under the root,
        else the reason: what a readiness check asks before uploads would fail. An empty file
        is not enough: a full disk still creates one."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ready-") as fh:
                fh.write(bytes(PROBE_BYTES))
                fh.flush()
        except OSError as exc:
            return exc.strerror or str(exc)
        return None

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()
