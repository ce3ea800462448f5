"""`marrow evaluate` end to end on a few real cells with a random-weights checkpoint."""
from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from app.cli import main
from app.ml.evaluate import evaluate
from app.ml.card import CODES

KEYS = {"accuracy", "macro_f1", "per_class", "confusion_matrix", "classes", "n_images", "model_version", "ece"}
PRESENT = tuple(c for c in CODES if c != "PMO")  # PMO left out: allowed, support 0


def test_evaluate_json_table_and_report(small_dataset, random_checkpoint, tmp_path, capsys):
    data = small_dataset(3, PRESENT)
    out, report = tmp_path / "metrics.json", tmp_path / "report"
    rc = main(["evaluate", str(data), "--model", str(random_checkpoint), "--json", str(out),
               "--report", str(report), "--top-wrong", "4"])
    assert rc == 0
    m = json.loads(out.read_text())
    assert KEYS <= set(m)
    # the product's decision: every readable cell is either sent to UNK or counted
    assert 0.0 <= m["unk_rate"] <= 1.0 and m["n_counted"] == round(m["n_images"] * (1 - m["unk_rate"]))
    assert [p["coverage"] for p in m["coverage_curve"]][0] == 1.0
    assert m["coverage_curve"][0]["accuracy"] == m["accuracy"]
    assert m["classes"] == list(CODES)
    assert m["n_images"] == 18
    assert m["model_version"] == "it-random"
    assert {c: m["per_class"][c]["support"] for c in CODES} == {**{c: 3 for c in PRESENT}, "PMO": 0}
    assert set(m["per_class"]["BLA"]) == {"precision", "recall", "f1", "support"}

    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == 18
    assert cm.sum(axis=1).tolist() == [m["per_class"][c]["support"] for c in CODES]
    assert m["accuracy"] == np.trace(cm) / 18
    for i, c in enumerate(CODES):
        if cm[:, i].sum():
            assert m["per_class"][c]["precision"] == cm[i, i] / cm[:, i].sum()
        if cm[i].sum():
            assert m["per_class"][c]["recall"] == cm[i, i] / cm[i].sum()
    assert m["macro_f1"] == np.mean([m["per_class"][c]["f1"] for c in PRESENT])
    assert 0.0 <= m["ece"] <= 1.0

    printed = capsys.readouterr().out
    assert "confusion matrix" in printed and all(c in printed for c in CODES)

    html = (report / "index.html").read_text()
    linked = set(re.findall(r'src="([^"]+\.png)"', html))
    assert {"confusion_matrix.png", "per_class.png", "reliability.png"} <= linked
    wrong = {p for p in linked if p.startswith("wrong/")}
    assert len(wrong) == 2 * min(4, 18 - np.trace(cm))
    assert all((report / p).stat().st_size > 0 for p in linked)


def test_unreadable_files_are_listed_not_counted_and_tiff_is_read(small_dataset, random_checkpoint, tmp_path):
    data = small_dataset(2, ("LYT", "NGS"))
    (data / "LYT" / "broken.jpg").write_bytes(b"not an image")
    cell = Image.open(next((data / "NGS").glob("*.jpg")))
    cell.resize((320, 280)).save(data / "NGS" / "other_lab.tif")
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(data), "--model", str(random_checkpoint), "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["unreadable"] == ["LYT/broken.jpg"]
    assert m["n_images"] == 5
    assert m["per_class"]["NGS"]["support"] == 3


def test_folder_that_is_not_a_class_code_is_an_error(small_dataset, random_checkpoint, tmp_path, capsys):
    data = small_dataset(1, ("BLA",))
    (data / "Artefacts").mkdir()
    rc = main(["evaluate", str(data), "--model", str(random_checkpoint), "--json", str(tmp_path / "m.json")])
    assert rc == 2
    assert "Artefacts" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_gallery_keeps_the_most_confidently_wrong(small_dataset, random_checkpoint):
    ev = evaluate(small_dataset(2), random_checkpoint, top_wrong=3, progress=False)
    pred, conf = ev.probs.argmax(1), ev.probs.max(1)
    wrong_conf = np.sort(conf[pred != ev.labels])[::-1][:3]
    assert [w.confidence for w in ev.wrong] == list(wrong_conf.astype(float))
    assert all(w.true != w.predicted and w.cam.shape == w.image.shape[:2] for w in ev.wrong)


def test_shifts_evaluate_the_same_cells_again(small_dataset, random_checkpoint, tmp_path, capsys):
    """`--shifts`: every named scanner/stain shift is measured on the same readable cells; the
    keys of a plain evaluation are unchanged."""
    from app.ml.shifts import SHIFTS

    data = small_dataset(1, ("BLA", "EOS", "LYT"))
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(data), "--model", str(random_checkpoint), "--json", str(out),
                 "--shifts", "wider_field", "paler_stain"]) == 0
    m = json.loads(out.read_text())
    assert KEYS | {"shifts"} <= set(m) and list(m["shifts"]) == ["wider_field", "paler_stain"]
    for s in m["shifts"].values():
        assert set(s) == {"description", "accuracy", "macro_f1", "ece", "same_top1", "unk_rate",
                          "macro_f1_counted"} and s["description"]
        assert 0.0 <= s["accuracy"] <= 1.0 and s["same_top1"] in (0.0, 1 / 3, 2 / 3, 1.0)
        assert s["unk_rate"] in (0.0, 1 / 3, 2 / 3, 1.0)  # the share of the 3 shifted cells sent to UNK
    assert "under scanner/stain shifts" in capsys.readouterr().out

    assert main(["evaluate", str(data), "--model", str(random_checkpoint), "--json", str(out), "--shifts"]) == 0
    assert list(json.loads(out.read_text())["shifts"]) == list(SHIFTS)


def test_each_shift_changes_the_cell_but_keeps_it_an_rgb_image(real_cells_dir):
    from app.ml.decode import decode_bytes, decode_path
    from app.ml.shifts import SHIFTS, shifted_bytes

    cell = decode_path(next((real_cells_dir / "EOS").glob("*.jpg"))).rgb
    for name in SHIFTS:
        out = decode_bytes(shifted_bytes(cell, name))
        assert out.ok and out.format == ("TIFF" if name == "tiff_400" else "PNG") and out.rgb.ndim == 3, name
        same_size = out.rgb.shape == cell.shape
        assert not same_size or np.abs(out.rgb.astype(int) - cell).mean() > 1.0, f"{name} changed nothing"
    assert decode_bytes(shifted_bytes(cell, "wider_field")).rgb.shape[0] > cell.shape[0]
    assert decode_bytes(shifted_bytes(cell, "tighter_crop")).rgb.shape[0] < cell.shape[0]


def test_an_unknown_shift_is_refused_by_name(small_dataset, random_checkpoint, tmp_path):
    import pytest

    with pytest.raises(ValueError, match="unknown shift.*sepia.*known: wider_field"):
        evaluate(small_dataset(1, ("BLA",)), random_checkpoint, shifts=["sepia"], progress=False)
