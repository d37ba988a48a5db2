"""Sufficient statistics of a group of observations, as ClickHouse aggregates them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Moments:
    """n, sum and sum of squares: enough for means, variances and every t/z test on them."""

    n: int
    total: float
    total_sq: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Moments:
        n, s, s2 = 0, 0.0, 0.0
        for v in values:
            n += 1
            s += v
            s2 += v * v
        return cls(n, s, s2)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def var(self) -> float:
        """Unbiased sample variance (n - 1); NaN below two observations."""
        if self.n < 2:
            return math.nan
        return max(self.total_sq - self.total * self.total / self.n, 0.0) / (self.n - 1)

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)
