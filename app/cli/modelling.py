"""`marrow train`: train and calibrate a checkpoint on one or more folder-per-class datasets."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

from app.ml.training_config import AugmentConfig, TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train a cell classifier (ReXNet-150 by default) and write a checkpoint")
    p.add_argument("sources", type=Path, nargs="+", metavar="SRC",
                   help="folder-per-class datasets (folders named by class code), one per lab/scanner")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="checkpoint directory to write")
    p.add_argument("--arch", default=d.arch, help="timm architecture (default %(default)s)")
    p.add_argument("--input-size", type=int, default=d.input_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default=d.optimizer)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--split-seed", type=int, default=None, help="seed of the validation split (default: --seed); keep it to train several seeds on one split")
    p.add_argument("--folds", type=int, default=0, help="k>1: stratified k-fold; train on --fold")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--init-weights", help="local weights file/checkpoint dir, or a packaged name "
                   "(efficientnet-lite0/1/2); default random init")
    p.add_argument("--hub", action="store_true", help="download pretrained weights from the timm hub (needs internet)")
    p.add_argument("--freeze-epochs", type=int, default=d.freeze_epochs,
                   help="train only the classifier head for this many epochs first")
    p.add_argument("--head-lr-mult", type=float, default=d.head_lr_mult)
    p.add_argument("--teacher", help="checkpoint dir of a teacher for knowledge distillation")
    p.add_argument("--kd-alpha", type=float, default=d.kd_alpha)
    p.add_argument("--kd-temperature", type=float, default=d.kd_temperature)
    p.add_argument("--patience", type=int, default=d.patience, help="early stop after this many epochs without macro-F1 gain")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", action="store_true", help="bfloat16 mixed precision on CUDA")
    p.add_argument("--zoom", type=float, nargs=2, metavar=("LO", "HI"), default=AugmentConfig().scale,
                   help="augmentation zoom range: below 1 the cell shrinks in a wider field, above 1 it "
                        "fills more of the crop (default %(default)s)")
    p.add_argument("--augment", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override augmentation settings, e.g. hue=0.08 stain_gain=0.15 "
                        "(names as in the card's training.config.augment)")
    p.add_argument("--max-per-class", type=int, default=0, help="subsample for quick runs")
    p.add_argument("--max-minutes", type=float, default=0,
                   help="time budget: after timing the first epoch, shorten --epochs to fit")
    p.add_argument("--version", default="", help="model version recorded in the card")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-framing", dest="framing", action="store_false",
                   help="feed whole images instead of the framed central cell (app.ml.framing)")
    p.add_argument("--framing-side", type=float, default=d.framing_side, metavar="X",
                   help="crop side in nucleus extents (default: %(default)s); the card keeps it for the product")
    p.add_argument("--balance", choices=["source-class", "none"], default=d.balance,
                   help="draw every (source, class) equally often (default), or images as they come")
    p.add_argument("--epoch-size", type=int, default=d.epoch_size,
                   help="images drawn per epoch (default: the training set's size)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep PyTorch's default memory layout (channels_last is faster on CPU)")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default=d.bf16,
                   help="bf16 autocast on CPU: auto = where the CPU has AVX512-BF16 or AMX-BF16 (default; marrow bench-train measures it)")
    p.add_argument("--unk-budget", type=float, default=d.unk_budget,
                   help="share of correctly classified validation cells the UNK rule may reject")
    p.add_argument("--non-cells", type=float, default=d.non_cells, metavar="SHARE",
                   help="add this share of each batch as synthetic non-cells made from its cells "
                        "(app.ml.non_cells), trained towards a uniform answer so the UNK rule rejects them")
    p.add_argument("--non-cell-weight", type=float, default=d.non_cell_weight,
                   help="weight of the non-cells' loss (default %(default)s)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("calibrate", help="fit a checkpoint's temperature and UNK rule again on its recorded "
                                         "validation split, with another --unk-budget (no training)")
    p.add_argument("sources", type=Path, nargs="+", metavar="SRC", help="the datasets the checkpoint was trained on")
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="checkpoint whose card is rewritten")
    p.add_argument("--unk-budget", type=float, default=d.unk_budget,
                   help="share of correctly classified validation cells the UNK rule may reject (default %(default)s)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("average", help="average the weights of checkpoints of one lineage (a model soup), "
                                       "then measure and calibrate the average on its validation split")
    p.add_argument("sources", type=Path, nargs="+", metavar="SRC", help="the datasets the checkpoints were trained on")
    p.add_argument("--models", type=Path, nargs="+", required=True, metavar="DIR", help="two or more checkpoints")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR")
    p.add_argument("--version", required=True, help="model version recorded in the card")
    p.add_argument("--unk-budget", type=float, default=d.unk_budget)
    p.set_defaults(func=cmd_average)
    register_runtime(sub)


def _overrides(pairs: list[str]) -> dict:
    """KEY=VALUE augmentation overrides, typed like the defaults; unknown keys are an error."""
    defaults = asdict(AugmentConfig())
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in defaults:
            raise SystemExit(f"marrow train: --augment {pair!r}: expected KEY=VALUE with KEY one of "
                             f"{', '.join(defaults)}")
        default = defaults[key]
        out[key] = tuple(float(v) for v in value.split(",")) if isinstance(default, tuple) else float(value)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from app.ml.train import train
    fields = TrainConfig.__dataclass_fields__
    augment = asdict(replace(AugmentConfig(), scale=tuple(args.zoom), **_overrides(args.augment)))
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and k != "augment"}, augment=augment)
    metrics = train(args.sources, args.out, cfg, resume=args.resume)
    print(json.dumps({k: metrics[k] for k in ("accuracy", "macro_f1", "best_epoch", "per_source",
                                              "ece_before_temperature", "ece_after_temperature")}, indent=2))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from app.ml.recalibrate import recalibrate
    print(json.dumps(recalibrate(args.model, args.sources, args.unk_budget, args.device), indent=2))
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from app.ml.average import average
    card = average(args.models, args.sources, args.out, args.version, args.unk_budget)
    print(json.dumps({"version": card["version"], "temperature": card["temperature"],
                      "unidentified": card["unidentified"],
                      "validation": {k: card["metrics"]["validation"][k] for k in ("accuracy", "macro_f1", "per_source")}},
                     indent=2))
    return 0


def register_runtime(sub: argparse._SubParsersAction) -> None:
    """`marrow export` and `marrow quantize`: the CPU backends' cached graphs."""
    p = sub.add_parser("export", help="export a checkpoint's channel-padded graph and fp32 probe reference "
                                      "into the model cache (the worker does it when missing)")
    p.add_argument("--model", type=Path, default=None, metavar="DIR", help="checkpoint (default: MARROW_MODEL_DIR)")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="model cache (default: MARROW_MODEL_CACHE_DIR, else <data dir>/model-cache)")
    p.add_argument("--force", action="store_true", help="export again even when the cache has it")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="int8 post-training quantisation (NNCF) and the validation-split "
                                        "measurement and probe check that decide whether it ships")
    p.add_argument("sources", type=Path, nargs="+", metavar="SRC", help="the folder-per-class datasets the "
                   "checkpoint was trained on (calibration from its training split, measured on its validation split)")
    p.add_argument("--model", type=Path, default=None, metavar="DIR")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR")
    p.add_argument("--calibration", type=int, default=300, help="training cells to calibrate on (default 300)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-val", type=int, default=0, help="measure on at most this many validation cells (0: all)")
    p.add_argument("--preset", choices=["mixed", "performance"], default="mixed",
                   help="NNCF preset: mixed = asymmetric activations (default), performance = symmetric")
    p.add_argument("--bias-correction", choices=["fast", "full"], default="fast")
    p.add_argument("--accuracy-control", type=int, default=0, metavar="N",
                   help="NNCF accuracy control on N held-out training cells: layers that cost top-1 agreement "
                        "with fp32 stay in float (0: plain post-training quantisation)")
    p.add_argument("--ignore-types", nargs="+", default=[], metavar="OP",
                   help="OpenVINO op types NNCF leaves in float (e.g. Multiply: the SiLU and squeeze-excitation products)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the report here")
    p.set_defaults(func=cmd_quantize)


def _model_and_cache(args: argparse.Namespace) -> tuple[Path, Path]:
    from app.config import get_settings

    settings = get_settings()
    return args.model or settings.model_dir, args.cache or settings.model_cache


def cmd_export(args: argparse.Namespace) -> int:
    from app.ml.export import export

    model, cache = _model_and_cache(args)
    print(export(model, cache, force=args.force))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from app.cli import print_json
    from app.ml.quantize import quantize

    model, cache = _model_and_cache(args)
    print_json(quantize(args.sources, model, cache, calibration=args.calibration, threads=args.threads,
                        max_val=args.max_val, preset=args.preset, bias_correction=args.bias_correction,
                        ignore_types=args.ignore_types, accuracy_control=args.accuracy_control),
               args.json)
    return 0
