"""`marrow qc`, `marrow classify`, `marrow calibrate-qc`: quality and classification of image files."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from app.ml.card import SHIPPED_MODEL

QC_COLUMNS = ["file", "error", "format", "width", "height", "color_type", "brightness",
              "stain_fraction", "blur_variance", "flags", "repaired"]
CLASSIFY_COLUMNS = ["file", "label", "top1", "probability", "top3", "unidentified", "flags", "repaired", "error"]
# label: the class the product counts, or UNK (unidentified: why); top1: the network's top class


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("qc", help="quality record of each image (brightness, stain, colour type, blur)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    p.add_argument("--csv", type=Path, help="write the records as CSV here")
    p.add_argument("--thresholds", type=Path, help="thresholds JSON (default: the calibrated one)")
    p.add_argument("--no-repair", action="store_true", help="do not apply unsharp masking to blurry cells")
    p.set_defaults(func=cmd_qc)

    p = sub.add_parser("classify", help="classify cell images with the ReXNet-150 model")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    p.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="checkpoint directory")
    p.add_argument("--csv", type=Path, help="write one row per image here")
    p.add_argument("--gradcam", type=Path, metavar="DIR", help="write Grad-CAM overlay PNGs here")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=None,
                   help="cells per network call (default: 4 on CPU, 8 on CUDA; see docs/bench-ml.md)")
    p.add_argument("--no-repair", action="store_true", help="do not apply unsharp masking to blurry cells")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("calibrate-qc", help="derive quality thresholds from a folder-per-class dataset")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--out", type=Path, help="thresholds JSON to write (default: the shipped one)")
    p.set_defaults(func=cmd_calibrate)


def _writer(path: Path | None, columns: list[str]):
    if path is None:
        return None, None
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("w", newline="", encoding="utf-8")
    w = csv.DictWriter(fh, fieldnames=columns)
    w.writeheader()
    return fh, w


def _files(paths: list[str]) -> list[Path]:
    from app.ml.dataset import list_images

    files = list_images(paths)
    if not files:
        raise FileNotFoundError(f"no files found in {', '.join(paths)}")
    return files


def cmd_qc(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from app.ml.quality import Thresholds, check_file

    thresholds = Thresholds.load(args.thresholds)
    files = _files(args.paths)
    fh, w = _writer(args.csv, QC_COLUMNS)
    failed = 0
    for f in tqdm(files, unit="img", disable=len(files) < 50 or None, file=sys.stderr):
        rec, _ = check_file(f, thresholds, repair=not args.no_repair)
        row = rec.as_dict()
        row["flags"] = ";".join(row["flags"])
        if rec.error:
            failed += 1
            print(f"{f}: {rec.error}", file=sys.stderr)
        if w:
            w.writerow(row)
        else:
            print(json.dumps(row))
    if fh:
        fh.close()
    return 1 if failed else 0


def cmd_classify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from app.ml import pipeline
    from app.ml.gradcam import overlay_png
    from app.ml.predictor import Predictor

    files = _files(args.paths)
    predictor = Predictor(args.model, device=args.device)
    fh, w = _writer(args.csv, CLASSIFY_COLUMNS)
    if args.gradcam:
        args.gradcam.mkdir(parents=True, exist_ok=True)
    failed = 0
    results = pipeline.run([(str(f), None) for f in files], predictor, repair=not args.no_repair,
                           with_cam=bool(args.gradcam),
                           batch_size=args.batch_size or pipeline.DEFAULT_BATCH_SIZE[args.device])
    for i, r in enumerate(tqdm(results, total=len(files), unit="img", file=sys.stderr,
                               disable=len(files) < 50 or None)):
        row = {"file": r.name, "flags": ";".join(r.quality.flags), "repaired": r.quality.repaired,
               "error": r.error or ""}
        if r.prediction is None:
            failed += 1
            print(f"{r.name}: {r.error}", file=sys.stderr)
        else:
            p = r.prediction
            row.update(label=p.label, unidentified=p.unidentified or "", top1=p.code,
                       probability=f"{p.probability:.4f}",
                       top3=" ".join(f"{c}:{q:.3f}" for c, _, q in p.top3))
            if args.gradcam and p.cam is not None:
                out = args.gradcam / f"{i:05d}_{Path(r.name).stem}_{p.code}.png"
                out.write_bytes(overlay_png(r.image, r.heatmap()))
        if w:
            w.writerow(row)
        else:
            print(",".join(str(row.get(c, "")) for c in CLASSIFY_COLUMNS))
    if fh:
        fh.close()
    if failed:
        print(f"{failed} of {len(files)} files could not be classified", file=sys.stderr)
    return 1 if failed else 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from app.ml.calibrate_qc import calibrate
    from app.ml.quality import THRESHOLDS_FILE

    doc = calibrate(args.data_dir, args.out or THRESHOLDS_FILE)
    print(json.dumps(doc, indent=2))
    return 0
