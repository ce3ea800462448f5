"""The fixed probe batch every inference backend is verified on when it is loaded.

Sixteen synthetic, cell-like images (MGG-stained look: a lavender background, red blood cells,
one white cell in the middle with a purple nucleus — round, kidney-shaped, lobed or several
blobs — pale blue-grey or pink cytoplasm, some with orange or purple granules), drawn
procedurally from a fixed seed with numpy and OpenCV. They are shipped as PNG files in
`app/ml/probe_cells/` (written once by `python -m app.ml.probe --write`), so every machine
verifies on the same pixels; no real patient cell is in the repository.

A backend is compared with the fp32 network on these cells (see `app.ml.backends.verify`): they
drive the network through the same range of activations as real cells (stain colours, edges,
nuclei), which random noise does not.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

PROBE_DIR = Path(__file__).resolve().parent / "probe_cells"
N_PROBE = 16
SIDE = 176
SEED = 2026

# RGB colours of the stain (May-Grünwald-Giemsa look)
BACKGROUND = (226, 214, 226)
RBC = (214, 160, 170)
NUCLEUS = ((98, 52, 130), (120, 66, 150), (78, 40, 110), (140, 90, 170))
CYTOPLASM = ((186, 190, 215), (205, 180, 205), (170, 176, 210), (215, 195, 200))
GRANULE = ((226, 120, 80), (110, 50, 120))


def _blob(img: np.ndarray, rng: np.random.Generator, center, radius: float, color, points: int = 14) -> None:
    """A filled irregular round shape (a polygon on a jittered circle)."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, points))
    radii = radius * rng.uniform(0.85, 1.12, points)
    pts = np.stack([center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles)], 1)
    cv2.fillPoly(img, [np.round(pts).astype(np.int32)], color, lineType=cv2.LINE_AA)


def draw_cell(rng: np.random.Generator, kind: int, side: int = SIDE) -> np.ndarray:
    """One synthetic cell image (RGB uint8); `kind` varies the nucleus and granules."""
    img = np.empty((side, side, 3), np.uint8)
    img[:] = np.clip(np.array(BACKGROUND) + rng.integers(-8, 9, 3), 0, 255)
    for _ in range(int(rng.integers(3, 8))):  # red blood cells around the white cell
        c = rng.uniform(0, side, 2)
        if np.hypot(*(c - side / 2)) < side * 0.3:
            continue
        r = rng.uniform(0.09, 0.13) * side
        _blob(img, rng, c, r, tuple(int(v) for v in np.clip(np.array(RBC) + rng.integers(-12, 13, 3), 0, 255)))
        _blob(img, rng, c, r * 0.45, (228, 190, 196))
    mid = side / 2 + rng.uniform(-6, 6, 2)
    cell_r = rng.uniform(0.22, 0.33) * side
    _blob(img, rng, mid, cell_r, CYTOPLASM[kind % len(CYTOPLASM)], 18)
    if kind % 4 in (1, 3):  # granules
        color = GRANULE[(kind // 4) % 2]
        for _ in range(int(rng.integers(40, 90))):
            a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, cell_r * 0.9)
            p = (int(mid[0] + d * np.cos(a)), int(mid[1] + d * np.sin(a)))
            cv2.circle(img, p, int(rng.integers(1, 3)), color, -1, lineType=cv2.LINE_AA)
    nucleus = NUCLEUS[kind % len(NUCLEUS)]
    shape = kind % 4
    if shape == 0:  # round (blast, lymphocyte)
        _blob(img, rng, mid, cell_r * rng.uniform(0.6, 0.8), nucleus)
    elif shape == 1:  # kidney (monocyte, promyelocyte)
        _blob(img, rng, mid, cell_r * 0.6, nucleus)
        _blob(img, rng, mid + cell_r * 0.45 * np.array([np.cos(kind), np.sin(kind)]), cell_r * 0.35, CYTOPLASM[0])
    elif shape == 2:  # segmented (neutrophil): lobes joined by strands
        centers = [mid + cell_r * 0.45 * np.array([np.cos(t), np.sin(t)])
                   for t in rng.uniform(0, 2 * np.pi) + np.arange(3) * 2.1]
        for a, b in zip(centers, centers[1:]):
            cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), nucleus, 3, cv2.LINE_AA)
        for c in centers:
            _blob(img, rng, c, cell_r * 0.27, nucleus)
    else:  # two lobes (eosinophil)
        for t in (0.0, np.pi):
            _blob(img, rng, mid + cell_r * 0.35 * np.array([np.cos(t + kind), np.sin(t + kind)]), cell_r * 0.33, nucleus)
    # chromatin texture, optics and sensor noise
    texture = rng.normal(0, 6, (side // 4, side // 4, 1))
    img = np.clip(img + cv2.resize(texture, (side, side))[..., None], 0, 255).astype(np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 1.4))
    return np.clip(img + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)


def generate(n: int = N_PROBE, seed: int = SEED) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [draw_cell(rng, k) for k in range(n)]


def probe_cells() -> list[np.ndarray]:
    """The shipped probe cells (RGB uint8), in file order."""
    files = sorted(PROBE_DIR.glob("probe_*.png"))
    if not files:
        raise FileNotFoundError(f"no probe cells in {PROBE_DIR} (python -m app.ml.probe --write)")
    return [cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for f in files]


def main() -> None:
    ap = argparse.ArgumentParser(description="write the probe cells into app/ml/probe_cells/")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if args.write:
        PROBE_DIR.mkdir(exist_ok=True)
        for i, rgb in enumerate(generate()):
            cv2.imwrite(str(PROBE_DIR / f"probe_{i:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_PNG_COMPRESSION, 9])


if __name__ == "__main__":
    main()
