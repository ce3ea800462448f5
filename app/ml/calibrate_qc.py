"""Derive the quality thresholds from real, labelled cells (`marrow calibrate-qc`).

Method (recorded in the JSON it writes):
- blur: flag below the 30th percentile of the Laplacian variance, as in the published
  pipeline this product follows, so the blurriest 30 % of typical cells are sharpened;
- brightness: flag outside the 0.5th–99.5th percentile of mean gray level, widened by 10 levels;
- stain: flag below half the 1st percentile of the MGG purple fraction (a real stained cell
  is essentially never that pale).
"""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.ml.dataset import load_folder_dataset
from app.ml.decode import decode_path
from app.ml.quality import THRESHOLDS_FILE, Thresholds, measure_view, view_metrics


def collect_metrics(data_dir: str | Path) -> dict[str, np.ndarray]:
    samples = load_folder_dataset(data_dir)
    rows = []
    for sample in tqdm(samples, desc="measuring", unit="img"):
        dec = decode_path(sample.path)
        if dec.rgb is not None:
            rows.append(view_metrics(measure_view(dec.rgb)))
    return {key: np.array([r[key] for r in rows]) for key in ("brightness", "stain_fraction", "blur_variance")}


def calibrate(data_dir: str | Path, out: str | Path = THRESHOLDS_FILE) -> dict:
    m = collect_metrics(data_dir)
    defaults = Thresholds(0, 0, 0, 0)
    thresholds = {
        "dark_below": round(float(np.percentile(m["brightness"], 0.5)) - 10, 2),
        "bright_above": round(float(np.percentile(m["brightness"], 99.5)) + 10, 2),
        "stain_below": round(float(np.percentile(m["stain_fraction"], 1)) / 2, 5),
        "blur_below": round(float(np.percentile(m["blur_variance"], 30)), 2),
        "gray_tolerance": defaults.gray_tolerance,
        "unsharp_amount": defaults.unsharp_amount,
        "unsharp_sigma": defaults.unsharp_sigma,
    }
    summary = {k: {p: round(float(np.percentile(a, q)), 5) for p, q in
                   (("p1", 1), ("p30", 30), ("p50", 50), ("p99", 99))} for k, a in m.items()}
    doc = {
        "thresholds": thresholds,
        "method": __doc__.split("Method (recorded in the JSON it writes):")[1].strip(),
        "calibrated_on": str(Path(data_dir).name),
        "n_images": int(len(m["brightness"])),
        "date": date.today().isoformat(),
        "distribution": summary,
    }
    Path(out).write_text(json.dumps(doc, indent=2) + "\n")
    return doc
