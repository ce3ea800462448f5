"""Fixtures for the ML report tests: small folder-per-class datasets copied from real cells."""
from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def pbc_cells_dir(real_cells_dir: Path) -> Path:
    """The second lab's cells (PBC, one folder per class code): `$MARROW_TEST_PBC`, else the
    `pbc` folder beside the bone-marrow cells; skipped, saying why, when absent."""
    path = Path(os.environ.get("MARROW_TEST_PBC") or real_cells_dir.parent / "pbc")
    if not (path / "EBO").is_dir():
        pytest.skip(f"PBC cells not found at {path} (set MARROW_TEST_PBC)")
    return path
