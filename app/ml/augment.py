"""Batched training augmentation for stained cells, run on the training device.

Everything is a tensor op on the whole batch (GPU-friendly, no per-image Python):
random rotation by any angle and flips (a cell has no up or down), small zoom and shift,
brightness/contrast/saturation/hue and per-channel stain gain, gamma, optional Gaussian
blur and resolution loss (other scanners and image sizes), sensor noise.
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F

from app.ml.training_config import AugmentConfig


def _u(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def geometric(x: torch.Tensor, out_size: int, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Rotate (any angle), flip, zoom and shift a float batch N×3×H×W into N×3×S×S."""
    n, dev = x.shape[0], x.device
    angle = _u(n, 0, 2 * math.pi, g, dev)
    zoom = _u(n, *cfg.scale, g, dev)
    flip = torch.where(torch.rand(n, generator=g, device=dev) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = _u(2 * n, -cfg.shift, cfg.shift, g, dev).view(n, 2) * 2
    grid = F.affine_grid(theta, [n, 3, out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _hue_rotate(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate hue around the gray axis (Rodrigues rotation in RGB), per image."""
    a = turns * 2 * math.pi
    c, s = torch.cos(a), torch.sin(a)
    k = 1.0 / 3.0
    sq = math.sqrt(k)
    m = torch.empty(x.shape[0], 3, 3, device=x.device)
    for i in range(3):
        for j in range(3):
            cross = 0.0 if i == j else (sq if (j - i) % 3 == 2 else -sq)
            m[:, i, j] = c * (1.0 if i == j else 0.0) + k * (1 - c) + cross * s
    return torch.einsum("nij,njhw->nihw", m, x)


def photometric(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    view = (n, 1, 1, 1)
    x = x * _u(n, 1 - cfg.brightness, 1 + cfg.brightness, g, dev).view(view)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * _u(n, 1 - cfg.contrast, 1 + cfg.contrast, g, dev).view(view) + mean
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = gray + (x - gray) * _u(n, 1 - cfg.saturation, 1 + cfg.saturation, g, dev).view(view)
    x = _hue_rotate(x, _u(n, -cfg.hue, cfg.hue, g, dev))
    x = x * _u(3 * n, 1 - cfg.stain_gain, 1 + cfg.stain_gain, g, dev).view(n, 3, 1, 1)
    x = x.clamp(0, 1) ** _u(n, 1 - cfg.gamma, 1 + cfg.gamma, g, dev).view(view)
    return x


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur as one grouped convolution (separable, 9 taps)."""
    n, c, h, w = x.shape
    r = torch.arange(-4, 5, device=x.device, dtype=x.dtype)
    k = torch.exp(-(r[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c)×9
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (4, 4, 0, 0), mode="reflect"), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, 4, 4), mode="reflect"), k[:, None, :, None], groups=n * c)
    return y.view(n, c, h, w)


def degrade(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    pick = torch.rand(n, generator=g, device=dev) < cfg.blur_p
    if pick.any():
        x[pick] = _gaussian_blur(x[pick], _u(int(pick.sum()), *cfg.blur_sigma, g, dev))
    pick = torch.rand(n, generator=g, device=dev) < cfg.lowres_p
    if pick.any():
        s = x.shape[-1]
        small = max(16, int(s * float(_u(1, *cfg.lowres_scale, g, dev))))
        low = F.interpolate(x[pick], size=(small, small), mode="area")
        x[pick] = F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)
    pick = torch.rand(n, generator=g, device=dev) < cfg.noise_p
    if pick.any():
        x[pick] = x[pick] + torch.randn(x[pick].shape, generator=g, device=dev) * cfg.noise_std
    return x.clamp(0, 1)


def augment(batch_u8: torch.Tensor, out_size: int, mean, std, cfg: AugmentConfig,
            g: torch.Generator) -> torch.Tensor:
    """uint8 N×3×H×W -> augmented, normalised float N×3×S×S."""
    x = batch_u8.float().div_(255)
    x = geometric(x, out_size, cfg, g)
    x = degrade(photometric(x, cfg, g), cfg, g)
    return normalize(x, mean, std)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
