"""Exploratory report of a folder-per-class dataset (`marrow eda`).

One pass reads every file once: its SHA-256 (exact duplicates), its decoded format and pixel
mode, and its quality record from the product's own checks (`quality.assess`, no repair).
Only these small records are kept; the few cells shown (preview grid, blurriest cells) are
decoded again when their figure is drawn. Output in DIR: index.html, one PNG per figure,
quality.csv (the record of every image) and summary.json (the counts).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import textwrap
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from tqdm import tqdm

from app.ml.dataset import KNOWN_CODES as CODES, Sample, load_folder_dataset, taxonomy_codes
from app.ml.decode import Decoded, decode_bytes, decode_path
from app.ml.quality import QualityRecord, Thresholds, assess, measure, unsharp_mask
from app.ml.report import figure, render_page, save_figure
from app.ml.card import MARROW_CLASSES

# Quality flags in report order; "corrupt" is a file that could not be decoded.
FLAGS = ("corrupt", "too_dark", "too_bright", "no_stain", "grayscale", "blurry")
PREVIEW_PER_CLASS = 5
BLURRIEST_SHOWN = 6
LISTED_MAX = 200  # rows of a file list shown in the page (the CSV has them all)
CSV_COLUMNS = ("class", "file", "sha256", "mode", "error", "format", "width", "height", "color_type",
               "brightness", "stain_fraction", "blur_variance", "flags")


@dataclass
class ImageInfo:
    """What the report keeps of one file."""

    code: str
    rel: str  # path relative to the dataset folder
    path: Path
    sha256: str | None
    mode: str | None
    record: QualityRecord

    @property
    def flags(self) -> list[str]:
        return ["corrupt"] if self.record.error else self.record.flags

    @property
    def color_type(self) -> str:
        r = self.record
        return f"{r.format} {self.mode} ({r.color_type})"

NAMES = {c.code: c.name for c in MARROW_CLASSES}


def _inspect(sample: Sample, root: Path, thresholds: Thresholds) -> ImageInfo:
    try:
        data = sample.path.read_bytes()
    except OSError as exc:
        data, decoded = None, Decoded(None, error=f"cannot read file: {exc.strerror or exc}")
    else:
        decoded = decode_bytes(data)
    rel = sample.path.relative_to(root).as_posix()
    record, _ = assess(rel, decoded, thresholds, repair=False)
    return ImageInfo(CODES[sample.label], rel, sample.path,
                     hashlib.sha256(data).hexdigest() if data is not None else None, decoded.mode, record)


def inspect_dataset(data_dir: str | Path, thresholds: Thresholds, progress: bool = True) -> list[ImageInfo]:
    """The record of every file of a folder-per-class dataset, in dataset order."""
    root = Path(data_dir)
    samples = load_folder_dataset(root)
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        infos = pool.map(lambda s: _inspect(s, root, thresholds), samples)
        return list(tqdm(infos, total=len(samples), unit="img", desc="inspecting", file=sys.stderr,
                         disable=not progress))


def duplicate_groups(infos: list[ImageInfo]) -> list[list[ImageInfo]]:
    """Groups of byte-identical files (two or more), largest first."""
    by_hash: dict[str, list[ImageInfo]] = defaultdict(list)
    for info in infos:
        if info.sha256:
            by_hash[info.sha256].append(info)
    return sorted((g for g in by_hash.values() if len(g) > 1), key=lambda g: (-len(g), g[0].rel))


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _cell_axes(ax: Axes, rgb: np.ndarray, title: str = "", ylabel: str = "") -> None:
    """A cell image without ticks or frame, with optional title and row label."""
    ax.imshow(rgb)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=9)


def class_bar_figure(counts: dict[str, int]) -> Figure:
    fig = figure(7.5, 3.8)
    ax = fig.add_subplot()
    bars = ax.bar(range(len(counts)), list(counts.values()), color="#4c72b0")
    ax.bar_label(bars, padding=2, fontsize=9)
    ax.set_xticks(range(len(counts)), [f"{c}\n{textwrap.fill(NAMES[c], 12)}" for c in counts],
                  fontsize=8)
    ax.set_ylabel("images")
    ax.set_title(f"Images per class ({sum(counts.values())} in all)")
    ax.margins(y=0.12)
    return fig


def class_pie_figure(counts: dict[str, int]) -> Figure:
    fig = figure(5.5, 5.0)
    ax = fig.add_subplot()
    present = {c: n for c, n in counts.items() if n}
    ax.pie(list(present.values()), labels=[f"{c} ({n})" for c, n in present.items()],
           autopct="%1.1f%%", startangle=90, counterclock=False, pctdistance=0.75,
           wedgeprops={"linewidth": 1, "edgecolor": "white"})
    ax.set_title("Class shares")
    return fig


def preview_figure(infos: list[ImageInfo], seed: int = 0) -> Figure:
    """PREVIEW_PER_CLASS randomly chosen (seeded) readable cells per class, one row per class."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[ImageInfo]] = defaultdict(list)
    for info in infos:
        if not info.record.error:
            rows[info.code].append(info)
    codes = [c for c in CODES if rows[c]]
    fig = figure(1.6 * PREVIEW_PER_CLASS + 0.6, 1.7 * max(1, len(codes)))
    if not codes:
        _no_data(fig.add_subplot(), "no readable images")
        return fig
    axes = fig.subplots(len(codes), PREVIEW_PER_CLASS, squeeze=False)
    for r, code in enumerate(codes):
        pool = rows[code]
        chosen = sorted(rng.choice(len(pool), min(PREVIEW_PER_CLASS, len(pool)), replace=False))
        for c, ax in enumerate(axes[r]):
            if c >= len(chosen):
                ax.set_axis_off()
                continue
            info = pool[chosen[c]]
            _cell_axes(ax, decode_path(info.path).rgb, Path(info.rel).name,
                       f"{code}\n{NAMES[code]}" if c == 0 else "")
    return fig


def flags_figure(flag_counts: dict[str, int], n: int) -> Figure:
    fig = figure(7.0, 3.2)
    ax = fig.add_subplot()
    bars = ax.barh(list(flag_counts)[::-1], list(flag_counts.values())[::-1], color="#c44e52")
    ax.bar_label(bars, labels=[f"{v} ({100 * v / n:.1f} %)" for v in list(flag_counts.values())[::-1]],
                 padding=3, fontsize=9)
    ax.set_xlabel("images flagged")
    ax.set_title(f"Quality flags ({n} images; an image may have several)")
    ax.margins(x=0.25)
    return fig


def _histogram(ax: Axes, values: np.ndarray, marks: list[tuple[float, str]], xlabel: str,
               clip_tail: bool = False) -> None:
    """Histogram of values with vertical threshold lines labelled in the legend.

    clip_tail folds a long upper tail into the last bin (at the 99.5th percentile).
    """
    if not len(values):
        _no_data(ax, "no readable images")
        return
    hi = float(np.percentile(values, 99.5)) if clip_tail else float(values.max())
    ax.hist(np.minimum(values, hi), bins=60, color="#4c72b0", alpha=0.85)
    for value, label in marks:
        ax.axvline(value, color="#c44e52", lw=2, ls="--", label=label)
    ax.set_xlabel(xlabel + (" (clipped at the 99.5th percentile)" if values.max() > hi else ""))
    ax.set_ylabel("images")
    ax.legend(fontsize=8)


def _metric(infos: list[ImageInfo], name: str) -> np.ndarray:
    return np.array([getattr(i.record, name) for i in infos if not i.record.error], float)


def blur_figure(infos: list[ImageInfo], t: Thresholds) -> Figure:
    values = _metric(infos, "blur_variance")
    fig = figure(7.5, 3.8)
    ax = fig.add_subplot()
    flagged = int((values < t.blur_below).sum())
    _histogram(ax, values, [(t.blur_below, f"blur threshold {t.blur_below:g} ({flagged} below: sharpened)")],
               "variance of the Laplacian (at 224 px)", clip_tail=True)
    ax.set_title("Blur distribution")
    return fig


def brightness_stain_figure(infos: list[ImageInfo], t: Thresholds) -> Figure:
    fig = figure(11.0, 3.6)
    left, right = fig.subplots(1, 2)
    _histogram(left, _metric(infos, "brightness"),
               [(t.dark_below, f"too dark below {t.dark_below:g}"), (t.bright_above, f"too bright above {t.bright_above:g}")],
               "mean gray level")
    left.set_title("Brightness")
    _histogram(right, _metric(infos, "stain_fraction"), [(t.stain_below, f"no stain below {t.stain_below:g}")],
               "fraction of MGG-stained pixels")
    right.set_title("Stain")
    return fig


def blurriest_figure(infos: list[ImageInfo], t: Thresholds) -> Figure:
    """The blurriest readable cells (top row) and the same after unsharp masking (bottom row)."""
    readable = sorted((i for i in infos if not i.record.error), key=lambda i: i.record.blur_variance)
    shown = readable[:BLURRIEST_SHOWN]
    fig = figure(1.9 * max(3, len(shown)) + 0.6, 4.4)
    if not shown:
        _no_data(fig.add_subplot(), "no readable images")
        return fig
    axes = fig.subplots(2, len(shown), squeeze=False)
    for c, info in enumerate(shown):
        rgb = decode_path(info.path).rgb
        sharp = unsharp_mask(rgb, t.unsharp_amount, t.unsharp_sigma)
        after = measure(sharp, t)["blur_variance"]
        _cell_axes(axes[0, c], rgb, f"{info.rel}\nvar {info.record.blur_variance:.1f}",
                   "before" if c == 0 else "")
        _cell_axes(axes[1, c], sharp, f"var {after:.1f}", "after unsharp mask" if c == 0 else "")
    fig.suptitle(f"Blurriest cells, before and after unsharp masking "
                 f"(amount {t.unsharp_amount:g}, sigma {t.unsharp_sigma:g})", fontsize=10)
    return fig


def counts_figure(counts: Counter, title: str, xlabel: str, top: int = 12) -> Figure:
    """Horizontal bars of the most common values of a Counter."""
    items = counts.most_common(top)
    fig = figure(7.0, 1.2 + 0.35 * max(1, len(items)))
    ax = fig.add_subplot()
    if not items:
        _no_data(ax, "no readable images")
        return fig
    bars = ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#55a868")
    ax.bar_label(bars, padding=3, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_title(title + (f" (top {top} of {len(counts)})" if len(counts) > top else ""))
    ax.margins(x=0.15)
    return fig


def _write_csv(infos: list[ImageInfo], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for i in infos:
            row = i.record.as_dict()
            row.update({"class": i.code, "file": i.rel, "sha256": i.sha256, "mode": i.mode,
                        "flags": ";".join(i.flags)})
            writer.writerow(row)


def run_eda(data_dir: str | Path, out_dir: str | Path, thresholds_path: str | Path | None = None,
            progress: bool = True) -> dict:
    """Write the report (index.html, figures, quality.csv, summary.json); return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = Thresholds.load(thresholds_path)
    infos = inspect_dataset(data_dir, t, progress)
    n = len(infos)
    readable = [i for i in infos if not i.record.error]
    class_counts = {c: sum(i.code == c for i in infos) for c in taxonomy_codes([data_dir])}
    flag_counts = {f: sum(f in i.flags for i in infos) for f in FLAGS}
    sizes = Counter(f"{i.record.width}×{i.record.height}" for i in readable)
    color_types = Counter(i.color_type for i in readable)
    groups = duplicate_groups(infos)

    figures = {
        "class_bar": save_figure(class_bar_figure(class_counts), out, "class_counts_bar.png"),
        "class_pie": save_figure(class_pie_figure(class_counts), out, "class_counts_pie.png"),
        "preview": save_figure(preview_figure(infos), out, "preview_grid.png"),
        "flags": save_figure(flags_figure(flag_counts, n), out, "quality_flags.png"),
        "blur": save_figure(blur_figure(infos, t), out, "blur_distribution.png"),
        "brightness_stain": save_figure(brightness_stain_figure(infos, t), out, "brightness_stain.png"),
        "blurriest": save_figure(blurriest_figure(infos, t), out, "blurriest_unsharp.png"),
        "sizes": save_figure(counts_figure(sizes, "Image sizes", "images"), out, "image_sizes.png"),
        "color_types": save_figure(counts_figure(color_types, "Colour types (format, mode)", "images"),
                                   out, "color_types.png"),
    }
    _write_csv(infos, out / "quality.csv")
    summary = {
        "data_dir": str(data_dir),
        "n_images": n,
        "classes": class_counts,
        "flags": flag_counts,
        "sizes": dict(sizes.most_common()),
        "color_types": dict(color_types.most_common()),
        "duplicates": sum(len(g) - 1 for g in groups),
        "duplicate_groups": len(groups),
        "figures": sorted(figures.values()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    corrupt = [i for i in infos if i.record.error]
    render_page("eda.html", out, title=f"Dataset report: {Path(data_dir).name}", s=summary, figures=figures,
                thresholds=t, corrupt=corrupt[:LISTED_MAX], n_corrupt=len(corrupt),
                groups=groups[:LISTED_MAX], names={c: NAMES[c] for c in CODES})
    return summary
