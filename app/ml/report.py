"""PNG figures and one-page HTML reports for `marrow eda` and `marrow evaluate --report`.

Figures use matplotlib's object API on an explicit Agg canvas (no pyplot state, no display);
pages are jinja2 templates in `report_templates/` with autoescaping, so file names from a lab's
folder cannot inject markup.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import jinja2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from app.ml.metrics import reliability_bins

if TYPE_CHECKING:  # evaluation pulls in torch; `marrow eda` does not need it
    from app.ml.evaluate import Evaluation

TEMPLATES = Path(__file__).with_name("report_templates")
DPI = 110


def figure(width: float, height: float) -> Figure:
    """A new figure (inches) on an Agg canvas, laid out with constrained layout."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_dir: Path, name: str) -> str:
    """Write fig as out_dir/name (PNG) and return name, the page's relative link."""
    fig.savefig(out_dir / name, dpi=DPI)
    return name


def save_rgb(rgb: np.ndarray, out_dir: Path, name: str) -> str:
    """Write an RGB uint8 image as out_dir/name (PNG) and return name."""
    path = out_dir / name
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f"could not write {path}")
    return name


def render_page(template: str, out_dir: Path, **context) -> Path:
    """Render a template from report_templates/ to out_dir/index.html."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    html = env.get_template(template).render(generated=generated, **context)
    out = out_dir / "index.html"
    out.write_text(html, encoding="utf-8")
    return out


def confusion_matrix_figure(cm: np.ndarray, classes: list[str]) -> Figure:
    """Counts annotated, coloured by the share of each true class (row)."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    n = len(classes)
    fig = figure(1.2 + 0.75 * n, 0.9 + 0.7 * n)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.55 else "black")
    ax.set_xticks(range(n), classes)
    ax.set_yticks(range(n), [f"{c} ({int(r)})" for c, r in zip(classes, rows[:, 0])])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (support)")
    fig.colorbar(im, ax=ax, label="share of true class", shrink=0.8)
    return fig


def per_class_figure(per_class: dict, classes: list[str]) -> Figure:
    """Grouped precision / recall / F1 bars per class; classes without support are greyed."""
    fig = figure(max(6.0, 1.1 * len(classes)), 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    for k, (metric, colour) in enumerate((("precision", "#4c72b0"), ("recall", "#dd8452"), ("f1", "#55a868"))):
        ax.bar(x + (k - 1) * 0.27, [per_class[c][metric] for c in classes], 0.27, label=metric, color=colour)
    ax.set_xticks(x, [f"{c}\nn={per_class[c]['support']}" for c in classes])
    for i, c in enumerate(classes):
        if per_class[c]["support"] == 0:
            ax.axvspan(i - 0.45, i + 0.45, color="0.9", zorder=0)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def reliability_figure(probs: np.ndarray, labels: np.ndarray) -> Figure:
    """Accuracy against mean confidence per bin, with the count of cells per bin below."""
    bins = reliability_bins(probs, labels)
    centres = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = bins.edges[1] - bins.edges[0]
    filled = bins.counts > 0
    fig = figure(5.5, 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.bar(centres[filled], bins.accuracy[filled], width * 0.95, color="#4c72b0", label="accuracy")
    top.bar(centres[filled], bins.confidence[filled] - bins.accuracy[filled], width * 0.95,
            bottom=bins.accuracy[filled], color="#c44e52", alpha=0.35, label="gap to confidence")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability (ECE {bins.ece:.4f}, {len(bins.counts)} bins)")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, bins.counts, width * 0.95, color="0.5")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("top-1 confidence")
    bottom.set_ylabel("cells")
    return fig


def coverage_figure(curve: list[dict], unk_rate: float, accuracy_counted: float) -> Figure:
    """Accuracy of the most confident share of cells, and where the product's UNK rule sits."""
    fig = figure(5.5, 3.8)
    ax = fig.subplots()
    ax.plot([p["coverage"] for p in curve], [p["accuracy"] for p in curve], "o-", label="most confident share")
    ax.plot([1 - unk_rate], [accuracy_counted], "r*", ms=12, label="the product (cells not sent to UNK)")
    ax.invert_xaxis()
    ax.set_xlabel("coverage (share of cells counted)")
    ax.set_ylabel("accuracy of the counted cells")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def write_evaluation_report(ev: Evaluation, out_dir: str | Path) -> Path:
    """Figures, the confidently wrong gallery and index.html in out_dir."""
    from app.ml.gradcam import overlay_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = ev.metrics
    figs = {
        "confusion_matrix": save_figure(confusion_matrix_figure(np.array(m["confusion_matrix"]), m["classes"]),
                                        out, "confusion_matrix.png"),
        "per_class": save_figure(per_class_figure(m["per_class"], m["classes"]), out, "per_class.png"),
        "reliability": save_figure(reliability_figure(ev.probs, ev.labels), out, "reliability.png"),
        "coverage": save_figure(coverage_figure(m["coverage_curve"], m["unk_rate"], m["accuracy_counted"]),
                                out, "coverage.png"),
    }
    (out / "wrong").mkdir(exist_ok=True)
    gallery = []  # (cell, its PNG, its Grad-CAM overlay PNG)
    for i, w in enumerate(ev.wrong, 1):
        cam_png = f"wrong/{i:02d}_gradcam.png"
        (out / cam_png).write_bytes(overlay_png(w.image, w.cam))
        gallery.append((w, save_rgb(w.image, out, f"wrong/{i:02d}_cell.png"), cam_png))
    return render_page("evaluate.html", out, title="Model evaluation", m=m, figures=figs, wrong=gallery,
                       data_dir=str(ev.data_dir), temperature=f"{ev.temperature:g}")
