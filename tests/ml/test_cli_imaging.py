"""`marrow qc`, `marrow classify` and `marrow calibrate-qc` on folders of real cells (and a bad file)."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from app.cli import main
from app.ml.card import SHIPPED_MODEL


@pytest.fixture
def mixed_folder(real_cells_dir, tmp_path):
    root = tmp_path / "case"
    (root / "nested").mkdir(parents=True)
    for code, dest in (("EOS", root), ("NGS", root), ("LYT", root / "nested")):
        src = sorted((real_cells_dir / code).glob("*.jpg"))[0]
        shutil.copy(src, dest / src.name)
    (root / "notes.jpg").write_text("this is not an image")
    return root


def read_rows(path):
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_qc_reports_every_file_and_fails_on_the_bad_one(mixed_folder, tmp_path, capsys):
    out = tmp_path / "qc.csv"
    assert main(["qc", str(mixed_folder), "--csv", str(out)]) == 1
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in read_rows(out)}
    assert len(rows) == 4
    assert rows["notes.jpg"]["error"] == "not an image"
    good = [r for name, r in rows.items() if name != "notes.jpg"]
    assert all(r["color_type"] == "color" and float(r["blur_variance"]) > 0 for r in good)
    assert "notes.jpg: not an image" in capsys.readouterr().err


def test_classify_writes_rows_and_overlays_and_names_the_bad_file(mixed_folder, tmp_path, capsys):
    out, cams = tmp_path / "cells.csv", tmp_path / "gradcam"
    assert main(["classify", str(mixed_folder), "--csv", str(out), "--gradcam", str(cams)]) == 1
    rows = read_rows(out)
    assert len(rows) == 4
    bad = [r for r in rows if r["file"].endswith("notes.jpg")]
    assert bad[0]["error"] == "not an image" and bad[0]["top1"] == ""
    good = [r for r in rows if not r["error"]]
    assert len(good) == 3
    codes = {c["code"] for c in json.loads((SHIPPED_MODEL / "model_card.json").read_text())["classes"]}
    for r in good:
        assert r["top1"] in codes
        # label: what the product counts (the top class) or UNK with the reason
        assert (r["label"] == r["top1"] and not r["unidentified"]) or (r["label"] == "UNK" and r["unidentified"])
        assert 0 < float(r["probability"]) <= 1 and len(r["top3"].split()) == 3
    assert len(list(cams.glob("*.png"))) == 3
    assert "notes.jpg: not an image" in capsys.readouterr().err


def test_classify_of_good_files_exits_zero(mixed_folder, tmp_path):
    (mixed_folder / "notes.jpg").unlink()
    assert main(["classify", str(mixed_folder), "--csv", str(tmp_path / "ok.csv")]) == 0


def test_calibrate_qc_writes_thresholds_that_sharpen_the_blurriest_30_percent(real_cells_dir, tmp_path):
    """Thresholds derived from 40 labelled cells, then `marrow qc` with them over the same
    cells: the blurriest 30 % are flagged (and so sharpened), no cell is called dark, bright or
    unstained."""
    data = tmp_path / "cells"
    for code in ("LYT", "NGS"):
        (data / code).mkdir(parents=True)
        for src in sorted((real_cells_dir / code).glob("*.jpg"))[:20]:
            shutil.copy(src, data / code / src.name)
    out = tmp_path / "thresholds.json"
    assert main(["calibrate-qc", str(data), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["n_images"] == 40 and doc["calibrated_on"] == "cells"
    t = doc["thresholds"]
    assert 0 < t["dark_below"] < t["bright_above"] < 255 and 0 < t["stain_below"] < 1 and t["blur_below"] > 0
    rows = tmp_path / "qc.csv"
    assert main(["qc", str(data), "--thresholds", str(out), "--csv", str(rows)]) == 0
    flags = [r["flags"] for r in read_rows(rows)]
    assert len(flags) == 40
    assert sum("blurry" in f for f in flags) == 12  # below the 30th percentile of 40: 12 cells
    assert not any(word in f for f in flags for word in ("too_dark", "too_bright", "no_stain"))


def test_classify_on_cuda_without_a_gpu_says_so(mixed_folder, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert main(["classify", str(mixed_folder), "--device", "cuda", "--csv", str(tmp_path / "c.csv")]) == 2
    err = capsys.readouterr().err
    assert "marrow classify: error: the CUDA device was asked for (--device cuda or MARROW_DEVICE=cuda)" in err
    assert not (tmp_path / "c.csv").exists()
