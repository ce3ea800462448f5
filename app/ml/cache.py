"""Where the exported graph of a weights file lives in the model cache (torch-free).

Files are named by the first 16 hex digits of the weights file's SHA-256 and the graph layout,
so new weights or a new layout are exported again and never mixed up with old ones.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from app.ml.channel_pad_layout import LAYOUT


@dataclass(frozen=True)
class GraphPaths:
    digest: str
    layout: str
    onnx: Path  # the channel-padded graph (logits, features)
    meta: Path  # classifier key, input size, checks (written last: its presence means complete)
    probe: Path  # the fp32 reference on the probe cells
    int8_xml: Path  # the NNCF-quantised OpenVINO model (`marrow quantize`), when made
    int8_report: Path  # its validation report, which says whether it ships

    def exported(self) -> bool:
        return self.meta.is_file() and self.onnx.is_file() and self.probe.is_file()


def weights_digest(weights: Path) -> str:
    with open(weights, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def graph_paths(weights: Path, cache_dir: Path) -> GraphPaths:
    digest = weights_digest(Path(weights))
    stem = Path(cache_dir) / f"{digest}-{LAYOUT}"
    return GraphPaths(digest, LAYOUT, stem.with_suffix(".onnx"), stem.with_suffix(".json"),
                      Path(f"{stem}.probe.npz"), Path(f"{stem}-int8.xml"), Path(f"{stem}-int8.json"))
