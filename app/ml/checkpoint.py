"""Checkpoint I/O: build a network, load and save a MarrowDiff checkpoint (weights + card).

A checkpoint is a directory holding `model.safetensors` and `model_card.json` (see `card`).
Loading never touches a network. timm's helpers do the reading: `create_model(checkpoint_path=)`
loads a checkpoint's weights strictly, `timm.models.load_state_dict` reads a .safetensors or
.pth file (unwrapping a `state_dict` key and a DataParallel `module.` prefix).
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from timm.models import load_state_dict

from app.ml import pretrained
from app.ml.card import CARD_FILE, CLASSES, DEFAULT_ARCH, WEIGHTS_FILE, ModelCard, require_checkpoint


def resolve_device(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the CUDA device was asked for (--device cuda or MARROW_DEVICE=cuda), "
                           "but PyTorch finds no CUDA device on this machine")
    return device


def build_model(arch: str = DEFAULT_ARCH, num_classes: int = len(CLASSES),
                init_weights: str | Path | None = None, hub: bool = False) -> torch.nn.Module:
    """A fresh network: random init, a local weights file (or a packaged name such as
    "efficientnet-lite0"), or (only when asked) timm's hub.

    A local file may be a classifier of another class count (e.g. ImageNet): its classifier is
    dropped and the rest loaded, and the count of loaded tensors is checked. (timm's
    `create_model(pretrained_cfg_overlay=dict(file=...))` drops a classifier only by comparing
    class counts with a hub config, and has no check of how much of the file fitted: not used.)
    """
    if hub:
        try:
            return timm.create_model(arch, pretrained=True, num_classes=num_classes)
        except Exception as exc:  # noqa: BLE001 - any network failure reads the same to the user
            raise RuntimeError(f"could not download pretrained {arch} weights from the timm hub "
                               f"({type(exc).__name__}: {exc}); this machine may be offline: "
                               f"pass a local weights file instead") from exc
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    if init_weights:
        own = model.state_dict()
        state = read_state(init_weights)
        if pretrained.is_lukemelas(state):
            state = pretrained.map_efficientnet_lite(state, model)
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if len(usable) < 0.9 * (len(own) - 2):
            raise ValueError(f"{init_weights}: only {len(usable)} of {len(own)} tensors match {arch}")
        model.load_state_dict(usable, strict=False)
    return model


def read_state(source: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a checkpoint dir, a .safetensors/.pth file, or a packaged name."""
    if str(source) in pretrained.PACKAGE_WEIGHTS:
        source = pretrained.package_weights_path(str(source))
    path = Path(source)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    return load_state_dict(str(path), use_ema=False, weights_only=True)


def save_checkpoint(model: torch.nn.Module, card: ModelCard, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    card.save(out / CARD_FILE)
    return out


def load_checkpoint(model_dir: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, ModelCard]:
    d = require_checkpoint(model_dir)
    card = ModelCard.load(d / CARD_FILE)
    model = timm.create_model(card.architecture, pretrained=False, num_classes=len(card.classes),
                              checkpoint_path=str(d / WEIGHTS_FILE))
    return model.to(resolve_device(device)).eval(), card
