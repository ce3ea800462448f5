"""Export a checkpoint for the torch-free CPU backends (`marrow export`, `python -m app.ml.export`).

Writes into the model cache, per weights file (named by the file's SHA-256) and graph layout:
- `<digest>-pad16.onnx`: the channel-padded network (`channel_pad`) with two outputs, the logits
  and the last-stage feature map (Grad-CAM is computed from it, see `gradcam`), checked against
  the network itself (≤ 1e-4 relative) before it is kept;
- `<digest>-pad16.json`: what a worker needs without importing torch: the classifier weight's
  name in `model.safetensors` (read with safetensors' numpy API), the input size, the checks;
- `<digest>-pad16.probe.npz`: the fp32 reference on the probe cells (`probe`): PyTorch eager's
  logits and top-class Grad-CAM maps, which every backend is verified against when it loads.

This is the only place the CPU product needs PyTorch: a worker whose cache lacks the files runs
this module in a child process (`backends.ensure_exported`), so torch and timm never enter the
worker's own memory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from app.ml import channel_pad, preprocess, probe
from app.ml.card import SHIPPED_MODEL, WEIGHTS_FILE, require_checkpoint
from app.ml.cache import graph_paths
from app.ml.checkpoint import load_checkpoint

VERIFY_TOLERANCE = 1e-4  # relative to the outputs' scale: float32 summation order alone differs by ~1e-6


class LogitsAndFeatures(torch.nn.Module):
    """Exposes the last convolutional stage beside the logits (one forward for both)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        feats = self.model.forward_features(x)
        return self.model.forward_head(feats), feats


def relative_error(want: tuple[torch.Tensor, ...], got: tuple[torch.Tensor, ...]) -> float:
    """Largest difference between two sets of outputs, relative to the reference's scale."""
    return max(float((a - b).abs().max() / (1 + a.abs().max())) for a, b in zip(want, got))


def exported_network(network: LogitsAndFeatures, input_size: int) -> tuple[torch.nn.Module, float | None]:
    """What goes to ONNX: ReXNet with its channels padded (same outputs, faster on CPU, see
    `channel_pad`), checked against the network itself on a probe input; other architectures
    as they are. Returns the module and the padded network's relative error (None: not padded)."""
    try:
        padded = channel_pad.pad_channels(network.model)
    except TypeError:  # not a ReXNet: exported as it is
        return network, None
    wrapped = LogitsAndFeatures(padded).eval()
    x = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        err = relative_error(network(x), wrapped(x))
    if err > VERIFY_TOLERANCE:
        raise RuntimeError(f"the channel-padded network differs by {err:.2g} (relative)")
    return wrapped, err


def classifier_key(model: torch.nn.Module) -> str:
    """The name of the classifier's weight in the state dict (e.g. `head.fc.weight`)."""
    weight = model.get_classifier().weight
    for name, p in model.named_parameters():
        if p is weight:
            return name
    raise RuntimeError("the classifier's weight is not a named parameter of the network")


def probe_reference(network: torch.nn.Module, fc_weight: np.ndarray, card) -> dict[str, np.ndarray]:
    """fp32 eager outputs on the probe cells: logits and the top-class Grad-CAM maps (h×w,
    before scaling), the two things the product reads from a forward pass."""
    batch = preprocess.to_batch(probe.probe_cells(), card.input_size, card.mean, card.std)
    with torch.inference_mode():
        logits, feats = (t.float().numpy() for t in network(torch.from_numpy(batch)))
    return {"logits": logits, "cams": raw_cams(feats, fc_weight, logits.argmax(1))}


def raw_cams(features: np.ndarray, fc_weight: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """ReLU(Σ_k W[c,k]·F_k) at the feature map's resolution (see `gradcam`)."""
    return np.maximum(np.einsum("nk,nkhw->nhw", fc_weight[np.asarray(targets)], features.astype(np.float32)), 0)


def export(model_dir: str | Path = SHIPPED_MODEL, cache_dir: str | Path | None = None,
           force: bool = False, log=lambda s: print(s, file=sys.stderr, flush=True)) -> Path:
    """Write the cached graph, its description and the probe reference; returns the graph's path."""
    model_dir = require_checkpoint(model_dir)
    cache_dir = Path(cache_dir) if cache_dir else model_dir / ".cache"
    paths = graph_paths(model_dir / WEIGHTS_FILE, cache_dir)
    if not force and all(p.is_file() for p in (paths.onnx, paths.meta, paths.probe)):
        return paths.onnx
    t0 = time.perf_counter()
    model, card = load_checkpoint(model_dir, "cpu")
    network = LogitsAndFeatures(model).eval()
    graph, pad_err = exported_network(network, card.input_size)
    key = classifier_key(model)
    fc_weight = model.get_classifier().weight.detach().float().numpy()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{paths.onnx}.{os.getpid()}.tmp")
    size = card.input_size
    torch.onnx.export(graph, torch.zeros(1, 3, size, size), str(tmp),
                      input_names=["input"], output_names=["logits", "features"],
                      dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}, "features": {0: "n"}},
                      opset_version=17, dynamo=False)
    reference = probe_reference(network, fc_weight, card)
    tmp_probe = Path(f"{paths.probe}.{os.getpid()}.tmp.npz")
    np.savez(tmp_probe, **reference)
    meta = {"weights_sha256_16": paths.digest, "layout": paths.layout, "architecture": card.architecture,
            "input_size": card.input_size, "classes": len(card.classes), "classifier_key": key,
            "channel_padding_relative_error": pad_err, "torch": torch.__version__,
            "probe_cells": len(reference["logits"])}
    tmp_meta = Path(f"{paths.meta}.{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, paths.onnx)  # the graph first: a reader takes the three only when meta is there
    os.replace(tmp_probe, paths.probe)
    os.replace(tmp_meta, paths.meta)
    log(f"exported {model_dir} -> {paths.onnx} in {time.perf_counter() - t0:.1f} s")
    return paths.onnx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.ml.export", description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("cache_dir", type=Path)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    export(args.model_dir, args.cache_dir, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
