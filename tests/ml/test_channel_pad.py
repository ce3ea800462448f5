"""The channel-padded ReXNet the CPU fast path exports computes what the network computes."""
from __future__ import annotations

import pytest
import timm
import torch

from app.ml.channel_pad import CHANNEL_MULTIPLE, pad_channels


@pytest.fixture(scope="module")
def trained_like_rexnet() -> torch.nn.Module:
    """ReXNet-150 with non-trivial BatchNorm statistics and shifts, as after training (a fresh
    network's running mean 0 / var 1 would hide a padded BatchNorm that shifts zeros)."""
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model("rexnet_150", num_classes=7)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


def test_every_hidden_channel_count_is_padded(trained_like_rexnet):
    odd = [m.out_channels for m in trained_like_rexnet.modules()
           if isinstance(m, torch.nn.Conv2d) and m.out_channels % CHANNEL_MULTIPLE]
    assert len(odd) > 20  # ReXNet-150 really has many odd widths (29, 37, 41, ...)
    padded = pad_channels(trained_like_rexnet)
    for m in padded.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert m.out_channels % CHANNEL_MULTIPLE == 0
            assert m.in_channels == 3 or m.in_channels % CHANNEL_MULTIPLE == 0
    assert padded.get_classifier().out_features == 7


def test_padded_network_gives_the_same_logits_and_features(trained_like_rexnet):
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    padded = pad_channels(trained_like_rexnet)
    with torch.inference_mode():
        want, got = trained_like_rexnet.forward_features(x), padded.forward_features(x)
        # only float summation order differs (features reach ~10; 1e-5 is float32's noise there)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(padded.forward_head(got), trained_like_rexnet.forward_head(want),
                                   rtol=1e-4, atol=1e-4)
    # the original is left as it was
    assert any(m.out_channels == 29 for m in trained_like_rexnet.modules() if isinstance(m, torch.nn.Conv2d))


def test_other_architectures_are_refused():
    with pytest.raises(TypeError, match="ReXNet only"):
        pad_channels(timm.create_model("resnet18", num_classes=7))
