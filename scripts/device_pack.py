"""Pack what `scripts/device_bench.sh` needs beside the working tree on the lent GPU machine.

The device machine (an H200 with CUDA PyTorch, Python 3.12, no network) receives the tracked
tree, 64 MiB in all with what is carried. This puts in the two ignored folders it carries:
- `.whl/`: wheels of the app's dependencies that image lacks, at the versions in this `.venv`
  (the heavy native ones, PyTorch, NumPy, OpenCV, ONNX Runtime, ..., come from the image);
- `.devdata/cells/`: real cells, one folder per class, for `marrow bench` and `bench-app`
  (`../shared` beside the checkout does not travel).
It then says whether the whole fits, and the `run` call to make. Usage (docs/bench-ml.md, "GPU"):
    .venv/bin/python scripts/device_pack.py [--cells 520] [--source ../shared/data/pbc]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20  # what one device call may send: the tree and the carried folders
CARRY = (".whl", ".devdata")
# Distributions the device image has (its package list, 2026-11-17) and the app needs, or that a
# GPU worker never imports (OpenVINO, PostgreSQL's driver): not carried.
FROM_THE_IMAGE = {
    "torch", "torchvision", "triton", "numpy", "scipy", "opencv-python-headless", "onnx", "onnxruntime",
    "protobuf", "ml-dtypes", "flatbuffers", "pillow", "matplotlib", "contourpy", "kiwisolver", "fonttools",
    "cycler", "pyparsing", "scikit-learn", "joblib", "threadpoolctl", "sympy", "mpmath", "networkx",
    "fsspec", "timm", "huggingface-hub", "hf-xet", "safetensors", "pyyaml", "psutil", "packaging",
    "setuptools", "narwhals", "openvino", "openvino-telemetry", "psycopg", "psycopg-binary", "marrowdiff",
}
SOURCE_ONLY = {"grad-cam"}  # on PyPI as a source archive only: built here into a pure-Python wheel
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def to_carry(root: str = "marrowdiff") -> list[str]:
    """name==version of every distribution the app needs at run time (its installed requirements,
    followed through, extras left out) that the device image does not provide."""
    versions: dict[str, str] = {}
    todo = [root]
    while todo:
        name = _norm(todo.pop())
        if name in versions:
            continue
        dist = metadata.distribution(name)
        versions[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(f"{n}=={v}" for n, v in versions.items()
                  if n not in FROM_THE_IMAGE and not n.startswith(("nvidia-", "cuda-")))


def download(requirements: list[str], dest: Path, python: str) -> None:
    """Wheels for the device's Python into `dest` (from PyPI; built here where PyPI has none)."""
    built = [r for r in requirements if _norm(Requirement(r).name) in SOURCE_ONLY]
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", python,
                    "--implementation", "cp", *platforms, "-d", str(dest),
                    *(r for r in requirements if r not in built)], check=True)
    if built:
        subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(dest), *built], check=True)


def copy_cells(source: Path, n: int, dest: Path) -> int:
    """`n` cells picked as the benches pick them, kept in their class folders; their bytes."""
    from app.bench.cells import pick_cells

    total = 0
    for path in pick_cells(source, n, distinct=True):
        target = dest / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        total += target.stat().st_size
    return total


def tree_bytes() -> tuple[int, list[tuple[int, str]]]:
    """Bytes of the files a device call sends without `carry`, and the largest of them."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    sizes = [((REPO / p).stat().st_size, p) for p in listed if p and (REPO / p).is_file()]
    return sum(s for s, _ in sizes), sorted(sizes, reverse=True)[:3]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=520,
                        help="cells to carry (default 520: one 500-cell bench-app round and its warm-up)")
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "pbc",
                        help="real cells, one folder per class (default ../shared/data/pbc, the smaller files)")
    parser.add_argument("--python", default="3.12", help="the device image's Python (default 3.12)")
    args = parser.parse_args()

    wheels, cells = REPO / ".whl", REPO / ".devdata" / "cells"
    for folder in (wheels, cells):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    requirements = to_carry()
    download(requirements, wheels, args.python)
    cell_bytes = copy_cells(args.source, args.cells, cells)
    tree, largest = tree_bytes()
    carried = sum(folder_bytes(REPO / c) for c in CARRY)
    print(f"{len(requirements)} wheels ({mib(folder_bytes(wheels))}), {args.cells} cells from {args.source} "
          f"({mib(cell_bytes)}); tree {mib(tree)}; in all {mib(tree + carried)} of {mib(LIMIT_BYTES)}")
    if tree + carried > LIMIT_BYTES:
        print("Too large for one device call. The largest tracked files: "
              + ", ".join(f"{p} ({mib(s)})" for s, p in largest)
              + ". Set the earlier model aside for the call (docs/bench-ml.md, \"GPU\") or carry fewer cells.")
        return 1
    print('Then: run(command="bash scripts/device_bench.sh", carry=[".whl", ".devdata"], timeout_s=480)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
