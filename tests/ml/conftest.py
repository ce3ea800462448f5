"""Fixtures for the ML report tests: small folder-per-class datasets copied from real cells."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from app.ml.card import CODES


@pytest.fixture
def small_dataset(real_cells_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    """Factory: copy the first `per_class` real cells of each of `classes` into a tmp dataset."""

    def make(per_class: int = 3, classes: tuple[str, ...] = CODES, name: str = "data") -> Path:
        root = tmp_path / name
        for code in classes:
            (root / code).mkdir(parents=True)
            for src in sorted((real_cells_dir / code).glob("*.jpg"))[:per_class]:
                shutil.copy(src, root / code / src.name)
        return root

    return make
