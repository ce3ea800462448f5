"""Zero-pad ReXNet's channel counts to SIMD-friendly multiples before the ONNX export.

ReXNet grows its width by a fraction per block, so almost every layer has an odd channel count
(29, 37, 41, 75, 113, ...). ONNX Runtime's CPU convolutions use a blocked channel layout (8
channels per AVX2 register, 16 per AVX-512) and fall back to slower kernels when a channel
count is not a multiple of the block. Padding every hidden tensor with channels that are
exactly zero gives the same logits and features (every padded weight, bias and BatchNorm shift
is zero, and SiLU, ReLU, ReLU6 all map 0 to 0) and ran the network ~20 % faster on one thread
here (41 -> 33 ms per cell at 224 px; see docs/bench-ml.md).

Only ReXNet is padded: the block's partial residual (`x[:, :in_channels] + shortcut`) is the
one place the padding must be taught about, and other architectures are exported as they are.
"""
from __future__ import annotations

import copy
import math

import torch
from timm.models.rexnet import LinearBottleneck, RexNet

from app.ml.channel_pad_layout import CHANNEL_MULTIPLE


def _padded(channels: int, multiple: int) -> int:
    return channels if channels == 3 else math.ceil(channels / multiple) * multiple


def _pad_conv(conv: torch.nn.Conv2d, multiple: int) -> torch.nn.Conv2d:
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels
    if conv.groups > 1 and not depthwise:
        raise ValueError(f"cannot pad a grouped convolution with {conv.groups} groups")
    cin, cout = _padded(conv.in_channels, multiple), _padded(conv.out_channels, multiple)
    out = torch.nn.Conv2d(cin, cout, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                          groups=cin if depthwise else 1, bias=conv.bias is not None,
                          padding_mode=conv.padding_mode)
    with torch.no_grad():
        out.weight.zero_()
        out.weight[:conv.out_channels, :conv.weight.shape[1]] = conv.weight
        if conv.bias is not None:
            out.bias.zero_()
            out.bias[:conv.out_channels] = conv.bias
    return out


def _pad_norm(bn: torch.nn.BatchNorm2d, multiple: int) -> torch.nn.BatchNorm2d:
    """A copy (keeping timm's fused activation) whose extra channels map 0 to 0."""
    out = copy.deepcopy(bn)
    size = _padded(bn.num_features, multiple)
    out.num_features = size
    for name, fill in (("weight", 0.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
        old = getattr(bn, name)
        new = torch.full((size,), fill, dtype=old.dtype)
        new[:bn.num_features] = old.detach()
        setattr(out, name, torch.nn.Parameter(new, requires_grad=False)
                if isinstance(old, torch.nn.Parameter) else new)
    return out


def pad_channels(model: torch.nn.Module, multiple: int = CHANNEL_MULTIPLE) -> torch.nn.Module:
    """An eval-mode copy of a timm ReXNet with every hidden channel count a multiple of
    `multiple`; the input (3 channels) and the classifier are unchanged."""
    if not isinstance(model, RexNet):
        raise TypeError(f"channel padding is defined for ReXNet only, not {type(model).__name__}")
    padded = copy.deepcopy(model).eval()
    for module in list(padded.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Conv2d):
                setattr(module, name, _pad_conv(child, multiple))
            elif isinstance(child, torch.nn.BatchNorm2d):
                setattr(module, name, _pad_norm(child, multiple))
        if isinstance(module, LinearBottleneck):  # the residual adds to the first in_channels
            module.in_channels = _padded(module.in_channels, multiple)
            module.out_channels = _padded(module.out_channels, multiple)
    features = padded.get_classifier().in_features
    if _padded(features, multiple) != features:
        raise ValueError(f"the last stage's {features} channels would need padding as well")
    return padded
