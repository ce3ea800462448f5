"""The exact (Clopper-Pearson) binomial interval, defined once: the differential's percents and
ratios (`app.differential.indices`) and the UNK rate and accuracy of `marrow evaluate` use it.
It is what Rümke's table tabulates for differential counts."""
from __future__ import annotations

from scipy.special import betaincinv

CONFIDENCE = 0.95


def interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Exact binomial interval of k of n, as fractions (None when n is 0).

    Taken as the Beta quantiles the interval is defined by, the same bounds as scipy's
    `binomtest(k, n).proportion_ci(method="exact")`, which finds them by root search after
    computing the test's p-value: about 2 ms a call against microseconds, and a case's summary
    takes one per category and index (the case list, one per case)."""
    if n <= 0:
        return None
    alpha = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, alpha))
    high = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - alpha))
    return low, high
