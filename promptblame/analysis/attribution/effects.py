"""Effect of a new version against its predecessor on comparable traffic (stratified).

Comparable traffic means the same stratum — the same time bucket (concurrent traffic: canary,
A/B arm, holdout) or the same time of day (before/after), the same route and environment, and
the same value of the other version dimension. Comparing inside strata is what keeps a change
of traffic mix (Simpson's paradox) or of the other dimension out of the effect.

Estimator: the Mantel-Haenszel weighted difference, sum w_s (m_new,s - m_old,s) / sum w_s with
w_s = n_new,s n_old,s / (n_new,s + n_old,s) (Greenland & Robins' risk difference for pass/fail;
the same weights for means). It stays well defined when strata are tiny (one response per arm
in an hour), where per-stratum tests and inverse-variance weights break down. Its variance uses
each arm's pooled within-stratum variance, plus `shock_var`: the variance of level shocks that
hit every response of a time stratum alike (bucket-to-bucket overdispersion). Shocks cancel in
a concurrent comparison (both arms share the bucket) but not before/after, where ignoring them
makes every busy series "significant". With a single stratum and no shocks the comparison is
delegated to `promptblame.analysis.compare` (Welch's t from moments, or the two-proportion
test), so the plain case is exactly the tested implementation.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from promptblame.analysis import compare
from promptblame.analysis.attribution.cells import Cell, MetricKind
from promptblame.analysis.moments import Moments

_MIN_WITHIN_DOF = 30  # below this, an arm's variance is taken from its pooled moments instead
_CAP = 25.0  # squared standardized differences are capped here when estimating tau^2
_CAP_MEAN = float(stats.chi2.cdf(_CAP, 3) + _CAP * stats.chi2.sf(_CAP, 1))  # E min(chi2_1, cap)

Strata = Mapping[tuple[Any, ...], Moments]  # key[0]: the time stratum


@dataclass(frozen=True)
class Estimate:
    """New minus old on comparable traffic, with a normal (or Welch/score) CI at 1 - alpha."""

    effect: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    n_new: int  # responses of the new version in the matched strata
    n_old: int
    mean_new: float  # raw means over the matched strata (for display; the effect is stratified)
    mean_old: float
    strata: int  # matched strata
    weight: float  # sum of Mantel-Haenszel weights: the effective size of the comparison
    test: str  # mantel_haenszel_z, or the compare test used for a single stratum

    def z(self) -> float:
        return self.effect / self.se if self.se > 0 else 0.0


def pooled_variance(moments: Iterable[Moments]) -> float:
    """Per-response variance pooled within strata; the arm's overall variance if too few dof."""
    ms = [m for m in moments if m.n > 0]
    dof = sum(m.n - 1 for m in ms)
    if dof >= _MIN_WITHIN_DOF:
        ss = sum(max(m.total_sq - m.total * m.total / m.n, 0.0) for m in ms)
        return ss / dof
    whole = sum(ms, Moments(0, 0.0, 0.0))
    return whole.var if whole.n >= 2 else math.nan


def stratified_difference(
    new: Strata,
    old: Strata,
    *,
    kind: MetricKind,
    alpha: float = 0.05,
    shock_var: float = 0.0,
) -> Estimate | None:
    """Stratified new - old over the strata both arms have; None when no stratum is shared.

    Keys are tuples whose first element is the time stratum: `shock_var` (variance of a
    common level shock per time stratum, already summed over both arms) is applied per key[0]
    with the strata of that time stratum fully correlated.
    """
    keys = [k for k in new if k in old and new[k].n > 0 and old[k].n > 0]
    if not keys:
        return None
    news = [new[k] for k in keys]
    olds = [old[k] for k in keys]
    sum_new = sum(news, Moments(0, 0.0, 0.0))
    sum_old = sum(olds, Moments(0, 0.0, 0.0))
    if len(keys) == 1 and shock_var == 0.0:
        single = _single(sum_new, sum_old, kind=kind, alpha=alpha)
        if single is not None:
            return single
    var_new, var_old = pooled_variance(news), pooled_variance(olds)
    if not (math.isfinite(var_new) and math.isfinite(var_old)):
        return None
    weights = [a.n * b.n / (a.n + b.n) for a, b in zip(news, olds, strict=True)]
    w_sum = sum(weights)
    effect = sum(w * (a.mean - b.mean) for w, a, b in zip(weights, news, olds, strict=True))
    effect /= w_sum
    var = sum(
        w * w * (var_new / a.n + var_old / b.n) for w, a, b in zip(weights, news, olds, strict=True)
    )
    by_time: dict[Hashable, float] = defaultdict(float)
    for k, w in zip(keys, weights, strict=True):
        by_time[k[0]] += w
    var += shock_var * sum(w * w for w in by_time.values())
    se = math.sqrt(var) / w_sum
    zq = float(special.ndtri(1 - alpha / 2))
    p = float(2 * special.ndtr(-abs(effect) / se)) if se > 0 else (0.0 if effect else 1.0)
    return Estimate(
        effect=effect,
        se=se,
        ci_low=effect - zq * se,
        ci_high=effect + zq * se,
        p_value=p,
        n_new=sum_new.n,
        n_old=sum_old.n,
        mean_new=sum_new.mean,
        mean_old=sum_old.mean,
        strata=len(keys),
        weight=w_sum,
        test="mantel_haenszel_z",
    )


def _single(new: Moments, old: Moments, *, kind: MetricKind, alpha: float) -> Estimate | None:
    """One stratum: the plain two-group test from `compare` (B = new, A = old)."""
    if kind == "proportion":
        result = compare.proportions(
            a_success=round(old.total),
            a_n=old.n,
            b_success=round(new.total),
            b_n=new.n,
            alpha=alpha,
        )
    else:
        result = compare.welch(a=old, b=new, alpha=alpha)
    if result.effect is None or result.ci_low is None or result.ci_high is None:
        return None
    if result.p_value is None:
        return None
    zq = float(special.ndtri(1 - alpha / 2))
    return Estimate(
        effect=result.effect,
        se=(result.ci_high - result.ci_low) / (2 * zq),
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        p_value=result.p_value,
        n_new=new.n,
        n_old=old.n,
        mean_new=new.mean,
        mean_old=old.mean,
        strata=1,
        weight=new.n * old.n / (new.n + old.n),
        test=result.test,
    )


def overdispersion(cells: Iterable[Cell], *, kind: MetricKind) -> float:
    """tau^2: variance of bucket-level level shocks beyond sampling noise (conservative).

    Two method-of-moments estimates from lag-1 differences, E d^2 = sampling variance + 2 tau^2,
    and the larger is kept (an underestimate makes before/after comparisons overconfident):

    * per cell series (one route, environment, prompt and model): shocks of any kind, but a
      thin series' differences are mostly sampling noise, so the estimate is noisy;
    * per bucket, pooling every cell's deviation from its own series mean: shocks common to
      the bucket (topics, load, provider hiccups), measured on all of its traffic at once.

    A version change never sits inside a cell series, and each cell's own mean is removed, so
    the differences are blind to the shifts being explained; capped standardized squares (see
    `_moment_tau2`) keep a mix or drift step from inflating tau^2. A daily profile adds a
    little (adjacent hours differ): conservative too.
    """
    series: dict[tuple[str, str, str, str], list[Cell]] = defaultdict(list)
    for c in cells:
        if c.n > 0:
            series[(c.route, c.environment, c.prompt, c.model)].append(c)
    if not series:
        return 0.0
    var_of: dict[tuple[str, str, str, str], float] = {}
    mean_of: dict[tuple[str, str, str, str], float] = {}
    overall = pooled_variance([c.moments for cs in series.values() for c in cs])
    for key, cs in series.items():
        whole = sum((c.moments for c in cs), Moments(0, 0.0, 0.0))
        mean_of[key] = whole.mean
        v = whole.mean * (1 - whole.mean) if kind == "proportion" else overall
        var_of[key] = v if math.isfinite(v) else 0.0
    rows: list[tuple[float, float]] = []  # (d^2, sampling variance)
    for key, cs in series.items():
        cs.sort(key=lambda c: c.bucket)
        for a, b in itertools.pairwise(cs):
            if b.bucket == a.bucket + 1:
                samp = var_of[key] * (1 / a.n + 1 / b.n)
                rows.append(((b.total / b.n - a.total / a.n) ** 2, samp))
    per_cell = _moment_tau2(rows)
    # per bucket: n-weighted mean deviation of its cells from their series means
    dev: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # n, sum dev, sum n var
    for key, cs in series.items():
        for c in cs:
            d = dev[c.bucket]
            d[0] += c.n
            d[1] += c.total - c.n * mean_of[key]
            d[2] += c.n * var_of[key]
    rows = []
    for bucket in sorted(dev):
        if bucket - 1 in dev:
            (n1, s1, v1), (n2, s2, v2) = dev[bucket - 1], dev[bucket]
            samp = v1 / (n1 * n1) + v2 / (n2 * n2)
            rows.append(((s2 / n2 - s1 / n1) ** 2, samp))
    return max(per_cell, _moment_tau2(rows))


def _moment_tau2(rows: list[tuple[float, float]]) -> float:
    """tau^2 from lag-1 differences d with Var d = sampling + 2 tau^2 (Gaussian likelihood).

    Solves sum (min(d^2 / V, 25) - E min(chi2_1, 25)) / V = 0, V = sampling + 2 tau^2: the
    maximum-likelihood equation with each squared standardized difference capped at 25, so a
    single step (mix, drift) cannot inflate it while the estimate stays unbiased without one.
    """
    rows = [r for r in rows if math.isfinite(r[0]) and math.isfinite(r[1]) and r[1] >= 0]
    if not rows:
        return 0.0
    d2 = np.array([r[0] for r in rows])
    samp = np.maximum(np.array([r[1] for r in rows]), 1e-12)

    def score(tau2: float) -> float:
        v = samp + 2 * tau2
        return float(np.sum((np.minimum(d2 / v, _CAP) - _CAP_MEAN) / v))

    if score(0.0) <= 0:
        return 0.0
    hi = max(float(d2.mean()), 1e-12)
    while score(hi) > 0:
        hi *= 4
    return float(optimize.brentq(score, 0.0, hi, xtol=1e-14, rtol=1e-6))
