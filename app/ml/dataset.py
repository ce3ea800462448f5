"""Folder-per-class datasets (ImageFolder layout: DATA_DIR/<CODE>/<image>) and splits.

Several such folders (sources: one lab or scanner each) can be read together; every sample
keeps its source, and splits are stratified by source and class so that each lab's share of
each class is the same in training and validation.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from app.ml.card import MARROW_CLASSES, TAXONOMIES

KNOWN_CODES: tuple[str, ...] = tuple(c.code for c in MARROW_CLASSES)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"}


@dataclass
class Sample:
    path: Path
    label: int  # index into the class list
    source: str = ""  # the dataset folder's name (one lab / scanner)

    @property
    def rel(self) -> str:
        rel = f"{self.path.parent.name}/{self.path.name}"
        return f"{self.source}/{rel}" if self.source else rel

    @property
    def stratum(self) -> str:
        return f"{self.source}/{self.label}"


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


def class_folders(roots: list[str | Path]) -> tuple[str, ...]:
    """The class codes present as folders in any of `roots`, in the taxonomy's order."""
    present = {d.name for r in roots if Path(r).is_dir() for d in Path(r).iterdir()
               if d.is_dir() and not d.name.startswith(".")}
    return tuple(c for c in KNOWN_CODES if c in present) + tuple(sorted(present - set(KNOWN_CODES)))


def taxonomy_codes(roots: list[str | Path]) -> tuple[str, ...]:
    """The codes of the smallest known taxonomy holding every class folder of `roots` (a
    seven-class dataset is reported against the seven classes, a PBC one against the marrow)."""
    present = set(class_folders(roots))
    for classes in sorted(TAXONOMIES.values(), key=len):
        if present <= {c.code for c in classes}:
            return tuple(c.code for c in classes)
    return class_folders(roots)


def load_sources(roots: list[str | Path], classes: tuple[str, ...]) -> list[Sample]:
    """Every image of several folder-per-class datasets, each sample tagged with its source."""
    names = [Path(r).resolve().name for r in roots]
    if len(set(names)) != len(names):
        raise ValueError(f"two sources have the same folder name: {', '.join(names)}")
    return [Sample(s.path, s.label, name) for r, name in zip(roots, names)
            for s in load_folder_dataset(r, classes)]


def load_folder_dataset(root: str | Path, classes: tuple[str, ...] = KNOWN_CODES) -> list[Sample]:
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
    strata = [s.stratum for s in samples]
    train, val = train_test_split(samples, test_size=val_fraction, stratify=strata, random_state=seed)
    return sorted(train, key=lambda s: s.rel), sorted(val, key=lambda s: s.rel)


def recorded_split(samples: list[Sample], card_training: dict) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) as the model card recorded them (`training.split.val_files`, paths
    `source/CLASS/file`, or `CLASS/file` for single-source models); ValueError when it lists none."""
    listed = set(card_training.get("split", {}).get("val_files", []))
    if not listed:
        raise ValueError("the model card lists no validation files (training.split.val_files)")

    def is_val(s: Sample) -> bool:
        return s.rel in listed or f"{s.path.parent.name}/{s.path.name}" in listed
    return [s for s in samples if not is_val(s)], [s for s in samples if is_val(s)]


def kfold_splits(samples: list[Sample], k: int, seed: int = 0):
    labels = np.array([s.stratum for s in samples])
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for tr, va in skf.split(np.zeros(len(samples)), labels):
        yield [samples[i] for i in tr], [samples[i] for i in va]


def subsample_per_class(samples: list[Sample], per_class: int, seed: int) -> list[Sample]:
    """At most `per_class` samples of each class of each source, drawn with a seed (quick runs
    and tests)."""
    rng = random.Random(seed)
    out: list[Sample] = []
    for stratum in sorted({s.stratum for s in samples}):
        group = [s for s in samples if s.stratum == stratum]
        out += rng.sample(group, min(per_class, len(group)))
    return out
