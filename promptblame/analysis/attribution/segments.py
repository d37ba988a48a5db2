"""A version's step over the stable segments either side of its arrival, net of a trend.

The one-period before/after comparison is matched on time of day but holds a step against a
trend measured on one period either side, which on thin data is too noisy to tell the two
apart. Here the windows are the stable segments around the arrival: bounded by the
neighbouring change points, other versions' arrivals and a drift's end (so nothing else
changed inside them), at most `max_periods` periods a side. Over them one weighted least
squares fit per (bucket, stratum) mean:

    mean = stratum + time of day + slope x t + step x [t >= arrival]

(stratum = route x environment x the other dimension's value; time of day only when each
side holds a whole period). A drift that runs through the arrival goes into the slope, not
the step, so a harmless version arriving mid-drift gets a step near zero; a real step keeps
its size whether or not a trend is there. Weights are 1 / (sigma^2 / n + tau^2) (sampling
variance plus the bucket shocks); the residual scale is kept when it is above 1 (more
scatter than that model says), never used to shrink the errors. Pure: cells in, estimate out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm
from scipy import stats

from promptblame.analysis.attribution.cells import Cell, phase, sum_by
from promptblame.analysis.attribution.effects import pooled_variance


@dataclass(frozen=True)
class SegmentStep:
    """The step at the arrival over [start, end), net of a linear trend and time of day."""

    effect: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    slope: float  # per bucket
    start: int  # the windows: [start, arrival) old version, [arrival, end) new version
    end: int
    n_new: int
    n_old: int
    df: float


def window(
    arrival: int, *, breaks: Sequence[int], first: int, last: int, longest: int, gap: int = 2
) -> tuple[int, int]:
    """[start, end) around `arrival`: up to the nearest break more than `gap` buckets away on
    each side (a break within `gap` is the arrival itself, located a little differently),
    the series' ends, and at most `longest` buckets a side."""
    before = [b for b in breaks if b < arrival - gap]
    after = [b for b in breaks if b > arrival + gap]
    start = max([first, arrival - longest, *before])
    end = min([last, arrival + longest, *after])
    return start, end


def segment_step(
    cells: Sequence[Cell],
    *,
    arrival: int,
    start: int,
    end: int,
    is_new: Callable[[Cell], bool],
    is_old: Callable[[Cell], bool],
    stratum: Callable[[Cell], Hashable],
    tau2: float,
    alpha: float,
    bucket_seconds: int,
    period_seconds: int,
    trend: bool = True,
) -> SegmentStep | None:
    """The step (new after - old before) of the model in the module docstring; None when a
    side is empty or too short to fit (each side needs 3 buckets, and a whole period when
    the series has a daily rhythm to match). trend=False: no slope (level + step), the model of
    segments in which the change-point detector found nothing."""
    period = max(1, period_seconds // max(bucket_seconds, 1))
    rows = sum_by(
        (
            c
            for c in cells
            if c.n > 0
            and start <= c.bucket < end
            and ((c.bucket < arrival and is_old(c)) or (c.bucket >= arrival and is_new(c)))
        ),
        lambda c: (
            c.bucket,
            stratum(c),
            phase(c.start, bucket_seconds=bucket_seconds, period_seconds=period_seconds),
        ),
    )
    old_b = {k[0] for k in rows if k[0] < arrival}
    new_b = {k[0] for k in rows if k[0] >= arrival}
    if len(old_b) < 3 or len(new_b) < 3:
        return None
    use_phase = period > 1
    if use_phase and (arrival - start < period or end - arrival < period):
        return None  # the time of day cannot be matched: no claim
    keys = sorted(rows, key=lambda k: (k[0], str(k[1])))
    strata = sorted({str(k[1]) for k in keys})
    phases = sorted({k[2] for k in keys}) if use_phase else []
    var = pooled_variance(rows.values())
    if not math.isfinite(var) or var <= 0:
        return None
    x = np.zeros((len(keys), 3 + max(len(strata) - 1, 0) + max(len(phases) - 1, 0)))
    y = np.empty(len(keys))
    w = np.empty(len(keys))
    s_index = {s: i for i, s in enumerate(strata)}
    p_index = {p: i for i, p in enumerate(phases)}
    scale_t = float(period)
    for r, k in enumerate(keys):
        m = rows[k]
        y[r] = m.mean
        w[r] = 1.0 / (var / m.n + tau2)
        x[r, 0] = 1.0
        x[r, 1] = (k[0] - arrival) / scale_t
        x[r, 2] = 1.0 if k[0] >= arrival else 0.0
        col = 3
        if s_index[str(k[1])] > 0:
            x[r, col + s_index[str(k[1])] - 1] = 1.0
        col += max(len(strata) - 1, 0)
        if use_phase and p_index[k[2]] > 0:
            x[r, col + p_index[k[2]] - 1] = 1.0
    # without a trend the slope column is left out of the fit (its parameter reads as 0)
    cols = [c for c in range(x.shape[1]) if trend or c != 1]
    fit = sm.WLS(y, x[:, cols], weights=w).fit()
    params = np.zeros(x.shape[1])
    params[cols] = np.asarray(fit.params)
    cov = np.zeros((x.shape[1], x.shape[1]))
    cov[np.ix_(cols, cols)] = fit.cov_params(scale=max(1.0, float(fit.scale)))
    df = float(fit.df_resid)
    if df < 1 or not np.all(np.isfinite(params)):
        return None
    se = math.sqrt(max(float(cov[2, 2]), 0.0))
    if se <= 0:
        return None
    effect = float(params[2])
    q = float(stats.t.ppf(1 - alpha / 2, df))
    p = float(2 * stats.t.sf(abs(effect) / se, df))
    n_new = sum(m.n for k, m in rows.items() if k[0] >= arrival)
    n_old = sum(m.n for k, m in rows.items() if k[0] < arrival)
    return SegmentStep(
        effect=effect,
        se=se,
        ci_low=effect - q * se,
        ci_high=effect + q * se,
        p_value=p,
        slope=float(params[1]) / scale_t,
        start=start,
        end=end,
        n_new=n_new,
        n_old=n_old,
        df=df,
    )
