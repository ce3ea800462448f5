"""`marrow bench`: cells/s of the product's pipeline against the naive one-image demo loop;
`marrow bench-steps`: the CPU a cell costs in each step; `marrow bench-train`: images/s of
training by precision."""
from __future__ import annotations

import argparse
from pathlib import Path

from app.cli import print_json
from app.config import BACKEND_NAMES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="cells/s: naive demo loop vs the product's pipeline, with and without Grad-CAM",
        description="Measures in one run, on the same real cells: (a) the naive demo loop (PIL + "
                    "torchvision + PyTorch eager, batch 1), (a') the same plus grad-cam's GradCAM per "
                    "image, (b) the product's pipeline, (c) the pipeline with Grad-CAM; and peak memory. "
                    "Prints the JSON (see docs/bench-ml.md).")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--n", type=int, default=64, help="real cells to classify (default 64)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON here")
    p.add_argument("--model", type=Path, default=None, metavar="DIR",
                   help="checkpoint directory (default: the shipped model models/rexnet150-marrow13; "
                        "while it is absent, random weights: speed does not depend on them)")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="real cells, one sub-folder per class (default ../shared/data/bone-marrow-7 "
                        "beside the repository)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="the pipeline's batch size (default: the product's, 4 on CPU, 8 on CUDA)")
    p.add_argument("--workers", type=int, default=None, help="the pipeline's worker threads (default: the product's)")
    p.add_argument("--rounds", type=int, default=3, help="passes over the cells per method (default 3)")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="the product's backend (default auto: the fastest this CPU supports, verified; "
                        "ONNX Runtime fp32 is measured beside it as fp32_cells_per_s)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "bench-steps", help="CPU milliseconds a cell costs in each step of the web process and the worker",
        description="Times each step a cell goes through (upload check, store, read, decode, QC view "
                    "and checks, framing, prepare, network on one thread, Grad-CAM, heatmap, thumbnail, "
                    "write), one step at a time with the product's own functions: CPU ms per cell, median "
                    "of --rounds passes. Prints the JSON.")
    p.add_argument("--n", type=int, default=200, help="real cells (default 200)")
    p.add_argument("--rounds", type=int, default=3, help="passes counted, after one warm-up pass (default 3)")
    _json_model_data(p, "checkpoint directory")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="the network's backend (default auto, as the worker chooses)")
    p.set_defaults(func=cmd_bench_steps)

    p = sub.add_parser(
        "bench-train", help="images/s of marrow train's step: fp32, channels_last, bf16 autocast",
        description="Times `marrow train`'s own step (augmentation, forward, loss, backward, AdamW) on "
                    "real cells in three modes, each in a process of its own, taking turns: fp32, fp32 "
                    "channels_last, channels_last + bf16 autocast; says which `--bf16 auto` picks on this "
                    "CPU. Prints the JSON.")
    p.add_argument("--n", type=int, default=96, help="real cells to draw batches from (default 96)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default 32, the shipped recipe's)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per mode and round (default 3)")
    p.add_argument("--warmup", type=int, default=5,
                   help="untimed steps before them, at least 1 (default 5: a process's first steps are slower)")
    p.add_argument("--rounds", type=int, default=2, help="rounds; the modes take turns in each (default 2)")
    _json_model_data(p, "checkpoint to start from")
    p.set_defaults(func=cmd_bench_train)


def _json_model_data(p: argparse.ArgumentParser, model_is: str) -> None:
    """--json, --model and --data, as bench-steps and bench-train take them."""
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON here")
    p.add_argument("--model", type=Path, default=None, metavar="DIR",
                   help=f"{model_is} (default: the shipped model models/rexnet150-marrow13)")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="real cells, one sub-folder per class (default ../shared/data/bone-marrow-7)")


def cmd_bench_train(args: argparse.Namespace) -> int:
    from app.bench.cells import default_data_dir
    from app.bench.training import run_train_bench

    if min(args.n, args.batch_size, args.steps, args.rounds, args.warmup) < 1:
        raise ValueError("--n, --batch-size, --steps, --rounds and --warmup must be at least 1")
    print_json(run_train_bench(args.data or default_data_dir(), args.n, args.batch_size, args.steps,
                               args.rounds, args.warmup, args.model), args.json)
    return 0


def cmd_bench_steps(args: argparse.Namespace) -> int:
    from app.bench.cells import default_data_dir
    from app.bench.steps import run_steps

    if args.n < 1 or args.rounds < 1:
        raise ValueError("--n and --rounds must be at least 1")
    print_json(run_steps(args.data or default_data_dir(), args.n, args.rounds, args.model, args.backend), args.json)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from app.bench.ml import DEFAULT_DATA_DIR, run_bench

    if args.n < 1 or args.rounds < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise ValueError("--n, --rounds and --batch-size must be at least 1")
    result = run_bench(data_dir=args.data or DEFAULT_DATA_DIR, n=args.n, device=args.device,
                       model_dir=args.model, batch_size=args.batch_size, workers=args.workers,
                       rounds=args.rounds, backend=args.backend)
    print_json(result, args.json)
    return 0
