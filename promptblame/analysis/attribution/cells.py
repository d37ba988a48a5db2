"""Input of attribution: aggregated cells, and small helpers to slice and sum them.

A cell is what ClickHouse returns for `GROUP BY bucket, route, environment, prompt, model`
with `count(), sum(value), sum(value * value)`: enough for every mean, variance and test used
here, so the cost of attribution grows with cells, never with responses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from promptblame.analysis.moments import Moments

MetricKind = Literal["mean", "proportion"]
Dimension = Literal["prompt", "model"]
DIMENSIONS: tuple[Dimension, ...] = ("prompt", "model")
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Cell:
    """One (time bucket, route, environment, prompt, model) aggregate of a metric.

    bucket: consecutive bucket index (0, 1, 2, ... in time order; gaps are empty buckets).
    start: the bucket's start, a datetime (naive = UTC) or Unix seconds; gives the time of day.
    prompt: "prompt_id@prompt_version", e.g. "summarize@v7"; model: e.g. "gpt-4o-2024-08-06".
    n, total, total_sq: responses scored, sum and sum of squares of their values. Cells are
    keyed by response time: a score that arrives late adds to its response's bucket.
    """

    bucket: int
    start: datetime | int
    route: str
    environment: str
    prompt: str
    model: str
    n: int
    total: float
    total_sq: float

    @property
    def moments(self) -> Moments:
        return Moments(self.n, self.total, self.total_sq)

    def value(self, dimension: Dimension) -> str:
        return self.prompt if dimension == "prompt" else self.model

    def other(self, dimension: Dimension) -> str:
        return self.model if dimension == "prompt" else self.prompt


def start_seconds(start: datetime | int) -> int:
    """Unix seconds of a bucket start (naive datetimes are taken as UTC)."""
    if isinstance(start, datetime):
        aware = start if start.tzinfo is not None else start.replace(tzinfo=UTC)
        return math.floor(aware.timestamp())
    return int(start)


def phase(start: datetime | int, *, bucket_seconds: int, period_seconds: int) -> int:
    """Position of the bucket in the seasonal period (hour of day for hourly buckets)."""
    return (start_seconds(start) % period_seconds) // max(bucket_seconds, 1)


def in_range(cells: Iterable[Cell], lo: int, hi: int) -> list[Cell]:
    """Cells of buckets lo <= bucket < hi."""
    return [c for c in cells if lo <= c.bucket < hi and c.n > 0]


def sum_by(cells: Iterable[Cell], key: Callable[[Cell], K]) -> dict[K, Moments]:
    """Moments summed per key (keys in first-seen order). Accumulated in plain lists, in the
    cells' order: the same sums as adding Moments one by one, without an object per cell."""
    return {k: Moments(a[0], a[1], a[2]) for k, a in sums_by(cells, key).items()}


def sums_by(cells: Iterable[Cell], key: Callable[[Cell], K]) -> dict[K, list[Any]]:
    """`sum_by`'s sums as [n, total, total_sq] lists, for a caller that needs no Moments."""
    acc: dict[K, list[Any]] = {}
    for c in cells:
        k = key(c)
        a = acc.get(k)
        if a is None:
            acc[k] = [0 + c.n, 0.0 + c.total, 0.0 + c.total_sq]
        else:
            a[0] += c.n
            a[1] += c.total
            a[2] += c.total_sq
    return acc


def total(cells: Iterable[Cell]) -> Moments:
    n: Any = 0
    t: Any = 0.0
    q: Any = 0.0
    for c in cells:
        n += c.n
        t += c.total
        q += c.total_sq
    return Moments(n, t, q)
