"""Training and augmentation settings: plain dataclasses, recorded verbatim in the model card.

Kept free of torch so the `marrow` command can show their defaults without loading it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class AugmentConfig:
    scale: tuple[float, float] = (0.85, 1.15)  # zoom factor
    shift: float = 0.06  # fraction of the image
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.3
    hue: float = 0.04  # fraction of a full turn
    stain_gain: float = 0.08  # per-channel multiplicative jitter
    gamma: float = 0.2
    blur_p: float = 0.25
    blur_sigma: tuple[float, float] = (0.3, 1.6)
    lowres_p: float = 0.2
    lowres_scale: tuple[float, float] = (0.35, 0.8)
    noise_p: float = 0.2
    noise_std: float = 0.02



@dataclass
class TrainConfig:
    arch: str = "rexnet_150"
    input_size: int = 224
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # or "sgd"
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    val_fraction: float = 0.2
    seed: int = 0
    split_seed: int | None = None  # the validation split's seed; None: `seed` (a spread over training
    # seeds keeps one split by passing the same split_seed)
    folds: int = 0  # k > 1: train on fold `fold` of a stratified k-fold instead of the split
    fold: int = 0
    init_weights: str | None = None
    hub: bool = False
    freeze_epochs: int = 0  # head-only epochs first (transfer learning)
    head_lr_mult: float = 10.0
    teacher: str | None = None
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    patience: int = 10
    device: str = "cpu"
    amp: bool = False
    max_per_class: int = 0  # >0: subsample (smoke tests)
    max_minutes: float = 0  # >0: fit the number of epochs to this budget after timing epoch 1
    version: str = ""
    framing: bool = True  # crop to the central cell (app.ml.framing), in training and in the product
    framing_side: float = 2.0  # the crop's side in nucleus extents (stored in the card, used by the product)
    balance: str = "source-class"  # "source-class": every (source, class) drawn equally often; "none"
    epoch_size: int = 0  # images drawn per epoch (0: the training set's size)
    channels_last: bool = True  # faster on CPU (the issue measured 6.9 vs 4.8 img/s)
    bf16: str = "auto"  # bf16 autocast on CPU: "auto" = where the CPU has AVX512-BF16 or AMX-BF16, "on", "off"
    unk_budget: float = 0.05  # share of correct validation cells the UNK rule may send to UNK
    non_cells: float = 0.0  # synthetic non-cells added per batch, as a share of it (app.ml.non_cells)
    non_cell_weight: float = 0.5  # weight of their uniform-target loss (outlier exposure)
    augment: dict = field(default_factory=lambda: asdict(AugmentConfig()))
