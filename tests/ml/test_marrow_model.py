"""The default 13-class marrow model: its card, both labs' held-out cells, the fast path, and
images that are not cells."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from app.ml import pipeline
from app.ml.card import MARROW_MODEL, SHIPPED_MODEL
from app.ml.predictor import Predictor
from app.ml.unidentified import UNK

NOT_COUNTED = {"NIF", "PLT", UNK}


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((MARROW_MODEL / "model_card.json").read_text())


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(MARROW_MODEL)


def test_it_is_the_default_and_its_card_names_the_marrow_and_its_rule(card):
    assert SHIPPED_MODEL == MARROW_MODEL
    codes = [c["code"] for c in card["classes"]]
    assert codes == ["BLA", "PMO", "MYB", "MMZ", "NGB", "NGS", "EOS", "BAS", "MON", "LYT", "EBO", "NIF", "PLT"]
    assert [c["code"] for c in card["classes"] if not c["counted"]] == ["NIF", "PLT"]
    assert card["framing"]["side_per_nucleus"] > 0
    rule = card["unidentified"]
    assert 0 < rule["min_confidence"] < 1 and rule["calibration"]["rejected_correct"] <= 0.05
    assert set(card["metrics"]["validation"]["per_source"]) == {"bone-marrow-7", "pbc"}
    assert set(card["data"]["sources"]) == {"bone-marrow-7", "pbc"}


def _held_out(card: dict, roots: dict[str, Path], per_class: int) -> list[tuple[Path, str]]:
    """A few validation cells (held out from training) of every class of every source."""
    chosen: dict[str, list] = defaultdict(list)
    for rel in card["training"]["split"]["val_files"]:
        source, code, name = rel.split("/")
        if len(chosen[f"{source}/{code}"]) < per_class:
            chosen[f"{source}/{code}"].append((roots[source] / code / name, code))
    return [cell for cells in chosen.values() for cell in cells]


def test_it_names_held_out_cells_of_both_labs_far_above_chance(card, predictor, real_cells_dir, pbc_cells_dir):
    cells = _held_out(card, {"bone-marrow-7": real_cells_dir, "pbc": pbc_cells_dir}, per_class=3)
    assert len(cells) == 3 * 18
    results = list(pipeline.run([(str(p), None) for p, _ in cells], predictor, with_cam=False))
    top1 = np.mean([r.prediction.code == code for r, (_, code) in zip(results, cells)])
    counted = [(r, code) for r, (_, code) in zip(results, cells) if r.prediction.label != UNK]
    assert top1 > 0.6  # chance is 1/13
    assert len(counted) >= 0.7 * len(cells)
    assert np.mean([r.prediction.label == code for r, code in counted]) > 0.7


def test_the_fast_path_agrees_with_pytorch_on_framed_cells(real_cells_dir, pbc_cells_dir):
    """ONNX Runtime on the channel-padded export vs PyTorch eager, heatmaps drawn in the image's frame."""
    files = [next((real_cells_dir / "BLA").glob("*.jpg")), next((pbc_cells_dir / "EBO").glob("*.jpg")),
             next((pbc_cells_dir / "MYB").glob("*.jpg"))]
    eager = Predictor(MARROW_MODEL, backend="torch")
    onnx = Predictor(MARROW_MODEL, backend="onnx")  # fp32: the bf16 backends have their own limits
    items = [(str(f), None) for f in files]
    fast, slow = list(pipeline.run(items, onnx)), list(pipeline.run(items, eager))
    for f, a, b in zip(files, fast, slow):
        assert np.abs(a.prediction.probs - b.prediction.probs).max() < 1e-4, f
        assert a.prediction.label == b.prediction.label
        assert a.prediction.cam.shape == (7, 7) and a.cam_box == b.cam_box
        # placed back in the whole image's frame: the framed crop's square, nothing outside it
        heat = a.heatmap()
        x, y, side = a.cam_box
        assert heat.shape == a.image.shape[:2] and heat.max() > 0.9  # the 7×7 map, min-max scaled, upsampled
        outside = heat.copy()
        outside[y:y + side, x:x + side] = 0
        assert not outside.any()
        assert np.abs(heat - b.heatmap()).max() < 1e-3


def test_photos_that_are_not_cells_are_not_counted(predictor):
    """scikit-image's bundled photos and textures (a cat, coffee, a rocket, gravel, text, an
    immunohistochemistry slide, ...): at least 90 % NIF, PLT or UNK."""
    skimage_data = pytest.importorskip("skimage.data")
    folder = Path(skimage_data.__file__).parent
    photos = sorted(p for p in folder.iterdir() if p.suffix in {".png", ".jpg"})
    assert len(photos) >= 20
    results = list(pipeline.run([(str(p), None) for p in photos], predictor, with_cam=False))
    named = [(Path(r.name).name, r.prediction.label) for r in results
             if r.prediction is not None and r.prediction.label not in NOT_COUNTED]
    readable = sum(r.prediction is not None for r in results)
    assert len(named) <= 0.1 * readable, named


def test_synthetic_non_cells_of_both_labs_are_not_counted(card, predictor, real_cells_dir, pbc_cells_dir):
    """Held-out cells of both labs turned into non-cells (shuffled, smeared, a corner, a cut
    edge: app.ml.non_cells, the family the model was trained against): at least 90 % NIF, PLT
    or UNK (`marrow evaluate … --only-validation --non-cells`: 95.4 % of all 1,626 validation
    cells for …03b, 81.9 % with the weights before the non-cell training)."""
    from app.ml import non_cells

    cells = _held_out(card, {"bone-marrow-7": real_cells_dir, "pbc": pbc_cells_dir}, per_class=3)
    results = list(pipeline.run(non_cells.pipeline_items([p for p, _ in cells]), predictor, with_cam=False))
    named = [(r.name, r.prediction.label) for r in results if r.prediction.label not in NOT_COUNTED]
    assert len(named) <= 0.1 * len(results), named


def test_cells_as_400px_rgba_tiffs_are_named_as_their_jpegs(card, predictor, pbc_cells_dir, tmp_path):
    """The third lab's scanner writes 400 × 400 RGBA TIFFs: the same held-out cells, resampled
    to that size and saved so, are framed and named as their JPEGs are."""
    from PIL import Image

    cells = _held_out(card, {"bone-marrow-7": pbc_cells_dir.parent / "bone-marrow-7", "pbc": pbc_cells_dir},
                      per_class=2)
    cells = [(p, code) for p, code in cells if p.is_relative_to(pbc_cells_dir)]
    tiffs = []
    for p, _ in cells:
        out = tmp_path / f"{p.stem}.tif"
        Image.open(p).convert("RGBA").resize((400, 400), Image.BICUBIC).save(out)
        tiffs.append(out)
    as_jpeg = list(pipeline.run([(str(p), None) for p, _ in cells], predictor, with_cam=False))
    as_tiff = list(pipeline.run([(str(p), None) for p in tiffs], predictor, with_cam=False))
    assert all(r.quality.format == "TIFF" and r.prediction is not None for r in as_tiff)
    assert all(r.framing.found for r in as_tiff)
    same = np.mean([a.prediction.label == b.prediction.label for a, b in zip(as_jpeg, as_tiff)])
    assert len(cells) == 2 * 11 and same >= 0.9, (len(cells), same)
