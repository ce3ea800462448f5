"""Grad-CAM: overlays, and that the heatmap points at what the shipped model uses."""
from __future__ import annotations

import json

import cv2
import numpy as np

from app.ml.decode import decode_path
from app.ml import framing
from app.ml.gradcam import HEATMAP_SIDE, heatmap_from_png, heatmap_png, overlay_cell, overlay_png
from support.oracles import deletion_drops
from app.ml.card import BM7_MODEL
from app.ml.predictor import Predictor
from app.ml.preprocess import square_resize


def test_overlay_png_has_the_cells_own_size_even_when_not_square():
    rgb = np.full((180, 260, 3), 200, np.uint8)
    cam = np.zeros((224, 224), np.float32)
    cam[100:124, 100:124] = 1.0
    png = cv2.imdecode(np.frombuffer(overlay_png(rgb, cam), np.uint8), cv2.IMREAD_COLOR)
    assert png.shape == (180, 260, 3)
    redness = png[..., 2].astype(int) - png[..., 0]  # BGR: JET is red where the heat is
    hot = np.unravel_index(redness.argmax(), png.shape[:2])
    assert abs(hot[0] - 90) < 20 and abs(hot[1] - 130) < 20  # the hot spot lands on the centre


def test_an_overlay_drawn_from_the_stored_heatmap_looks_like_one_drawn_at_once():
    """The worker stores a small grey heatmap and the web app draws the overlay from it later:
    for a padded non-square cell and for a framed cell (heatmap pasted back into its surroundings)
    the two overlays differ by a few grey levels on average, and the hot spot is in the same place."""
    rgb = np.random.default_rng(0).integers(60, 220, (180, 260, 3), np.uint8)
    padded = np.zeros((224, 224), np.float32)
    padded[90:134, 60:110] = 1.0
    padded = cv2.GaussianBlur(padded, (0, 0), 12)
    framed = framing.paste_heatmap(padded / padded.max(), framing.Framing(True, 70, 10, 160, 80.0), rgb.shape)
    for cam in (padded / padded.max(), framed):
        stored = heatmap_png(cam, rgb.shape)
        assert len(stored) < 10_000
        now = overlay_cell(rgb, cam).astype(int)
        later = overlay_cell(rgb, heatmap_from_png(stored, rgb.shape)).astype(int)
        assert later.shape == now.shape == (180, 260, 3)
        assert np.abs(later - now).mean() < 2.0, np.abs(later - now).mean()
        heat_now, heat_later = (np.unravel_index((o[..., 0] - o[..., 2]).argmax(), o.shape[:2]) for o in (now, later))
        assert np.hypot(*np.subtract(heat_now, heat_later)) < 10
    # the pipeline pastes a framed cell's heatmap straight at the stored size: the same overlay
    small = framing.paste_heatmap(padded / padded.max(), framing.Framing(True, 70, 10, 160, 80.0), rgb.shape,
                                  HEATMAP_SIDE)
    assert max(small.shape) == HEATMAP_SIDE
    later = overlay_cell(rgb, heatmap_from_png(heatmap_png(small, rgb.shape), rgb.shape)).astype(int)
    assert np.abs(later - overlay_cell(rgb, framed).astype(int)).mean() < 2.0


def test_deleting_the_top_gradcam_pixels_hurts_more_than_deleting_random_ones(real_cells_dir):
    card = json.loads((BM7_MODEL / "model_card.json").read_text())
    files = card["training"]["split"]["val_files"][::40]  # 24 validation cells, all classes
    images = [square_resize(decode_path(real_cells_dir / f).rgb, 224) for f in files]
    top, rand = deletion_drops(Predictor(BM7_MODEL), images, fraction=0.2)
    margin = float(top.mean() - rand.mean())
    print(f"probability drop: top-20% Grad-CAM {top.mean():.3f}, random 20% {rand.mean():.3f}, "
          f"margin {margin:.3f} over {len(images)} cells")
    assert margin > 0.15  # measured 0.42 on 48 validation cells


def test_torch_free_helpers_match_the_grad_cam_packages():
    """app.ml.gradcam's copy of scale_cam_image gives exactly the grad-cam package's (so a
    worker need not import torch); its overlay is the package's show_cam_on_image within one
    grey level (rounding instead of truncation)."""
    from pytorch_grad_cam.utils.image import scale_cam_image as pkg_scale, show_cam_on_image as pkg_show

    from app.ml.gradcam import overlay, scale_cam_image

    rng = np.random.default_rng(0)
    maps = np.maximum(rng.normal(size=(3, 7, 7)), 0).astype(np.float32)
    np.testing.assert_array_equal(scale_cam_image(maps, (224, 224)), pkg_scale(maps, (224, 224)))
    np.testing.assert_array_equal(scale_cam_image(maps), pkg_scale(maps))
    rgb = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    mask = rng.uniform(0, 1, (50, 60)).astype(np.float32)
    ours = overlay(rgb, mask, alpha=0.45).astype(int)
    theirs = pkg_show(rgb.astype(np.float32) / 255, mask, use_rgb=True, image_weight=0.55).astype(int)
    assert np.abs(ours - theirs).max() <= 1