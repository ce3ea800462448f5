"""`marrow eda`, `marrow evaluate`: reports on folder-per-class datasets."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.ml.shifts import SHIFTS
from app.ml.card import SHIPPED_MODEL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eda", help="exploratory HTML report of a folder-per-class dataset")
    p.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="one folder per class code")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="report folder (index.html + PNGs)")
    p.add_argument("--thresholds", type=Path, help="quality thresholds JSON (default: the calibrated one)")
    p.set_defaults(func=cmd_eda)

    p = sub.add_parser("evaluate", help="accuracy, per-class metrics, confusion matrix, ECE and UNK rate of "
                                        "a model, overall and per source")
    p.add_argument("sources", type=Path, nargs="+", metavar="SRC",
                   help="folder-per-class datasets (one folder per class code), one per lab/scanner")
    p.add_argument("--only-validation", action="store_true",
                   help="only the files the model card lists as its validation split (held out from training)")
    p.add_argument("--model", type=Path, default=SHIPPED_MODEL, metavar="MODEL_DIR",
                   help="checkpoint directory (default: the shipped model)")
    p.add_argument("--json", type=Path, required=True, metavar="OUT", help="write the metrics JSON here")
    p.add_argument("--report", type=Path, metavar="DIR", help="also write an HTML report with figures here")
    p.add_argument("--top-wrong", type=int, default=12, metavar="K",
                   help="confidently wrong cells shown in the report (default: 12)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--shifts", nargs="*", metavar="NAME",
                   help="also evaluate the same cells under scanner/stain shifts (all when no NAME is "
                        "given): " + ", ".join(SHIFTS))
    p.add_argument("--non-cells", action="store_true",
                   help="also turn each cell into a synthetic non-cell (shuffled, smeared, a corner, "
                        "a cut edge) and report how many the product does not count")
    p.set_defaults(func=cmd_evaluate)


def cmd_eda(args: argparse.Namespace) -> int:
    from app.ml.eda import run_eda

    summary = run_eda(args.data_dir, args.out, args.thresholds)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"report: {args.out / 'index.html'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from app.ml.evaluate import evaluate, format_table

    shifts = None if args.shifts is None else (args.shifts or list(SHIFTS))
    ev = evaluate(args.sources, args.model, device=args.device, batch_size=args.batch_size,
                  top_wrong=args.top_wrong if args.report else 0, shifts=shifts,
                  only_validation=args.only_validation, non_cells=args.non_cells)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(ev.metrics, indent=2) + "\n")
    print(format_table(ev.metrics))
    if args.report:
        from app.ml.report import write_evaluation_report

        print(f"report: {write_evaluation_report(ev, args.report)}")
    return 0
