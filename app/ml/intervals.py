"""The exact (Clopper-Pearson) binomial interval, defined once: the differential's percents and
ratios (`app.differential.indices`) and the UNK rate and accuracy of `marrow evaluate` use it.
It is what Rümke's table tabulates for differential counts."""
from __future__ import annotations

from scipy.stats import binomtest

CONFIDENCE = 0.95


def interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Exact binomial interval of k of n, as fractions (None when n is 0)."""
    if n <= 0:
        return None
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)
