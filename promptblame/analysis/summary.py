"""Mean and confidence interval from sufficient statistics (n, sum, sum of squares)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float | None
    low: float | None
    high: float | None
    level: float
    reason: str | None = None  # machine-readable when the interval cannot be computed


def mean_ci(*, n: int, total: float, total_sq: float, level: float = 0.95) -> MeanCI:
    """Student-t interval for the mean. n < 2 gives no interval and says why."""
    if n <= 0:
        return MeanCI(0, None, None, None, level, "no_data")
    mean = total / n
    if n == 1:
        return MeanCI(1, mean, None, None, level, "single_observation")
    var = max(total_sq - total * total / n, 0.0) / (n - 1)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * math.sqrt(var / n)
    return MeanCI(n, mean, mean - half, mean + half, level)
