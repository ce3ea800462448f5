"""Framing the central cell: the same crop rule for every lab's images."""
from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from app.ml import framing
from app.ml.decode import decode_path

BEIGE, RED_CELL, NUCLEUS = (236, 222, 200), (214, 150, 160), (92, 52, 150)


def synthetic_smear(size: int, centre: tuple[int, int], radius: int, seed: int = 0) -> np.ndarray:
    """A beige field with pale red cells and one MGG-purple nucleus at a known centre."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), BEIGE, np.uint8)
    for _ in range(12):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        if np.hypot(x - centre[0], y - centre[1]) > 2.5 * radius:
            cv2.circle(img, (x, y), radius // 2, RED_CELL, -1)
    cv2.circle(img, centre, int(radius * 1.6), (200, 170, 205), -1)  # cytoplasm
    cv2.circle(img, centre, radius, NUCLEUS, -1)
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("centre,radius", [((180, 180), 40), ((150, 210), 35), ((200, 160), 50)])
def test_a_synthetic_nucleus_is_found_and_framed_around_its_centre(centre, radius):
    img = synthetic_smear(360, centre, radius)
    f = framing.locate(img)
    assert f.found
    assert abs(f.nucleus_extent - 2 * radius) <= 0.1 * 2 * radius + 3
    crop_centre = (f.x + f.side / 2, f.y + f.side / 2)
    assert np.hypot(crop_centre[0] - centre[0], crop_centre[1] - centre[1]) < 6
    want = max(framing.MIN_FRACTION * 360, framing.SIDE_PER_NUCLEUS * f.nucleus_extent)
    assert f.side == pytest.approx(want, abs=2)
    assert framing.frame(img, f).shape == (f.side, f.side, 3)


def test_a_small_speck_is_not_blown_up_and_a_big_nucleus_is_not_padded():
    tiny = framing.locate(synthetic_smear(360, (180, 180), 14))  # a platelet-sized blob
    assert tiny.found and tiny.side == round(framing.MIN_FRACTION * 360)
    big = framing.locate(synthetic_smear(250, (125, 125), 90))
    assert big.found and big.side == 250 and (big.x, big.y) == (0, 0)


def test_a_nucleus_near_the_edge_keeps_the_crop_inside_the_frame():
    f = framing.locate(synthetic_smear(360, (60, 300), 40))
    assert f.found and f.x >= 0 and f.y >= 0 and f.x + f.side <= 360 and f.y + f.side <= 360


def test_no_stained_nucleus_means_not_found_and_the_whole_image():
    grey = np.full((200, 300, 3), 128, np.uint8)
    f = framing.locate(grey)
    assert not f.found
    assert framing.frame(grey, f) is grey


def _sample(folder, per_class: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    files = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        files += rng.sample(sorted(d.glob("*.jpg")), per_class)
    return files


def test_real_cells_of_both_labs_are_found_and_framed_alike(real_cells_dir, pbc_cells_dir):
    """PBC shows the cell at a third of the frame, Matek fills the frame: after framing, both
    crops are a few nuclei wide, and the PBC crops are zoomed in where the Matek ones are not."""
    widths = {}
    for name, folder in (("matek", real_cells_dir), ("pbc", pbc_cells_dir)):
        fractions, found = [], 0
        for path in _sample(folder, 4):
            rgb = decode_path(path).rgb
            f = framing.locate(rgb)
            found += f.found
            if f.found:
                fractions.append(f.side / min(rgb.shape[:2]))
                # the crop holds the image centre's neighbourhood: the central cell, not a neighbour
                assert f.x <= rgb.shape[1] * 0.75 and f.x + f.side >= rgb.shape[1] * 0.25
        n = len(_sample(folder, 4))
        assert found >= 0.95 * n, f"{name}: nucleus found in {found} of {n}"
        widths[name] = float(np.median(fractions))
    assert widths["matek"] > 0.85  # Matek crops stay (almost) whole
    assert widths["pbc"] < 0.75  # PBC crops are zoomed in on the cell


def test_the_crop_side_is_the_models_own():
    """A card's `framing.side_per_nucleus` sets the crop; a card without one frames at 2.0x and an
    empty `framing` means whole images."""
    img = synthetic_smear(360, (180, 180), 40)
    crop = framing.Crop.from_card({"side_per_nucleus": 1.5, "min_fraction": 0.2})
    wide, tight = framing.locate(img), framing.locate(img, crop)
    assert tight.found and abs(tight.side - 1.5 * tight.nucleus_extent) <= 2
    assert abs(wide.side / tight.side - 2.0 / 1.5) < 0.05
    assert framing.Crop.from_card({"method": "old card"}) == framing.DEFAULT_CROP
    assert framing.Crop.from_card({}) is None
    assert framing.Crop.from_card(crop.as_card()) == crop
