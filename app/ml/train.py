"""`marrow train`: ReXNet-150 (or any timm classifier) on a folder-per-class dataset.

The whole training set is decoded once, passed through the product's own quality checks and
unsharp repair (the model trains on what it will be shown), stored as uint8 tensors on the
training device and augmented there in batches (`augment.py`), so a GPU is never starved by
JPEG decoding and a 2-core CPU decodes each image only once.
"""
from __future__ import annotations

import csv
import math
import platform
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from app.ml import preprocess
from app.ml.augment import augment, normalize
from app.ml.dataset import Sample, kfold_splits, load_folder_dataset, stratified_split, subsample_per_class
from app.ml.decode import decode_path
from app.ml.metrics import classification_report, expected_calibration_error, fit_temperature
from app.ml.card import ModelCard
from app.ml.checkpoint import build_model, load_checkpoint, save_checkpoint
from app.ml.quality import Thresholds, assess
from app.ml.card import CODES
from app.ml.training_config import AugmentConfig, TrainConfig

STATE_FILE = ".train_state.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load_one(sample: Sample, size: int, thresholds: Thresholds) -> np.ndarray | None:
    record, image = assess(str(sample.path), decode_path(sample.path), thresholds, repair=True)
    return None if image is None else preprocess.square_resize(image, size)


def load_images(samples: list[Sample], size: int, desc: str) -> tuple[torch.Tensor, torch.Tensor, list[Sample]]:
    """Decode, quality-repair and square-resize every sample (threads); unreadable ones dropped."""
    thresholds = Thresholds.load()
    with ThreadPoolExecutor(max_workers=8) as pool:
        arrays = list(tqdm(pool.map(lambda s: _load_one(s, size, thresholds), samples),
                           total=len(samples), desc=desc, unit="img"))
    kept = [(s, a) for s, a in zip(samples, arrays) if a is not None]
    x = torch.from_numpy(np.stack([a for _, a in kept])).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([s.label for s, _ in kept])
    return x, y, [s for s, _ in kept]


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """total / (classes × count); a class absent from training gets weight 0."""
    counts = torch.bincount(labels, minlength=n_classes).float()
    w = labels.numel() / (n_classes * counts.clamp(min=1))
    return torch.where(counts > 0, w, torch.zeros_like(w))


class WarmupCosine:
    """LR multiplier: linear warm-up, then cosine decay to 0 at `total_steps` (adjustable)."""

    def __init__(self, warmup_steps: int, total_steps: int):
        self.warmup_steps, self.total_steps = max(1, warmup_steps), total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        t = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _optimizer(cfg: TrainConfig, model: torch.nn.Module, head_only: bool):
    head = list(model.get_classifier().parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    for p in body:
        p.requires_grad_(not head_only)
    groups = [{"params": head, "lr": cfg.lr * (cfg.head_lr_mult if head_only else 1.0)}]
    if not head_only:
        groups.append({"params": body, "lr": cfg.lr})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


@torch.no_grad()
def predict_logits(model, x_u8: torch.Tensor, card: ModelCard, device: str, amp: bool,
                   batch: int = 128) -> torch.Tensor:
    model.eval()
    out = []
    for i in range(0, len(x_u8), batch):
        xb = normalize(x_u8[i:i + batch].to(device).float().div_(255), card.mean, card.std)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            out.append(model(xb).float().cpu())
    return torch.cat(out)


def _metrics(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> dict:
    report = classification_report(labels.numpy(), logits.argmax(1).numpy(), list(CODES))
    return {"loss": float(F.cross_entropy(logits, labels, weight=weights)),
            "accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def split_samples(cfg: TrainConfig, samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    if cfg.folds > 1:
        return list(kfold_splits(samples, cfg.folds, cfg.seed))[cfg.fold]
    return stratified_split(samples, cfg.val_fraction, cfg.seed)


def train(data_dir: str | Path, out_dir: str | Path, cfg: TrainConfig, resume: bool = False) -> dict:
    """Train, keep the best-macro-F1 checkpoint in out_dir, calibrate it, return its metrics."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = cfg.device
    amp = cfg.amp and device == "cuda"
    samples = load_folder_dataset(data_dir)
    if cfg.max_per_class:
        samples = subsample_per_class(samples, cfg.max_per_class, cfg.seed)
    train_s, val_s = split_samples(cfg, samples)
    base = round(cfg.input_size * 256 / 224)
    xt, yt, train_s = load_images(train_s, base, "loading train")
    xv, yv, val_s = load_images(val_s, cfg.input_size, "loading val")
    xt, yt = xt.to(device), yt.to(device)
    n_classes = len(CODES)
    weights = class_weights(yt.cpu(), n_classes)

    model = build_model(cfg.arch, n_classes, cfg.init_weights, cfg.hub).to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    card = ModelCard(architecture=cfg.arch, input_size=cfg.input_size,
                     version=cfg.version or f"{cfg.arch}-{datetime.now(timezone.utc):%Y%m%d-%H%M}")
    teacher, tcard = (load_checkpoint(cfg.teacher, device) if cfg.teacher else (None, None))

    steps_per_epoch = max(1, len(xt) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    history: list[dict] = []
    best = {"macro_f1": -1.0, "epoch": -1}
    start_epoch = 0
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    head_only = cfg.freeze_epochs > 0
    opt = _optimizer(cfg, model, head_only)
    schedule = WarmupCosine(int(cfg.warmup_epochs * steps_per_epoch), total_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    state_path = out / STATE_FILE
    if resume and state_path.is_file():
        st = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(st["model"])
        head_only = st["epoch"] + 1 < cfg.freeze_epochs
        opt = _optimizer(cfg, model, head_only)
        opt.load_state_dict(st["optimizer"])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        sched.load_state_dict(st["scheduler"])
        history, best, start_epoch = st["history"], st["best"], st["epoch"] + 1
        gen.set_state(st["generator"].to(gen.get_state().device) if device == "cpu" else st["generator"])
        print(f"resumed after epoch {st['epoch'] + 1}")
    aug_cfg = AugmentConfig(**cfg.augment)
    t0 = time.time()
    bar = tqdm(total=cfg.epochs, initial=start_epoch, desc="epochs", unit="epoch")
    epoch = start_epoch
    while epoch < cfg.epochs:
        if head_only and epoch >= cfg.freeze_epochs:
            head_only = False
            opt = _optimizer(cfg, model, head_only)
            schedule = WarmupCosine(steps_per_epoch, steps_per_epoch * (cfg.epochs - epoch))
            sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        model.train()
        perm = torch.randperm(len(xt), generator=gen, device=device)
        run_loss, run_correct, seen = 0.0, 0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            xb = augment(xt[idx], cfg.input_size, card.mean, card.std, aug_cfg, gen)
            yb = yt[idx]
            if device == "cuda":
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb, weight=weights.to(device),
                                       label_smoothing=cfg.label_smoothing)
                if teacher is not None:
                    with torch.no_grad():
                        tin = xb if tcard.input_size == cfg.input_size else F.interpolate(
                            xb, size=tcard.input_size, mode="bilinear", align_corners=False)
                        tlog = teacher(tin).float()
                    T = cfg.kd_temperature
                    kd = F.kl_div(F.log_softmax(logits.float() / T, 1), F.softmax(tlog / T, 1),
                                  reduction="batchmean") * T * T
                    loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += loss.item() * len(idx)
            run_correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
        vlog = predict_logits(model, xv, card, device, amp)
        vm = _metrics(vlog, yv, weights)
        row = {"epoch": epoch + 1, "train_loss": run_loss / seen, "train_accuracy": run_correct / seen,
               "val_loss": vm["loss"], "val_accuracy": vm["accuracy"], "val_macro_f1": vm["macro_f1"],
               "lr": opt.param_groups[-1]["lr"], "seconds": round(time.time() - t0, 1)}
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{vm['accuracy']:.3f}", val_f1=f"{vm['macro_f1']:.3f}")
        if vm["macro_f1"] > best["macro_f1"]:
            best = {"macro_f1": vm["macro_f1"], "accuracy": vm["accuracy"], "epoch": epoch + 1}
            save_checkpoint(model, card, out)
        if epoch == start_epoch + 1 and cfg.max_minutes:
            # time the second epoch: the first also pays for start-up (cuDNN tuning, caches)
            per_epoch = max(1e-3, row["seconds"] - history[-2]["seconds"])
            fit = int((cfg.max_minutes * 60 - row["seconds"]) / per_epoch)
            if fit < cfg.epochs - epoch - 1:  # shorten the cosine schedule to the time budget
                cfg.epochs = epoch + 1 + max(1, fit)
                schedule.total_steps = steps_per_epoch * cfg.epochs
                print(f"time budget {cfg.max_minutes} min: {cfg.epochs} epochs")
        partial = state_path.with_suffix(".partial")  # an interruption mid-write keeps the last good state
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "history": history, "best": best, "epoch": epoch, "generator": gen.get_state()}, partial)
        partial.replace(state_path)
        bar.total = cfg.epochs
        bar.update(1)
        if epoch + 1 - best["epoch"] >= cfg.patience:
            print(f"early stop: no macro-F1 gain for {cfg.patience} epochs")
            break
        epoch += 1
    bar.close()
    train_seconds = round(time.time() - t0, 1)

    best_model, card = load_checkpoint(out, device)
    vlog = predict_logits(best_model, xv, card, device, amp)
    temperature = fit_temperature(vlog.numpy(), yv.numpy())
    probs_before = torch.softmax(vlog, 1).numpy()
    probs_after = torch.softmax(vlog / temperature, 1).numpy()
    write_history(history, out)
    report = classification_report(yv.numpy(), vlog.argmax(1).numpy(), list(CODES))
    card.temperature = round(float(temperature), 4)
    card.metrics = {
        "validation": {**report, "best_epoch": best["epoch"], "n_images": len(val_s),
                       "ece_before_temperature": round(expected_calibration_error(probs_before, yv.numpy()), 4),
                       "ece_after_temperature": round(expected_calibration_error(probs_after, yv.numpy()), 4)},
    }
    card.training = {
        "config": asdict(cfg), "epochs_run": len(history), "seconds": train_seconds,
        "hardware": _hardware(device), "torch": torch.__version__,
        "split": {"method": f"stratified {cfg.folds}-fold, fold {cfg.fold}" if cfg.folds > 1
                  else f"stratified {1 - cfg.val_fraction:.0%}/{cfg.val_fraction:.0%}", "seed": cfg.seed,
                  "n_train": len(train_s), "n_val": len(val_s),
                  "val_files": [s.rel for s in val_s]},
        "history": history,
    }
    card.data = {"source": str(Path(data_dir).name), "n_images": len(samples)}
    card.save(out / "model_card.json")
    state_path.unlink(missing_ok=True)
    return card.metrics["validation"]


def _hardware(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    import os
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def write_history(history: list[dict], out: Path) -> None:
    """history.csv and learning-curve PNGs (loss, accuracy / macro-F1, learning rate)."""
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
    ax[1].set_title("accuracy / macro-F1")
    ax[2].plot(ep, [h["lr"] for h in history])
    ax[2].set_title("learning rate")
    for a in ax:
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    ax[0].legend()
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=90)
    plt.close(fig)


