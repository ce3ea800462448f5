"""`marrow train`: ReXNet-150 (or any timm classifier) on one or more folder-per-class datasets.

Each dataset folder is a source (one lab or scanner). The whole training set is decoded once,
passed through the product's own quality checks, unsharp repair and framing of the central cell
(the model trains on what it will be shown), stored as uint8 tensors on the training device and
augmented there in batches (`augment.py`), so a GPU is never starved by JPEG decoding and a
2-core CPU decodes each image only once. Each epoch draws every (source, class) equally often
by default, so that "which lab" does not predict the class. With `non_cells`, each batch also
carries synthetic non-cells made from its cells (`non_cells.py`), trained towards a uniform
answer so that the UNK rule rejects such crops. After training, the temperature and
the unidentified rule are calibrated on the validation split and stored in the card.
"""
from __future__ import annotations

import csv
import os
import platform
import random
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.scheduler import CosineLRScheduler
from tqdm import tqdm

from app.ml import framing, non_cells, preprocess, unidentified
from app.ml.augment import augment, normalize
from app.ml.backends import BF16_FLAGS, cpu_flags
from app.ml.card import MARROW_CLASSES, ModelCard, is_checkpoint
from app.ml.checkpoint import build_model, load_checkpoint, save_checkpoint
from app.ml.dataset import (Sample, class_folders, kfold_splits, load_sources, stratified_split,
                            subsample_per_class)
from app.ml.decode import decode_path
from app.ml.metrics import classification_report, expected_calibration_error, fit_temperature
from app.ml.quality import Thresholds, assess
from app.ml.training_config import AugmentConfig, TrainConfig

STATE_FILE = ".train_state.pt"
NAMES = {c.code: c for c in MARROW_CLASSES}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Loaded:
    """Decoded, checked, repaired and framed images of one split (unreadable files dropped)."""

    x: torch.Tensor  # N×3×S×S uint8
    y: torch.Tensor  # N class indices
    samples: list[Sample]
    flags: list[list[str]]  # QC flags per image
    found: list[bool]  # a nucleus was found to frame


def _load_one(sample: Sample, size: int, thresholds: Thresholds, crop: framing.Crop | None,
              make: Callable[[np.ndarray, int], np.ndarray] | None = None, index: int = 0):
    decoded = decode_path(sample.path)
    if make is not None and decoded.rgb is not None:
        decoded = replace(decoded, rgb=make(decoded.rgb, index))
    record, image = assess(str(sample.path), decoded, thresholds, repair=True)
    if image is None:
        return None
    where = framing.locate(image, crop) if crop is not None else None
    if where is not None:
        image = framing.frame(image, where)
    return preprocess.square_resize(image, size), record.flags, where is None or where.found


def stored_side(input_size: int) -> int:
    """The side training cells are kept at: 256/224 of the network's input. Augmentation resamples
    the whole stored cell (rotated, zoomed, shifted) into the input, and the margin of resolution
    keeps detail where it zooms in."""
    return round(input_size * 256 / 224)


def load_images(samples: list[Sample], size: int, desc: str, crop: framing.Crop | None,
                make: Callable[[np.ndarray, int], np.ndarray] | None = None) -> Loaded:
    """Decode, quality-repair, frame (`crop`; None: the whole image) and square-resize every sample
    (threads); `make(rgb, i)` first turns the i-th decoded image into something else (a non-cell)."""
    thresholds = Thresholds.load()
    with ThreadPoolExecutor(max_workers=8) as pool:
        loaded = list(tqdm(pool.map(lambda a: _load_one(a[1], size, thresholds, crop, make, a[0]), enumerate(samples)),
                           total=len(samples), desc=desc, unit="img"))
    kept = [(s, r) for s, r in zip(samples, loaded) if r is not None]
    x = torch.from_numpy(np.stack([r[0] for _, r in kept])).permute(0, 3, 1, 2).contiguous()
    return Loaded(x, torch.tensor([s.label for s, _ in kept]), [s for s, _ in kept],
                  [r[1] for _, r in kept], [r[2] for _, r in kept])


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """total / (classes × count); a class absent from training gets weight 0.

    Kept with `source-class` draws too: unweighted, a class both labs have is drawn twice as
    often as one only PBC has, and on the validation split PBC's bands and myelocytes were then
    called segmented neutrophils and promyelocytes (README, marrow13 notes)."""
    counts = torch.bincount(labels, minlength=n_classes).float()
    w = labels.numel() / (n_classes * counts.clamp(min=1))
    return torch.where(counts > 0, w, torch.zeros_like(w))


def sampling_weights(samples: list[Sample], balance: str) -> torch.Tensor:
    """Per-sample draw weights: 1 / size of its (source, class) stratum, or uniform."""
    if balance == "none":
        return torch.ones(len(samples))
    if balance != "source-class":
        raise ValueError(f"unknown balance {balance!r}; expected source-class or none")
    sizes: dict[str, int] = {}
    for s in samples:
        sizes[s.stratum] = sizes.get(s.stratum, 0) + 1
    return torch.tensor([1.0 / sizes[s.stratum] for s in samples])


def use_bf16(cfg: TrainConfig) -> bool:
    """bf16 autocast: CUDA with --amp; CPU where asked, or ("auto") where the CPU has bf16 units
    (AVX512-BF16 or AMX-BF16).

    Against fp32 channels_last, `marrow bench-train` measured 1.3x on a Zen 4 EPYC with
    AVX512-BF16 and no AMX (README, "Training speed"); the issue measured 1.6x (11.3 against 6.9
    img/s) on a Xeon with AMX. Where neither is present (AVX2 only) bf16 has no instructions of
    its own to gain from: "auto" stays fp32 there (not measured).
    """
    if cfg.device == "cuda":
        return cfg.amp
    if cfg.bf16 == "auto":
        return any(f in BF16_FLAGS for f in cpu_flags())
    return cfg.bf16 == "on"


def optimizer_and_schedule(cfg: TrainConfig, model: torch.nn.Module, head_only: bool,
                           steps: int, warmup_steps: int):
    """The optimizer and its per-step warm-up + cosine schedule (timm), for one training phase.

    Head-only (the body frozen, transfer learning) trains the classifier at `head_lr_mult`×lr.
    """
    head = list(model.get_classifier().parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    for p in body:
        p.requires_grad_(not head_only)
    groups = [{"params": head, "lr": cfg.lr * (cfg.head_lr_mult if head_only else 1.0)}]
    if not head_only:
        groups.append({"params": body, "lr": cfg.lr})
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    sched = CosineLRScheduler(opt, t_initial=max(1, steps), warmup_t=max(1, warmup_steps),
                              warmup_lr_init=cfg.lr * 1e-3, t_in_epochs=False)
    return opt, sched


def transfer_head(model: torch.nn.Module, init_dir: str | Path, codes: list[str]) -> list[str]:
    """Copy the classifier rows of the classes an initial MarrowDiff checkpoint already knows
    (matched by code); the new classes keep their fresh rows. Returns the codes copied."""
    if not is_checkpoint(init_dir):
        return []
    old, old_card = load_checkpoint(init_dir)
    src, dst = old.get_classifier(), model.get_classifier()
    if src.weight.shape[1] != dst.weight.shape[1]:
        return []
    copied = [c for c in codes if c in old_card.codes]
    with torch.no_grad():
        for code in copied:
            i, j = codes.index(code), old_card.codes.index(code)
            dst.weight[i] = src.weight[j]
            dst.bias[i] = src.bias[j]
    return copied


@torch.no_grad()
def predict_logits(model, x_u8: torch.Tensor, card: ModelCard, device: str, bf16: bool,
                   channels_last: bool, batch: int = 64) -> torch.Tensor:
    model.eval()
    out = []
    for i in range(0, len(x_u8), batch):
        xb = normalize(x_u8[i:i + batch].to(device).float().div_(255), card.mean, card.std)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            out.append(model(xb).float().cpu())
    return torch.cat(out)


def source_metrics(logits: torch.Tensor, labels: torch.Tensor, samples: list[Sample],
                   codes: list[str]) -> dict:
    """accuracy and macro-F1 overall and per source (macro over the classes each source has)."""
    pred = logits.argmax(1).numpy()
    y = labels.numpy()
    out = {}
    for source in sorted({s.source for s in samples}):
        m = np.array([s.source == source for s in samples])
        r = classification_report(y[m], pred[m], codes)
        out[source] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n_images": int(m.sum())}
    return out


def split_samples(cfg: TrainConfig, samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    if cfg.folds > 1:
        return list(kfold_splits(samples, cfg.folds, split_seed(cfg)))[cfg.fold]
    return stratified_split(samples, cfg.val_fraction, split_seed(cfg))


def split_seed(cfg: TrainConfig) -> int:
    return cfg.seed if cfg.split_seed is None else cfg.split_seed


@dataclass
class Run:
    """What a training run works on, set up once (and again identically on --resume)."""

    cfg: TrainConfig
    codes: list[str]
    train: Loaded
    val: Loaded
    model: torch.nn.Module
    card: ModelCard
    weights: torch.Tensor  # class weights of the loss
    draw: torch.Tensor  # per-sample draw weights
    bf16: bool
    head_copied: list[str]


def prepare(sources: list[Path], cfg: TrainConfig) -> Run:
    seed_everything(cfg.seed)
    codes = list(class_folders(sources))
    unknown = [c for c in codes if c not in NAMES]
    if unknown:
        raise ValueError(f"class folders that are not MarrowDiff codes: {', '.join(unknown)} "
                         f"(known: {', '.join(NAMES)})")
    samples = load_sources(sources, tuple(codes))
    if cfg.max_per_class:
        samples = subsample_per_class(samples, cfg.max_per_class, split_seed(cfg))
    train_s, val_s = split_samples(cfg, samples)
    crop = framing.Crop(cfg.framing_side) if cfg.framing else None
    train = load_images(train_s, stored_side(cfg.input_size), "loading train", crop)
    val = load_images(val_s, cfg.input_size, "loading val", crop)
    model = build_model(cfg.arch, len(codes), cfg.init_weights, cfg.hub)
    copied = transfer_head(model, cfg.init_weights, codes) if cfg.init_weights else []
    model = model.to(cfg.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    card = ModelCard(architecture=cfg.arch, input_size=cfg.input_size,
                     classes=[NAMES[c].as_dict() for c in codes],
                     version=cfg.version or f"{cfg.arch}-{datetime.now(timezone.utc):%Y%m%d-%H%M}",
                     framing=crop.as_card() if crop is not None else {})
    return Run(cfg, codes, train, val, model, card, class_weights(train.y, len(codes)),
               sampling_weights(train.samples, cfg.balance), use_bf16(cfg), copied)


def train(sources: list[str | Path] | str | Path, out_dir: str | Path, cfg: TrainConfig,
          resume: bool = False) -> dict:
    """Train, keep the best-macro-F1 checkpoint in out_dir, calibrate it, return its metrics."""
    sources = [Path(s) for s in ([sources] if isinstance(sources, (str, Path)) else sources)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = prepare(sources, cfg)
    t0 = time.time()
    history = fit(run, out, resume)
    return finish(run, sources, out, history, round(time.time() - t0, 1))


def fit(run: Run, out: Path, resume: bool) -> list[dict]:
    """The epochs: draw, augment, step; validate; keep the best; save state for --resume."""
    cfg, model, device = run.cfg, run.model, run.cfg.device
    xt, yt = run.train.x.to(device), run.train.y.to(device)
    epoch_size = cfg.epoch_size or len(xt)
    steps_per_epoch = max(1, epoch_size // cfg.batch_size)
    teacher, tcard = load_checkpoint(cfg.teacher, device) if cfg.teacher else (None, None)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    def phase(epoch: int):
        """Head-only for the first `freeze_epochs`, then the whole network to the end."""
        head_only = epoch < cfg.freeze_epochs
        first, last = (0, cfg.freeze_epochs) if head_only else (cfg.freeze_epochs, cfg.epochs)
        warm = 0 if head_only else int(cfg.warmup_epochs * steps_per_epoch)
        if cfg.freeze_epochs and not head_only:
            warm = steps_per_epoch  # after a frozen start, one epoch of warm-up is enough
        opt, sched = optimizer_and_schedule(cfg, model, head_only, steps_per_epoch * (last - first), warm)
        return head_only, first, opt, sched

    history: list[dict] = []
    best = {"macro_f1": -1.0, "epoch": -1}
    start_epoch = 0
    state_path = out / STATE_FILE
    head_only, phase_start, opt, sched = phase(0)
    if resume and state_path.is_file():
        st = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(st["model"])
        cfg.epochs = st["epochs"]
        head_only, phase_start, opt, sched = phase(st["epoch"] + 1)
        if st["head_only"] == head_only:
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
        history, best, start_epoch = st["history"], st["best"], st["epoch"] + 1
        gen.set_state(st["generator"].to(gen.get_state().device) if device == "cpu" else st["generator"])
        print(f"resumed after epoch {st['epoch'] + 1}")
    aug_cfg = AugmentConfig(**cfg.augment)
    draw = run.draw.to(device)
    t0 = time.time() - (history[-1]["seconds"] if history else 0.0)
    bar = tqdm(total=cfg.epochs, initial=start_epoch, desc="epochs", unit="epoch")
    epoch = start_epoch
    while epoch < cfg.epochs:
        if head_only and epoch >= cfg.freeze_epochs:
            head_only, phase_start, opt, sched = phase(epoch)
        model.train()
        order = torch.multinomial(draw, steps_per_epoch * cfg.batch_size, replacement=True, generator=gen) \
            if cfg.balance != "none" else torch.randperm(len(xt), generator=gen, device=device)
        run_loss, run_correct, seen = 0.0, 0, 0
        non_cell_rng = np.random.default_rng([cfg.seed, epoch])  # per epoch, so --resume repeats it
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            yb = yt[idx]
            loss, logits = train_step(run, opt, xt[idx], yb, aug_cfg, gen, non_cell_rng, teacher, tcard)
            sched.step_update((epoch - phase_start) * steps_per_epoch + i + 1)
            run_loss += loss * len(idx)
            run_correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
        vlog = predict_logits(model, run.val.x, run.card, device, run.bf16, cfg.channels_last)
        report = classification_report(run.val.y.numpy(), vlog.argmax(1).numpy(), run.codes)
        per_source = source_metrics(vlog, run.val.y, run.val.samples, run.codes)
        row = {"epoch": epoch + 1, "train_loss": run_loss / seen, "train_accuracy": run_correct / seen,
               "val_loss": float(F.cross_entropy(vlog, run.val.y, weight=run.weights)),
               "val_accuracy": report["accuracy"], "val_macro_f1": report["macro_f1"],
               **{f"val_macro_f1_{s}": m["macro_f1"] for s, m in per_source.items()},
               "lr": opt.param_groups[-1]["lr"], "seconds": round(time.time() - t0, 1)}
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{report['accuracy']:.3f}",
                        val_f1=f"{report['macro_f1']:.3f}")
        if report["macro_f1"] > best["macro_f1"]:
            best = {"macro_f1": report["macro_f1"], "accuracy": report["accuracy"], "epoch": epoch + 1}
            save_checkpoint(model, run.card, out)
        if epoch == start_epoch + 1 and cfg.max_minutes:
            # time the second epoch: the first also pays for start-up (caches, a frozen phase)
            per_epoch = max(1e-3, row["seconds"] - history[-2]["seconds"])
            fit_epochs = int((cfg.max_minutes * 60 - row["seconds"]) / per_epoch)
            if fit_epochs < cfg.epochs - epoch - 1:  # shorten the cosine schedule to the time budget
                cfg.epochs = epoch + 1 + max(1, fit_epochs)
                if not head_only:
                    sched.t_initial = steps_per_epoch * (cfg.epochs - phase_start)
                print(f"time budget {cfg.max_minutes} min: {cfg.epochs} epochs")
        partial = state_path.with_suffix(".partial")  # an interruption mid-write keeps the last good state
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "history": history, "best": best, "epoch": epoch, "epochs": cfg.epochs,
                    "head_only": head_only, "generator": gen.get_state()}, partial)
        partial.replace(state_path)
        bar.total = cfg.epochs
        bar.update(1)
        if epoch + 1 - best["epoch"] >= cfg.patience:
            print(f"early stop: no macro-F1 gain for {cfg.patience} epochs")
            break
        epoch += 1
    bar.close()
    return history


def train_step(run: Run, opt: torch.optim.Optimizer, cells_u8: torch.Tensor, yb: torch.Tensor,
               aug_cfg: AugmentConfig, gen: torch.Generator, non_cell_rng: np.random.Generator,
               teacher: torch.nn.Module | None = None, tcard: ModelCard | None = None) -> tuple[float, torch.Tensor]:
    """One optimisation step on a batch of uint8 cells (N×3×S×S on the device): synthetic non-cells
    added (`cfg.non_cells`), augmented, forward under bf16 autocast where `run.bf16`, loss,
    backward, optimizer step. Returns the loss and the cells' logits. `marrow bench-train` times it."""
    cfg, device = run.cfg, run.cfg.device
    n = len(yb)
    n_non_cells = round(cfg.batch_size * cfg.non_cells)
    if n_non_cells:
        cells_u8 = torch.cat([cells_u8, _non_cell_batch(cells_u8[:n_non_cells], non_cell_rng)])
    xb = augment(cells_u8, cfg.input_size, run.card.mean, run.card.std, aug_cfg, gen)
    if cfg.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=run.bf16):
        scores = run.model(xb).float()
        logits = scores[:n]
        loss = F.cross_entropy(logits, yb, weight=run.weights.to(device), label_smoothing=cfg.label_smoothing)
        if n_non_cells:
            loss = loss + cfg.non_cell_weight * _uniform_target_loss(scores[n:])
        if teacher is not None:
            loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * _distillation(teacher, tcard, xb[:n], logits, cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item(), logits


def _non_cell_batch(cells_u8: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """One synthetic non-cell of a random kind per N×3×H×W uint8 cell (`non_cells`)."""
    kinds = list(non_cells.KINDS)
    hwc = cells_u8.permute(0, 2, 3, 1).cpu().numpy()
    made = np.stack([non_cells.make(img, kinds[int(rng.integers(len(kinds)))], rng) for img in hwc])
    return torch.from_numpy(made).permute(0, 3, 1, 2).to(cells_u8.device)


def _uniform_target_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the uniform distribution (outlier exposure): low confidence on non-cells."""
    return (torch.logsumexp(logits, 1) - logits.mean(1)).mean()


def _distillation(teacher, tcard: ModelCard, xb: torch.Tensor, logits: torch.Tensor,
                  cfg: TrainConfig) -> torch.Tensor:
    with torch.no_grad():
        tin = xb if tcard.input_size == cfg.input_size else F.interpolate(
            xb, size=tcard.input_size, mode="bilinear", align_corners=False)
        tlog = teacher(tin).float()
    t = cfg.kd_temperature
    return F.kl_div(F.log_softmax(logits / t, 1), F.softmax(tlog / t, 1), reduction="batchmean") * t * t


def finish(run: Run, sources: list[Path], out: Path, history: list[dict], seconds: float) -> dict:
    """Calibrate the best checkpoint (temperature, UNK rule) and write its card.

    The calibration is fitted on fp32 logits whatever precision trained the weights, as `marrow
    calibrate` fits it: fp32 is the reference every inference backend is checked against."""
    cfg = run.cfg
    best_model, card = load_checkpoint(out, cfg.device)
    if cfg.channels_last:
        best_model = best_model.to(memory_format=torch.channels_last)
    vlog = predict_logits(best_model, run.val.x, card, cfg.device, bf16=False, channels_last=cfg.channels_last)
    made = validation_non_cells(run.val, card)
    nlog = predict_logits(best_model, made.x, card, cfg.device, bf16=False, channels_last=cfg.channels_last)
    temperature, rule, measured = calibrated_validation(vlog, run.val, run.codes, cfg.unk_budget, (nlog, made))
    write_history(history, out)
    best_epoch = max(history, key=lambda h: h["val_macro_f1"])["epoch"] if history else 0
    card.temperature = temperature
    card.unidentified = rule.as_dict()
    card.metrics = {"validation": {**measured, "best_epoch": best_epoch, "n_images": len(run.val.samples)}}
    card.training = {
        "config": asdict(cfg), "epochs_run": len(history), "seconds": seconds,
        "hardware": hardware(cfg.device), "precision": "bf16 autocast" if run.bf16 else "fp32",
        "torch": torch.__version__, "head_rows_copied": run.head_copied,
        "split": {"method": (f"stratified by source and class, {cfg.folds}-fold, fold {cfg.fold}" if cfg.folds > 1
                             else f"stratified by source and class {1 - cfg.val_fraction:.0%}/{cfg.val_fraction:.0%}"),
                  "seed": split_seed(cfg), "n_train": len(run.train.samples), "n_val": len(run.val.samples),
                  "val_files": [s.rel for s in run.val.samples]},
        "history": history,
    }
    card.data = {"sources": {p.resolve().name: {
        "n_images": sum(s.source == p.resolve().name for s in run.train.samples + run.val.samples),
        "classes": sorted({run.codes[s.label] for s in run.train.samples + run.val.samples
                           if s.source == p.resolve().name})} for p in sources}}
    card.save(out / "model_card.json")
    (out / STATE_FILE).unlink(missing_ok=True)
    return card.metrics["validation"]


def validation_non_cells(val: Loaded, card: ModelCard) -> Loaded:
    """The validation cells turned into synthetic non-cells (`non_cells.make_in_turn`, as
    `marrow evaluate --non-cells` makes them), through the product's checks and framing."""
    return load_images(val.samples, card.input_size, "loading non-cells", framing.Crop.from_card(card.framing),
                       make=non_cells.make_in_turn)


def calibrated_validation(logits: torch.Tensor, val: Loaded, codes: list[str], unk_budget: float,
                          made: tuple[torch.Tensor, Loaded] | None = None) -> tuple[float, unidentified.Rule, dict]:
    """From the validation split's logits: the temperature, the UNK rule, and the validation
    metrics (top-1 report, per source, expected calibration error before/after the temperature).
    `made`: logits of the validation non-cells (`validation_non_cells`) and what was loaded; the
    rule also catches those the product would otherwise count (a nucleus found, a counted class)."""
    z, labels = logits.float(), val.y.numpy()
    temperature = fit_temperature(z, labels)
    probs_before, probs = torch.softmax(z, 1).numpy(), torch.softmax(z / temperature, 1).numpy()
    non_cell_scores = None
    if made is not None:
        nz, loaded = made[0].float(), made[1]
        counted = np.array([NAMES[c].counted for c in codes])
        would_count = np.asarray(loaded.found) & counted[nz.argmax(1).numpy()]
        nz = nz[torch.from_numpy(would_count)]
        non_cell_scores = (torch.softmax(nz / temperature, 1).numpy().max(1),
                           unidentified.energy(nz.numpy(), temperature))
    rule = unidentified.calibrate(probs, unidentified.energy(z.numpy(), temperature), labels, unk_budget,
                                  non_cell_scores)
    return round(float(temperature), 4), rule, {
        **classification_report(labels, z.argmax(1).numpy(), codes),
        "per_source": source_metrics(z, val.y, val.samples, codes),
        "ece_before_temperature": round(expected_calibration_error(probs_before, labels), 4),
        "ece_after_temperature": round(expected_calibration_error(probs, labels), 4)}


def hardware(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    model = next((ln.split(":", 1)[1].strip() for ln in _cpuinfo_lines() if ln.startswith("model name")),
                 platform.processor() or platform.machine())
    return f"{model} CPU, {os.cpu_count()} cores"


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def write_history(history: list[dict], out: Path) -> None:
    """history.csv and learning-curve PNGs (loss, accuracy / macro-F1 per source, learning rate)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    with (out / "history.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ax[0].plot(ep, [h["train_loss"] for h in history], label="train")
    ax[0].plot(ep, [h["val_loss"] for h in history], label="validation")
    ax[0].set_title("loss")
    ax[1].plot(ep, [h["train_accuracy"] for h in history], label="train accuracy")
    ax[1].plot(ep, [h["val_accuracy"] for h in history], label="val accuracy")
    ax[1].plot(ep, [h["val_macro_f1"] for h in history], label="val macro-F1")
    for key in history[0]:
        if key.startswith("val_macro_f1_"):
            ax[1].plot(ep, [h[key] for h in history], "--", label=key.removeprefix("val_"))
    ax[1].set_title("accuracy / macro-F1")
    ax[2].plot(ep, [h["lr"] for h in history])
    ax[2].set_title("learning rate")
    for a in ax:
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    ax[0].legend()
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=90)
    plt.close(fig)
