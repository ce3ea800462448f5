"""The real cells a benchmark runs on, and the percentiles it reports."""
from __future__ import annotations

import os
import statistics
from pathlib import Path

from app.ml.dataset import IMAGE_SUFFIXES
from app.storage import sha256
from app.taxonomy.defaults import DEFAULT_CATEGORIES

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "bone-marrow-7"
DATA_ENV = "MARROW_TEST_DATA"
_RELABEL_CODES = tuple(c.code for c in DEFAULT_CATEGORIES)


def default_data_dir() -> Path:
    """$MARROW_TEST_DATA, else ../shared/data/bone-marrow-7 beside the repository."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)


def pick_cells(data_dir: str | Path, n: int, distinct: bool = False) -> list[Path]:
    """`n` real cells spread over the class folders (round robin, evenly spaced, deterministic).

    A folder without class sub-folders is used as it is. `distinct`: no two with the same bytes
    (the app makes one cell of an image sent twice; the PBC set holds 4 such pairs), for the
    benchmarks that count the cells the app made. FileNotFoundError when there is no such
    folder or no image in it, ValueError when it holds fewer than `n`.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"real cells not found at {root} (pass --data DIR: a folder with one "
                                f"sub-folder of images per class, e.g. ../shared/data/bone-marrow-7)")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = [sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) for d in folders]
    per_class = [files for files in per_class if files]
    if not per_class:
        loose = sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        per_class = [loose] if loose else []
    if not per_class:
        raise FileNotFoundError(f"{root}: no images found (expected <CODE>/*.jpg)")
    if distinct:
        per_class = _first_of_each_image(per_class)
    total = sum(len(f) for f in per_class)
    if n > total:
        raise ValueError(f"{n} cells wanted but {root} holds only {total} {'distinct ' if distinct else ''}images")
    k = len(per_class)
    want = [n // k + (1 if i < n % k else 0) for i in range(k)]
    # a class with too few images gives its share to the others
    short = sum(max(0, w - len(f)) for w, f in zip(want, per_class))
    want = [min(w, len(f)) for w, f in zip(want, per_class)]
    while short:
        for i, files in enumerate(per_class):
            if short and want[i] < len(files):
                want[i] += 1
                short -= 1
    chosen = []
    for files, w in zip(per_class, want):
        step = len(files) / max(w, 1)
        chosen.append([files[int(j * step)] for j in range(w)])
    out = []
    for j in range(max(want)):
        out.extend(c[j] for c in chosen if j < len(c))
    return out


def _first_of_each_image(per_class: list[list[Path]]) -> list[list[Path]]:
    """Each class's files less those whose bytes an earlier file (in class order) has."""
    seen: set[str] = set()
    out = []
    for files in per_class:
        kept = []
        for f in files:
            digest = sha256(f.read_bytes())
            if digest not in seen:
                seen.add(digest)
                kept.append(f)
        out.append(kept)
    return out


def percentile_ms(seconds: list[float], q: int, digits: int = 1) -> float:
    """The q-th percentile (inclusive method) of durations in seconds, in milliseconds."""
    if len(seconds) < 2:
        return round(1000 * seconds[0], digits) if seconds else 0.0
    return round(1000 * statistics.quantiles(seconds, n=100, method="inclusive")[int(q) - 1], digits)


def another_label(label: str | None) -> str:
    """A reviewer's correction for a benchmark: the next code of the default category list
    (a new case's list), whatever the model said (a class, or UNK)."""
    i = _RELABEL_CODES.index(label) if label in _RELABEL_CODES else -1
    return _RELABEL_CODES[(i + 1) % len(_RELABEL_CODES)]
