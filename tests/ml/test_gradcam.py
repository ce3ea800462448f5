"""Grad-CAM: overlays, and that the heatmap points at what the shipped model uses."""
from __future__ import annotations

import json

import cv2
import numpy as np

from app.ml.decode import decode_path
from app.ml import framing
from app.ml.gradcam import cam_in_image, overlay_png
from support.oracles import deletion_drops
from app.ml.card import BM7_MODEL
from app.ml.predictor import Predictor
from app.ml.preprocess import square_box, square_resize


def test_a_padded_cells_heatmap_is_drawn_in_its_own_frame():
    """A non-square cell was padded to a centred square for the model: its heatmap is cut back
    to the cell's frame, the overlay has the cell's own size and the hot spot lands where it was."""
    rgb = np.full((180, 260, 3), 200, np.uint8)
    cam = np.zeros((7, 7), np.float32)
    cam[3, 3] = 1.0  # the centre of the padded square
    box = square_box(180, 260)
    assert box == (0, -40, 260)
    heat = cam_in_image(cam, box, rgb.shape)
    assert heat.shape == (180, 260)
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    assert abs(row - 90) <= 1 and abs(col - 130) <= 1
    png = overlay_png(rgb, heat)
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == (180, 260, 3)


def test_a_framed_cells_heatmap_is_drawn_over_its_crop_only():
    """A framed cell's map covers the crop the model was given: placed there in the whole image,
    zero around it, its hot corner at the crop's corner."""
    rgb = np.random.default_rng(0).integers(60, 220, (180, 260, 3), np.uint8)
    cam = np.zeros((7, 7), np.float32)
    cam[0, 6] = 1.0  # top-right of the crop
    f = framing.Framing(True, 70, 10, 160, 80.0)
    box = framing.input_square(f, rgb.shape, framed=True)
    heat = cam_in_image(cam, box, rgb.shape)
    outside = heat.copy()
    outside[10:170, 70:230] = 0
    assert heat.max() > 0.9 and not outside.any()
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    assert 10 <= row < 30 and 210 <= col < 230
    # not framed (or no nucleus found): the whole image, padded
    assert framing.input_square(f, rgb.shape, framed=False) == square_box(180, 260)
    assert framing.input_square(framing.Framing(False, 0, 0, 0, 0.0), rgb.shape, framed=True) == square_box(180, 260)


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
    """app.ml.gradcam's torch-free scaling gives the grad-cam package's scale_cam_image (so a
    worker need not import torch), a flat map included; its overlay is the package's
    show_cam_on_image within one grey level (rounding instead of truncation)."""
    from pytorch_grad_cam.utils.image import scale_cam_image as pkg_scale, show_cam_on_image as pkg_show

    from app.ml.gradcam import overlay, scale_maps

    rng = np.random.default_rng(0)
    maps = np.maximum(rng.normal(size=(3, 7, 7)), 0).astype(np.float32)
    maps[1] = 0.0  # an all-negative map before the ReLU
    ours = scale_maps(maps, 224)
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, pkg_scale(maps, (224, 224)), atol=1e-6)
    np.testing.assert_allclose(scale_maps(maps), pkg_scale(maps), atol=1e-6)
    assert scale_maps(maps)[1].max() == 0.0 and scale_maps(maps)[0].max() > 0.999
    rgb = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    mask = rng.uniform(0, 1, (50, 60)).astype(np.float32)
    ours = overlay(rgb, mask, alpha=0.45).astype(int)
    theirs = pkg_show(rgb.astype(np.float32) / 255, mask, use_rgb=True, image_weight=0.55).astype(int)
    assert np.abs(ours - theirs).max() <= 1