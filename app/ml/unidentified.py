"""The product's decision per cell: count it under the network's top class, or send it to UNK.

A cell is unidentified (`UNK`) when
- it is not a stained cell: a grayscale image, or no stained nucleus found at the centre (see
  `framing`; QC's `no_stain` flag alone is not enough: it counts stained pixels over the whole
  frame, and a small PBC lymphocyte on a wide beige field is a stained cell that QC flags),
  whatever the network says;
- the network is unsure: its calibrated top-1 probability is below `min_confidence`;
- the cell is unlike the training cells: its energy score (-T·logsumexp(logits/T), low for
  familiar inputs; Liu et al. 2020, "Energy-based out-of-distribution detection") is above
  `max_energy`.
Both thresholds are calibrated on the validation split (`calibrate`): at most a stated share of
correctly classified validation cells may be sent to UNK, and within that budget the pair that
catches the most misclassified validation cells, plus the most synthetic non-cells made from
them (`non_cells`, where given: the energy threshold's use), is kept. The rule is stored in the
model card.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import logsumexp

UNK = "UNK"
NOT_A_CELL_FLAGS = ("grayscale",)
NO_NUCLEUS = "not a stained cell: no nucleus found"
LOW_CONFIDENCE = "low confidence"
OUT_OF_DISTRIBUTION = "unlike the training cells"
QUANTILE_GRID = np.linspace(0.0, 0.08, 33)  # per-threshold share of correct cells, searched


@dataclass(frozen=True)
class Rule:
    min_confidence: float = 0.0
    max_energy: float = float("inf")
    max_rejected_correct: float = 0.05  # the calibration's budget
    calibration: dict | None = None  # what the thresholds did on the validation split

    @classmethod
    def from_card(cls, data: dict | None) -> "Rule":
        if not data:
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("max_energy") is None:
            known["max_energy"] = float("inf")
        return cls(**known)

    def as_dict(self) -> dict:
        d = asdict(self)
        if not np.isfinite(self.max_energy):
            d["max_energy"] = None
        return d


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """-T·logsumexp(logits / T) per row (N×C -> N)."""
    return -temperature * logsumexp(logits / temperature, axis=1)


def decide(confidence: float, energy_score: float, flags: list[str], nucleus_found: bool,
           rule: Rule) -> str | None:
    """The reason this cell is unidentified, or None when it is counted under its top class."""
    not_a_cell = [f for f in flags if f in NOT_A_CELL_FLAGS]
    if not_a_cell:
        return "not a stained cell: " + ", ".join(f.replace("_", " ") for f in not_a_cell)
    if not nucleus_found:
        return "not a stained cell: no stain" if "no_stain" in flags else NO_NUCLEUS
    if confidence < rule.min_confidence:
        return LOW_CONFIDENCE
    if energy_score > rule.max_energy:
        return OUT_OF_DISTRIBUTION
    return None


def rejected(confidence: np.ndarray, energies: np.ndarray, rule: Rule) -> np.ndarray:
    return (confidence < rule.min_confidence) | (energies > rule.max_energy)


def calibrate(probs: np.ndarray, energies: np.ndarray, labels: np.ndarray,
              max_rejected_correct: float = 0.05,
              non_cells: tuple[np.ndarray, np.ndarray] | None = None) -> Rule:
    """Thresholds from validation cells: calibrated probabilities N×C, energies N, true labels N;
    `non_cells`: (confidences, energies) of the synthetic non-cells the product would otherwise
    count. The pair kept catches the largest share of misclassified cells plus share of those."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    nc_conf, nc_energy = non_cells if non_cells is not None and len(non_cells[0]) else (None, None)

    def caught_non_cells(rule: Rule) -> float:
        return float(rejected(nc_conf, nc_energy, rule).mean()) if nc_conf is not None else 0.0

    if correct.sum() == 0 or correct.all():
        best = (0.0, float("inf"))
    else:
        best, best_caught = (0.0, float("inf")), -1.0
        for qc in QUANTILE_GRID:
            t_conf = float(np.quantile(conf[correct], qc)) if qc > 0 else 0.0
            for qe in QUANTILE_GRID:
                t_energy = float(np.quantile(energies[correct], 1 - qe)) if qe > 0 else float("inf")
                rule = Rule(t_conf, t_energy)
                out = rejected(conf, energies, rule)
                if out[correct].mean() > max_rejected_correct:
                    continue
                caught = out[~correct].mean() + caught_non_cells(rule)
                if caught > best_caught:
                    best, best_caught = (t_conf, t_energy), caught
    rule = Rule(best[0], best[1], max_rejected_correct)
    out = rejected(conf, energies, rule)
    return Rule(rule.min_confidence, rule.max_energy, max_rejected_correct, calibration={
        "n_cells": int(len(labels)),
        "rejected_correct": round(float(out[correct].mean()) if correct.any() else 0.0, 4),
        "rejected_wrong": round(float(out[~correct].mean()) if (~correct).any() else 0.0, 4),
        "unk_rate": round(float(out.mean()), 4),
        "accuracy_all": round(float(correct.mean()), 4),
        "accuracy_counted": round(float(correct[~out].mean()) if (~out).any() else 0.0, 4),
        **({"n_non_cells": int(len(nc_conf)), "rejected_non_cells": round(caught_non_cells(rule), 4)}
           if nc_conf is not None else {}),
    })
