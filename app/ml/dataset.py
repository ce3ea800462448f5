"""Folder-per-class datasets (ImageFolder layout: DATA_DIR/<CODE>/<image>) and splits."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from app.ml.card import CODES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"}


@dataclass
class Sample:
    path: Path
    label: int  # index into the class list

    @property
    def rel(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def list_images(paths: list[str | Path]) -> list[Path]:
    """Files given directly, plus every file under given folders (recursive, sorted).

    Folders contribute every regular file: formats are judged by content later, so a
    mis-named image is still read and a non-image is reported, not silently skipped.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")))
        else:
            out.append(p)
    return out


def load_folder_dataset(root: str | Path, classes: tuple[str, ...] = CODES) -> list[Sample]:
    """All images of a folder-per-class dataset; folders that are not class codes are an error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    unknown = [d.name for d in folders if d.name not in classes]
    if unknown:
        raise ValueError(f"{root}: folders that are not class codes: {', '.join(unknown)} "
                         f"(expected some of {', '.join(classes)})")
    samples = [Sample(f, classes.index(d.name)) for d in folders
               for f in sorted(d.rglob("*")) if f.is_file() and not f.name.startswith(".")]
    if not samples:
        raise ValueError(f"{root}: no images found")
    return samples


def stratified_split(samples: list[Sample], val_fraction: float = 0.2,
                     seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    labels = [s.label for s in samples]
    train, val = train_test_split(samples, test_size=val_fraction, stratify=labels, random_state=seed)
    return sorted(train, key=lambda s: s.rel), sorted(val, key=lambda s: s.rel)


def kfold_splits(samples: list[Sample], k: int, seed: int = 0):
    labels = np.array([s.label for s in samples])
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for tr, va in skf.split(np.zeros(len(samples)), labels):
        yield [samples[i] for i in tr], [samples[i] for i in va]


def subsample_per_class(samples: list[Sample], per_class: int, seed: int) -> list[Sample]:
    """At most `per_class` samples of each class, drawn with a seed (quick runs and tests)."""
    rng = random.Random(seed)
    out: list[Sample] = []
    for label in sorted({s.label for s in samples}):
        group = [s for s in samples if s.label == label]
        out += rng.sample(group, min(per_class, len(group)))
    return out
