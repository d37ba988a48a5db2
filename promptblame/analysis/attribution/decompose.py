"""Mix / within decomposition of a change in the aggregate mean (Kitagawa-Oaxaca).

The aggregate mean is sum_g s_g m_g over segments g (route x environment), shares s, means m.
Between a before window (A) and an after window (B):

    mean_B - mean_A = sum_g (s_B - s_A)(m_A + m_B)/2   [mix: traffic moved between segments]
                    + sum_g (m_B - m_A)(s_A + s_B)/2   [within: segments themselves changed]

exactly, with symmetric weights so that neither window is privileged. A segment present on one
side only has no within part: all of its contribution is mix, at its observed mean. When the
aggregate falls while every segment holds steady, the shift is traffic mix, not a version.

`mix_se` is the standard error of the mix part under "no traffic moved" (delta method): the
shares of each window are multinomial, so sum_g (s_B - s_A) x_g with x_g the segment's mean
has variance Var_s(x) / n_A + Var_s(x) / n_B (Var_s: the share-weighted variance of the
segment means), plus what the segment means' own noise adds, sum_g (s_B - s_A)^2 Var(x_g).
A mix part that is not larger than its noise is no evidence of a traffic-mix cause.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from promptblame.analysis.attribution.cells import Cell, sum_by, total
from promptblame.analysis.moments import Moments


@dataclass(frozen=True)
class SegmentShift:
    """One segment's shares, means and its parts of the aggregate change."""

    route: str
    environment: str
    share_before: float
    share_after: float
    mean_before: float | None  # None when the segment had no traffic in that window
    mean_after: float | None
    mix: float
    within: float


@dataclass(frozen=True)
class Decomposition:
    """total = mix + within (aggregate mean after - before), per segment in `segments`."""

    total: float
    mix: float
    within: float
    segments: tuple[SegmentShift, ...]
    mix_se: float | None = None  # standard error of `mix` if no traffic moved (see above)


def decompose(before: Sequence[Cell], after: Sequence[Cell]) -> Decomposition | None:
    """Decompose mean(after) - mean(before) by route x environment; None if a side is empty."""
    n_a, n_b = total(before).n, total(after).n
    if n_a == 0 or n_b == 0:
        return None
    seg_a = sum_by(before, lambda c: (c.route, c.environment))
    seg_b = sum_by(after, lambda c: (c.route, c.environment))
    rows: list[SegmentShift] = []
    for key in sorted(set(seg_a) | set(seg_b)):
        a, b = seg_a.get(key), seg_b.get(key)
        s_a = a.n / n_a if a is not None else 0.0
        s_b = b.n / n_b if b is not None else 0.0
        m_a = a.mean if a is not None and a.n else None
        m_b = b.mean if b is not None and b.n else None
        if m_a is not None and m_b is not None:
            mix = (s_b - s_a) * (m_a + m_b) / 2
            within = (m_b - m_a) * (s_a + s_b) / 2
        else:
            mix = s_b * (m_b or 0.0) - s_a * (m_a or 0.0)
            within = 0.0
        rows.append(SegmentShift(key[0], key[1], s_a, s_b, m_a, m_b, mix, within))
    mix_sum = sum(r.mix for r in rows)
    within_sum = sum(r.within for r in rows)
    return Decomposition(
        mix_sum + within_sum, mix_sum, within_sum, tuple(rows), _mix_se(seg_a, seg_b, n_a, n_b)
    )


def _mix_se(seg_a: dict[Any, Moments], seg_b: dict[Any, Moments], n_a: int, n_b: int) -> float:
    """Standard error of the mix part if the shares did not move (module docstring)."""
    keys = sorted(set(seg_a) | set(seg_b))
    pooled = {
        k: seg_a.get(k, Moments(0, 0.0, 0.0)) + seg_b.get(k, Moments(0, 0.0, 0.0)) for k in keys
    }
    n = n_a + n_b
    share = {k: pooled[k].n / n for k in keys}
    x = {k: pooled[k].mean for k in keys}
    centre = sum(share[k] * x[k] for k in keys)
    spread = sum(share[k] * (x[k] - centre) ** 2 for k in keys)
    var = spread * (1 / n_a + 1 / n_b)
    for k in keys:
        a, b = seg_a.get(k), seg_b.get(k)
        d = (b.n / n_b if b else 0.0) - (a.n / n_a if a else 0.0)
        m = pooled[k]
        v = m.var if m.n >= 2 else 0.0
        var += d * d * (v / m.n if m.n else 0.0)
    return math.sqrt(max(var, 0.0))
