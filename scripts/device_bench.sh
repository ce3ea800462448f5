#!/usr/bin/env bash
# The GPU figures issue 14 asks for, in one call on the lent device machine (docs/bench-ml.md, "GPU"):
# `marrow bench --device cuda` (fp32 and bf16 autocast against the naive loop) and the 500-cell
# case end to end (`MARROW_DEVICE=cuda marrow bench-app`). Prepare here first:
#   .venv/bin/python scripts/device_pack.py      # .whl (the app's missing packages), .devdata/cells
# then run(command="bash scripts/device_bench.sh", carry=[".whl", ".devdata"], timeout_s=480).
# JSON and logs go to $OUT (the device's return folder), else var/device.
# DEVICE=cpu N=32 runs the same steps on a machine without a GPU (a dry run of the packing).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-var/device}
DEVICE=${DEVICE:-cuda}
N=${N:-256}  # cells for marrow bench
SITE=${SITE:-/tmp/marrow-site}
CELLS=.devdata/cells
mkdir -p "$OUT"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
  || { echo "installing the carried wheels failed" >&2; exit 1; }
export PYTHONPATH=$PWD:$SITE PYTHONUNBUFFERED=1
export MARROW_DATA_DIR=${MARROW_DATA_DIR:-/tmp/marrow-var}  # the model cache; bench-app's app runs in a folder of its own
marrow() { python3 -c "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }

{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  nproc
  python3 -c "import sys, torch, timm, cv2, onnxruntime, numpy
print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(),
      'timm', timm.__version__, 'opencv', cv2.__version__, 'onnxruntime', onnxruntime.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee "$OUT/machine.txt"

status=0
marrow bench --device "$DEVICE" --n "$N" --data "$CELLS" --json "$OUT/bench-$DEVICE.json" 2>&1 \
  | tee "$OUT/bench-$DEVICE.log" || status=1
MARROW_DEVICE=$DEVICE marrow bench-app --cells 500 --rounds 1 --data-dir "$CELLS" \
  --json "$OUT/bench-app-$DEVICE.json" 2>&1 | tee "$OUT/bench-app-$DEVICE.log" || status=1
exit $status
