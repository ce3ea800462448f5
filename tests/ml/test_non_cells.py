"""Synthetic non-cells (`app.ml.non_cells`) and `marrow evaluate --non-cells` on real cells."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli import main
from app.ml import non_cells
from app.ml.decode import decode_path


@pytest.fixture(scope="module")
def cell(real_cells_dir) -> np.ndarray:
    return decode_path(sorted((real_cells_dir / "NGS").glob("*.jpg"))[0]).rgb


@pytest.mark.parametrize("kind", list(non_cells.KINDS))
def test_each_kind_keeps_the_frame_changes_the_cell_and_is_seeded(cell, kind):
    made = non_cells.make(cell, kind, np.random.default_rng(3))
    assert made.shape == cell.shape and made.dtype == np.uint8
    assert np.abs(made.astype(int) - cell).mean() > 5  # no longer the cell
    assert np.array_equal(made, non_cells.make(cell, kind, np.random.default_rng(3)))


def test_shuffled_tiles_are_the_cells_own_tiles_in_another_order(cell):
    made = non_cells.make(cell, "shuffled", np.random.default_rng(0))
    side = cell.shape[0] // non_cells.GRID

    def tiles(img):
        return sorted(img[i:i + side, j:j + side].tobytes()
                      for i in range(0, side * non_cells.GRID, side) for j in range(0, side * non_cells.GRID, side))
    assert tiles(made) == tiles(cell)
    assert not np.array_equal(made[:side * 4, :side * 4], cell[:side * 4, :side * 4])


def test_evaluate_reports_how_many_non_cells_are_not_counted(small_dataset, random_checkpoint, tmp_path, capsys):
    data = small_dataset(2, ("LYT", "NGS", "EOS"))
    out = tmp_path / "m.json"
    assert main(["evaluate", str(data), "--model", str(random_checkpoint), "--json", str(out), "--non-cells"]) == 0
    m = json.loads(out.read_text())["non_cells"]
    assert m["n_images"] == 6
    assert {k: v["n_images"] for k, v in m["per_kind"].items()} == {"shuffled": 2, "smeared": 2, "corner": 1, "edge": 1}
    counted = {"BLA", "PMO", "NGS", "EOS", "MON", "LYT"}  # the random checkpoint's counted classes
    kept_out = sum(n for k in m["per_kind"].values() for label, n in k["labels"].items() if label not in counted)
    assert m["not_counted"] == pytest.approx(kept_out / 6)
    assert "synthetic non-cells not counted" in capsys.readouterr().out
