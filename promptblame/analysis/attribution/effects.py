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

from scipy import special

from promptblame.analysis import compare
from promptblame.analysis.attribution.cells import Cell, MetricKind
from promptblame.analysis.moments import Moments

_MIN_WITHIN_DOF = 30  # below this, an arm's variance is taken from its pooled moments instead

Strata = Mapping[tuple[Hashable, ...], Moments]


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
    """tau^2: variance of bucket-level shocks beyond sampling noise, per response group.

    Method of moments on lag-1 differences of each cell series (one route, environment,
    prompt and model): E d^2 = sigma^2 (1/n_t + 1/n_t-1) + 2 tau^2. A version change never
    sits inside one series, so the differences are blind to the shifts being explained; the
    largest 2% (standardized) are trimmed so that a mix or drift step cannot inflate tau^2.
    Pairs are weighted by their size, because busy buckets are the ones that tell shocks from
    sampling noise. A daily profile adds a little (adjacent hours differ): conservative.
    """
    series: dict[tuple[str, str, str, str], list[Cell]] = defaultdict(list)
    for c in cells:
        if c.n > 0:
            series[(c.route, c.environment, c.prompt, c.model)].append(c)
    sigma2 = pooled_variance(
        [c.moments for cs in series.values() for c in cs] if kind == "mean" else []
    )
    rows: list[tuple[float, float, float]] = []  # (d^2, sampling variance, weight)
    for cs in series.values():
        cs.sort(key=lambda c: c.bucket)
        for a, b in itertools.pairwise(cs):
            if b.bucket != a.bucket + 1:
                continue
            ma, mb = a.total / a.n, b.total / b.n
            if kind == "proportion":
                p = (a.total + b.total) / (a.n + b.n)
                s2 = p * (1 - p) * (a.n + b.n) / max(a.n + b.n - 1, 1)
            else:
                s2 = sigma2
            samp = s2 * (1 / a.n + 1 / b.n)
            rows.append(((mb - ma) ** 2, samp, a.n * b.n / (a.n + b.n)))
    if not rows or not all(math.isfinite(r[1]) for r in rows):
        return 0.0
    rows.sort(key=lambda r: r[0] / r[1] if r[1] > 0 else math.inf)
    rows = rows[: max(1, math.ceil(len(rows) * 0.98))]
    w = sum(r[2] for r in rows)
    return max(0.0, sum(r[2] * (r[0] - r[1]) for r in rows) / (2 * w))
