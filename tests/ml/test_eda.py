"""`marrow eda` on a small dataset: every figure written and linked, the counts right."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
from PIL import Image

from app.cli import main

FIGURES = {"class_counts_bar.png", "class_counts_pie.png", "preview_grid.png", "quality_flags.png",
           "blur_distribution.png", "brightness_stain.png", "blurriest_unsharp.png", "image_sizes.png",
           "color_types.png"}


def test_eda_writes_every_figure_and_counts(small_dataset, tmp_path, capsys):
    data = small_dataset(2, ("BLA", "EOS", "LYT", "MON", "NGS", "NIF"))
    shutil.copy(next((data / "BLA").glob("*.jpg")), data / "MON" / "copy_of_bla.jpg")  # cross-class duplicate
    (data / "EOS" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff truncated")
    gray = np.asarray(Image.open(next((data / "LYT").glob("*.jpg"))).convert("L").resize((300, 200)))
    Image.fromarray(gray).save(data / "LYT" / "gray.png")
    out = tmp_path / "eda"

    assert main(["eda", str(data), "--out", str(out)]) == 0
    assert "index.html" in capsys.readouterr().out

    html = (out / "index.html").read_text()
    linked = set(re.findall(r'src="([^"]+\.png)"', html))
    assert linked == FIGURES
    for name in FIGURES:
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert Image.open(png).size[0] > 300, name

    s = json.loads((out / "summary.json").read_text())
    assert s["n_images"] == 15
    assert s["classes"] == {"BLA": 2, "EOS": 3, "LYT": 3, "MON": 3, "NGS": 2, "NIF": 2, "PMO": 0}
    assert s["duplicates"] == 1 and s["duplicate_groups"] == 1
    assert s["flags"]["corrupt"] == 1
    assert s["flags"]["grayscale"] == 1
    assert s["sizes"] == {"250×250": 13, "300×200": 1}
    assert s["color_types"]["PNG L (grayscale)"] == 1
    assert sorted(s["figures"]) == sorted(FIGURES)
    assert "copy_of_bla.jpg" in html and "corrupt.jpg" in html
    assert len((out / "quality.csv").read_text().splitlines()) == 1 + 15


def test_eda_rejects_folders_that_are_not_class_codes(small_dataset, tmp_path, capsys):
    data = small_dataset(1, ("NGS",))
    (data / "misc").mkdir()
    assert main(["eda", str(data), "--out", str(tmp_path / "eda")]) == 2
    assert "misc" in capsys.readouterr().err
