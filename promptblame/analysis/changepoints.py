"""Change points in a quality-metric series, from per-bucket sufficient statistics.

Input is one series per (app, route, metric): time buckets, each with n, sum and sum of squares
of the per-response metric (a score in 0..1, or pass/fail — then the sum of squares equals the
sum). Every step works on the buckets only, so the cost grows with the number of buckets and
never with rows: a bucket of a million responses costs the same as a bucket of three.

Model
-----
Bucket i has mean m_i = sum_i / n_i. Within a segment of constant level mu,

    m_i = mu + s(k_i) + u_i + e_i,    e_i ~ (0, sigma_i^2 / n_i),    u_i ~ (0, tau^2)

* s(k) is a time-of-day profile (k = the bucket's phase in `season_period`, one day by
  default), fitted from the series itself and removed before segmentation, so a daily rhythm
  is not a change: the weighted mean per phase of the series minus its current segment levels
  (alternated with segmentation: back-fitting of levels + profile), shrunk towards flat by the
  James-Stein factor so that a low-traffic series does not trade noise for a profile. It is
  fitted when the series spans at least three periods (a phase seen fewer times pools its
  neighbouring phases); a shorter series cannot tell a daily rhythm from changes.
* sigma_i^2 is the per-response variance. For a 0..1 metric it is phi mu (1 - mu) at the
  level of the bucket's segment (phi = 1 for pass/fail; pooled from the within-bucket
  variances otherwise), so the variance follows the level when a pass rate drops from 0.95 to
  0.80. For other metrics it is the pooled within-bucket variance.
* tau^2 is the overdispersion: real bucket means wander more than sampling noise explains
  (different users, topics and load from one hour to the next). Without it a busy bucket
  (n = 500, sampling sd 0.008) looks like a change at every wobble. It is estimated from lag-1
  differences of the de-seasonalized bucket means (blind to the level shifts being looked
  for), by the Gaussian likelihood equation with each squared standardized difference capped
  at 25 (one outlier or shift cannot inflate it), weighted so that the busy buckets — the ones
  that tell overdispersion from sampling noise — count most; the profile's leverage is
  accounted for. A raw series (n = 1, no within-bucket variance) gets its whole per-point
  variance this way: the MAD-of-differences idea, made efficient.

So bucket i has variance v_i = sigma_i^2 / n_i + tau^2, weight w_i = 1 / v_i.

Method: penalized likelihood, solved exactly (optimal partitioning with PELT pruning)
--------------------------------------------------------------------------------------
Segmentation minimizes the total segment cost + `penalty` x (number of change points) over all
segmentations whose segments have at least `min_segment` non-empty buckets and `min_segment_n`
responses. The cost of a segment is -2 x its maximized log-likelihood, in chi-square units:

* 0..1 metrics: quasi-binomial deviance with effective counts c_i = w_i mu_ref (1 - mu_ref)
  (exactly the binomial deviance for pass/fail without overdispersion). Near the reference
  level it equals the weighted Gaussian cost below, but it has the right skew near 0 or 1: a
  3-hour dip of a 93% pass rate seen on 35 responses is not the 5-sigma event a Gaussian
  would make of it;
* other metrics: the weighted within-segment sum of squares, sum w_i (y_i - ybar_w)^2.

Why this method:

* it is the likelihood of the model above, so uneven traffic is handled by the weights,
  empty buckets simply carry none, and overdispersion keeps busy buckets honest;
* it finds all change points jointly and exactly; greedy binary segmentation can miss a short
  rollback whose two changes cancel over the whole series;
* the cost is in chi-square units, so one penalty serves every metric scale and traffic level;
  it is calibrated by simulation (see `default_penalty`): about 0.3% of unchanged series get a
  false change point, whatever their length;
* the dynamic programme is O(T^2) at worst and near O(T) with PELT pruning: ~50 ms for a month
  of hourly buckets, including the profile and variance fits.

`min_effect` (default: scale-free, see `default_min_effect` — one point on a 0..1 metric, less
near 0 or 1, 1 % of the level on other scales) then merges neighbouring segments whose levels
differ by less, smallest difference first: with huge traffic, tiny real drifts are significant
but not worth an alarm. `min_segment` (default 3 buckets) and `min_segment_n`
(default 30 responses) bound how short a segment can be.

Reported per change point (see `ChangePoint`): the first bucket of the new level, the levels
before and after (n-weighted means of the de-seasonalized bucket means over the two adjacent
segments), the effect (after - before) with a normal CI from the same variance model, and two
significance figures: `gain`, the drop in cost (chi-square units) when the two adjacent
segments are split there, to compare with `penalty`; and `p_value`, the two-sided p of the
likelihood-ratio z = sign(effect) sqrt(gain), Bonferroni-adjusted for every split position that
was possible between the neighbouring change points (conservative for the search within that
stretch). Both are conditional on the neighbouring change points and on the estimated
variances, and the CI takes the location as known (an effect found at an estimated location
is slightly inflated when it is small): read them as approximate.

Beyond steps (issue 17)
-----------------------
* Weekly rhythm: on a series of three weeks or more, day-of-week offsets are fitted on top of
  the daily profile (back-fitted with it), read from day-to-day differences (median per
  weekday over the weeks, so a step cannot fake one) and shrunk like the daily profile: a
  weekend dip is not two changes a week.
* Drifts: a run of same-direction steps is compared with one continuous broken line (flat,
  linear ramp, flat) over the same stretch, by penalized likelihood on the weighted Gaussian
  cost: the ramp pays one penalty for its onset and one for its end when it ends inside the
  stretch, the staircase one per step (a single step is only turned into a ramp when the ramp
  wins by a whole penalty more). Every (onset, end) pair is searched exactly from cumulative
  sums. A drift is one finding (`kind="drift"`): onset, end (None while still moving), slope
  and total effect. The lag-1-difference noise estimate is blind to a slow trend (a slope b
  adds b^2 to the squared differences), so a trend does not inflate the count either.
* Changes of spread: the variance model is one for the whole series, so a series that only
  got noisier would show its wobbles as steps. Each step is re-tested with the noise of the
  buckets next to it on each side (its own within-bucket variance and overdispersion, from at
  least 24 and at most 72 buckets) wherever that is larger than the model's, holding the
  likelihood ratio to the penalty's p-value through a Student t at the Satterthwaite df of
  that estimate; a blip (out and back) must pay for both of its steps jointly.
* Scale-free: the penalty is in chi-square units (relative to the series' own noise), and the
  default `min_effect` follows the series' scale (`default_min_effect`).

Limitations: u_i are independent; tau^2 and phi are constant over the series except in the
re-test of each step; drifts are linear between their knots.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

from promptblame.analysis.moments import Moments

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Start = datetime | int

METHOD = "pelt-penalized-likelihood"
_CAP = 25.0  # squared standardized differences are capped here when estimating tau^2
_CAP_MEAN = float(stats.chi2.cdf(_CAP, 3) + _CAP * stats.chi2.sf(_CAP, 1))  # E min(chi2_1, cap)
_MIN_WITHIN_DOF = 30  # below this many within-bucket degrees of freedom, sigma^2 is not used
_MIN_SEASON_PERIODS = 3  # periods a profile value must be estimated from
_VAR_FLOOR = 1e-12  # per-bucket variance floor (a noiseless series)

# Penalty calibration (chi-square units), see `default_penalty`.
_PENALTY_INTERCEPT = 6.5
_PENALTY_SLOPE = 1.5


def default_penalty(n_buckets: int) -> float:
    """Penalty per change point for a series of `n_buckets` non-empty buckets (T).

    6.5 + 1.5 log T, in chi-square units (16.4 for 720 buckets). The smallest penalty at which
    an unchanged series shows no change is a maximum over ~T split positions (and pairs of
    them), so its tail grows with log T: slower than 2 log T (neighbouring splits are strongly
    correlated), faster than the log log T of a single Gaussian CUSUM (skew, estimated
    variances, profile). Calibrated by simulation (`benchmarks/changepoints.py --calibrate`,
    seeds disjoint from the tests and the benchmark) on 2,400 unchanged series of 48 to 2,000
    buckets: 1 to 300 responses an hour with day/night swings of up to 20x and up to 5% empty
    hours, pass/fail or continuous scores, with and without a daily profile and overdispersion.
    The penalty is the 99.7% quantile of that critical penalty (less the slope), so ~0.3% of
    unchanged series get a false change point (0-0.6% per length), fewer with min_effect.
    """
    return _PENALTY_INTERCEPT + _PENALTY_SLOPE * math.log(max(n_buckets, 2))


def default_min_effect(level: float, *, unit_interval: bool) -> float:
    """The smallest level change worth reporting, from the series' own scale.

    0..1 metrics (scores, pass rates): one point, or a tenth of the distance to the nearer
    bound when the level is near 0 or 1 (an error rate moving from 0.5 % to 1.2 % is a real
    change though under a point). Other metrics: 1 % of the level (latency in ms, cost in
    dollars, token counts), so the same default means the same thing on every scale."""
    if unit_interval:
        return min(0.01, 0.1 * min(level, 1.0 - level))
    return 0.01 * abs(level)


@dataclass(frozen=True)
class Bucket:
    """One time bucket: start, and n / sum / sum of squares of the metric over its responses."""

    start: Start
    n: int
    total: float
    total_sq: float

    @classmethod
    def of(cls, start: Start, moments: Moments) -> Bucket:
        return cls(start, moments.n, moments.total, moments.total_sq)


@dataclass(frozen=True)
class ChangePoint:
    index: int  # first (non-empty) bucket of the new level
    start: Start  # that bucket's start
    level_before: float  # n-weighted mean of the de-seasonalized bucket means, previous segment
    level_after: float  # same, next segment
    effect: float  # level_after - level_before
    effect_low: float  # CI of the effect at `confidence` (normal, location taken as known)
    effect_high: float
    z: float  # likelihood-ratio z: sign(effect) * sqrt(gain)
    p_value: float  # two-sided p of z, Bonferroni-adjusted for the split positions searched
    gain: float  # cost drop (chi-square units) from splitting the two segments here
    penalty: float  # the penalty each change point had to pay
    direction: Literal["up", "down"]
    # "step": a level shift at `index`; "drift": a linear drift from `index` (its onset) to
    # `end_index` (None: still moving at the end of the series), one finding for the ramp.
    kind: Literal["step", "drift"] = "step"
    end_index: int | None = None  # drift: the first bucket at the new level
    end: Start | None = None  # that bucket's start
    slope: float | None = None  # drift: change per bucket (metric units)


@dataclass(frozen=True)
class Segment:
    start_index: int  # first bucket (empty buckets before a change belong to the previous one)
    end_index: int  # last bucket, inclusive
    start: Start
    end: Start  # start of the last bucket
    n: int  # responses
    mean: float  # raw mean of every response in the segment (sum / n)
    level: float  # n-weighted mean of the de-seasonalized bucket means
    slope: float | None = None  # change per bucket when the segment is a drift's ramp


@dataclass(frozen=True)
class ChangePointResult:
    change_points: tuple[ChangePoint, ...]
    segments: tuple[Segment, ...]
    reason: str | None  # machine-readable when the series could not be analysed
    method: str = METHOD
    params: Mapping[str, float | int | str | None] = field(default_factory=dict)


def buckets_from_arrays(
    *,
    starts: Sequence[Start],
    n: Sequence[int] | npt.ArrayLike,
    total: Sequence[float] | npt.ArrayLike,
    total_sq: Sequence[float] | npt.ArrayLike,
) -> list[Bucket]:
    """Column-wise input (e.g. straight from a query result) as buckets."""
    ns = np.asarray(n).tolist()
    ts = np.asarray(total, dtype=np.float64).tolist()
    qs = np.asarray(total_sq, dtype=np.float64).tolist()
    if not len(starts) == len(ns) == len(ts) == len(qs):
        raise ValueError("starts, n, total and total_sq must have the same length")
    return [Bucket(s, int(c), t, q) for s, c, t, q in zip(starts, ns, ts, qs, strict=True)]


def detect_change_points_raw(
    *,
    values: Sequence[float] | npt.ArrayLike,
    starts: Sequence[Start] | None = None,
    penalty: float | None = None,
    min_segment: int = 3,
    min_segment_n: int = 30,
    min_effect: float | None = None,
    season_period: timedelta | int | None = None,
    confidence: float = 0.95,
) -> ChangePointResult:
    """Raw series, one observation per point: each point is a bucket of n = 1.

    With no within-bucket variance, the per-point variance is estimated from the data (from
    lag-1 differences, robustly: see `_tau2`); 0/1 points are pass/fail, with variance
    p (1 - p). No profile by default (starts default to 0, 1, 2, ...); `min_segment_n`
    (default 30) is then the minimum segment length in points.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    points: Sequence[Start] = list(range(len(x))) if starts is None else starts
    if len(points) != len(x):
        return _degenerate("length_mismatch", [], params={})
    buckets = [Bucket(s, 1, float(v), float(v) * float(v)) for s, v in zip(points, x, strict=True)]
    return detect_change_points(
        buckets=buckets,
        penalty=penalty,
        min_segment=min_segment,
        min_segment_n=min_segment_n,
        min_effect=min_effect,
        season_period=season_period,
        confidence=confidence,
    )


def detect_change_points(
    *,
    buckets: Sequence[Bucket],
    penalty: float | None = None,
    min_segment: int = 3,
    min_segment_n: int = 30,
    min_effect: float | None = None,
    season_period: timedelta | int | None = timedelta(days=1),
    confidence: float = 0.95,
    max_iterations: int = 4,
) -> ChangePointResult:
    """Change points of the level of a bucketed series (see the module docstring).

    buckets: consecutive time buckets in increasing start order, empty ones included (n = 0)
        or left out (then they simply do not exist for the method).
    penalty: per change point, chi-square units; None = `default_penalty(non-empty buckets)`.
    min_segment: minimum non-empty buckets per segment (>= 1).
    min_segment_n: minimum responses per segment.
    min_effect: neighbouring segments whose levels differ by less are merged (0 = off);
        None = scale-free (`default_min_effect`): one point on a 0..1 metric, a tenth of the
        distance to the nearer bound near 0 or 1 (an error rate of 0.5 %), 1 % of the level
        for any other metric (latency in ms, cost, tokens).
    season_period: period of the profile removed before segmentation; a timedelta, or an int in
        the units of int starts (seconds for datetime starts; a timedelta with int starts takes
        them as Unix seconds). None = no profile.
    confidence: level of the effect CIs.
    max_iterations: rounds of profile/variance fit + segmentation (stops when stable).

    Degenerate input gives a result with `reason` set instead of an exception: "no_data",
    "too_short" (fewer than 2 x min_segment non-empty buckets or 2 x min_segment_n
    responses: one segment, no change points), "invalid_input" (negative n, NaN),
    "invalid_starts" (mixed or unsupported start types, bad period), "unsorted_starts",
    "invalid_parameters".
    """
    params: dict[str, float | int | str | None] = {
        "min_segment": min_segment,
        "min_segment_n": min_segment_n,
        "min_effect": min_effect,
        "confidence": confidence,
        "n_buckets": len(buckets),
    }
    bad_effect = min_effect is not None and not min_effect >= 0
    if min_segment < 1 or min_segment_n < 0 or bad_effect or not 0 < confidence < 1:
        return _degenerate("invalid_parameters", [], params)
    if not buckets:
        return _degenerate("no_data", [], params)
    ns = np.array([b.n for b in buckets], dtype=np.int64)
    sums = np.array([b.total for b in buckets], dtype=np.float64)
    sqs = np.array([b.total_sq for b in buckets], dtype=np.float64)
    if (ns < 0).any() or not (np.isfinite(sums).all() and np.isfinite(sqs).all()):
        return _degenerate("invalid_input", [], params)
    starts = [b.start for b in buckets]
    numbers = _start_numbers(starts)
    keys = _phase_keys(starts, season_period, numbers=numbers)
    if numbers is None or keys is None:
        return _degenerate("invalid_starts", [], params)
    if any(a >= b for a, b in itertools.pairwise(numbers)):
        return _degenerate("unsorted_starts", [], params)

    nonempty = np.flatnonzero(ns > 0)
    params["n_nonempty"] = int(nonempty.size)
    if nonempty.size == 0:
        return _degenerate("no_data", [], params)
    n = ns[nonempty].astype(np.float64)
    m = sums[nonempty] / n
    n_total = float(n.sum())
    if nonempty.size < 2 * min_segment or n_total < 2 * min_segment_n:
        seg = _segments_report(buckets, ns, sums, nonempty, m, [], np.zeros_like(m))
        return _degenerate("too_short", seg, params)

    pen = default_penalty(int(nonempty.size)) if penalty is None else float(penalty)
    params["penalty"] = pen
    noise = _Noise.estimate(n, sums[nonempty], sqs[nonempty])
    if min_effect is None:
        min_effect = default_min_effect(float(np.dot(n, m) / n_total), unit_interval=noise.binomial)
        params["min_effect"] = min_effect
        params["min_effect_rule"] = "unit-interval" if noise.binomial else "relative-1pct"
    params["cost"] = "quasi-binomial" if noise.binomial else "gaussian"
    params["sigma2"] = noise.sigma2
    params["phi"] = noise.phi if noise.binomial else None
    params["variance_model"] = (
        "bernoulli+overdispersion"
        if noise.bernoulli
        else "within+overdispersion"
        if noise.phi > 0
        else "homogeneous"
    )
    season = _season(keys, nonempty)
    params["season"] = "fitted" if season is not None else "none"
    if season_period is not None and season is None:
        params["season"] = "skipped: fewer than 3 periods"
    weekly = _weekly_season(numbers, nonempty, season_period)
    params["weekly"] = "fitted" if weekly is not None else "none"

    fit = _fit(
        m,
        n,
        noise,
        season,
        penalty=pen,
        min_segment=min_segment,
        min_segment_n=min_segment_n,
        min_effect=min_effect,
        max_iterations=max_iterations,
        weekly=weekly,
    )
    params["tau2"] = fit.tau2
    params["iterations"] = fit.iterations
    params["season_amplitude"] = float(fit.profile.max() - fit.profile.min())

    y, v = fit.y, 1.0 / fit.w
    pos = nonempty.astype(np.float64)  # bucket positions: the time axis of a drift's slope
    cps, ramps = _ramps(y, fit.w, pos, fit.cps, penalty=pen, min_segment=min_segment)
    ramps = [r for r in ramps if abs(r.beta) >= min_effect]
    fixed = {*(r.onset for r in ramps), *(r.end for r in ramps if r.end < len(y))}
    within = np.maximum(sqs[nonempty] - sums[nonempty] * m, 0.0)
    cps = _confirm_steps(y, n, within, noise, cps, fixed, penalty=pen, v_global=v)
    params["drifts"] = len(ramps)
    edges = sorted({*cps, *(r.onset for r in ramps), *(r.end for r in ramps if r.end < len(y))})
    zq = float(stats.norm.ppf(0.5 + confidence / 2))
    bounds = [0, *edges, len(y)]
    change_points: list[ChangePoint] = []
    for cp in cps:
        j = bounds.index(cp)
        a, b = bounds[j - 1], bounds[j + 1]
        lb, vb = _n_level(y[a:cp], n[a:cp], v[a:cp])
        la, va = _n_level(y[cp:b], n[cp:b], v[cp:b])
        effect = la - lb
        half = zq * math.sqrt(vb + va)
        gain = max(fit.cost.span(a, b) - fit.cost.span(a, cp) - fit.cost.span(cp, b), 0.0)
        z = math.copysign(math.sqrt(gain), effect)
        positions = _split_positions(n[a:b], min_segment, min_segment_n)
        p = min(1.0, positions * 2 * float(stats.norm.sf(abs(z))))
        idx = int(nonempty[cp])
        change_points.append(
            ChangePoint(
                index=idx,
                start=starts[idx],
                level_before=lb,
                level_after=la,
                effect=effect,
                effect_low=effect - half,
                effect_high=effect + half,
                z=z,
                p_value=p,
                gain=gain,
                penalty=pen,
                direction="up" if effect > 0 else "down",
            )
        )
    for r in ramps:
        change_points.append(_drift_point(r, nonempty, starts, pos, pen, zq, len(y)))
    change_points.sort(key=lambda c: c.index)
    slopes = {
        r.onset: r.beta / (_end_pos(pos, r.end) - pos[r.onset]) for r in ramps if r.end > r.onset
    }
    segments = _segments_report(buckets, ns, sums, nonempty, m, edges, fit.profile, slopes)
    return ChangePointResult(tuple(change_points), tuple(segments), None, METHOD, params)


def _end_pos(pos: FloatArray, end: int) -> float:
    return float(pos[end]) if end < pos.size else float(pos[-1]) + 1.0


def _drift_point(
    r: _Ramp,
    nonempty: IntArray,
    starts: Sequence[Start],
    pos: FloatArray,
    penalty: float,
    zq: float,
    size: int,
) -> ChangePoint:
    """One drift as one finding: onset, end (None when still moving), slope, total effect.

    gain is the cost drop against one flat level over the stretch; the p-value is
    Bonferroni-adjusted for every (onset, end) pair searched."""
    half = zq * math.sqrt(r.var_beta)
    gain = max(r.flat_cost - r.cost, 0.0)
    z = math.copysign(math.sqrt(gain), r.beta)
    width = r.b - r.a
    p = min(1.0, max(width * width / 2, 1.0) * 2 * float(stats.norm.sf(abs(z))))
    idx = int(nonempty[r.onset])
    end_idx = int(nonempty[r.end]) if r.end < size else None
    return ChangePoint(
        index=idx,
        start=starts[idx],
        level_before=r.alpha,
        level_after=r.alpha + r.beta,
        effect=r.beta,
        effect_low=r.beta - half,
        effect_high=r.beta + half,
        z=z,
        p_value=p,
        gain=gain,
        penalty=penalty,
        direction="up" if r.beta > 0 else "down",
        kind="drift",
        end_index=end_idx,
        end=None if end_idx is None else starts[end_idx],
        slope=r.beta / (_end_pos(pos, r.end) - float(pos[r.onset])),
    )


# ---------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------


def _degenerate(
    reason: str, segments: list[Segment], params: dict[str, float | int | str | None]
) -> ChangePointResult:
    return ChangePointResult((), tuple(segments), reason, METHOD, params)


@dataclass(frozen=True)
class _Noise:
    """Per-response variance: phi * ref (1 - ref) (quasi-binomial) or phi (Gaussian).

    ref is the level of the bucket's current segment, so a pass rate that drops from 0.95 to
    0.80 gets the variance of 0.80 after the drop. phi is pooled over the within-bucket
    variances: for a 0..1 metric it is their ratio to m (1 - m) (exactly 1 for pass/fail,
    ~1 / (1 + concentration) for a Beta-like score); otherwise the pooled variance itself.
    phi = 0 means unknown (under 30 within-bucket degrees of freedom, e.g. a raw series): the
    per-bucket variance is then estimated from the data alone and taken as equal for all.
    Pass/fail data (sum of squares = sum in every bucket) have phi = 1 even at n = 1.
    """

    binomial: bool
    phi: float
    sigma2: float  # pooled within-bucket variance per response (descriptive)
    bernoulli: bool = False  # every response 0 or 1 (sum of squares = sum): phi = 1, known

    @classmethod
    def estimate(cls, n: FloatArray, sums: FloatArray, sqs: FloatArray) -> _Noise:
        m = sums / n
        mean = float(np.dot(n, m) / n.sum())
        binomial = bool(np.all((m >= 0) & (m <= 1))) and 1e-9 < mean < 1 - 1e-9
        if binomial and np.allclose(sums, sqs, rtol=1e-9, atol=1e-9):
            return cls(True, 1.0, float(np.dot(n, m * (1 - m)) / n.sum()), bernoulli=True)
        dof = float((n - 1).sum())
        if dof < _MIN_WITHIN_DOF:
            return cls(binomial, 0.0, 0.0)
        within = np.maximum(sqs - sums * m, 0.0)
        sigma2 = float(within.sum()) / dof
        if not binomial:
            return cls(False, sigma2, sigma2)
        many = n >= 2
        s2 = within[many] / (n[many] - 1)
        # m (1 - m) + s^2 / n estimates mu (1 - mu) without bias.
        denom = float(np.dot(n[many] - 1, m[many] * (1 - m[many]) + s2 / n[many]))
        return cls(True, float(within.sum()) / denom if denom > 0 else 0.0, sigma2)

    def reference(self, levels: FloatArray) -> FloatArray:
        if not self.binomial:
            return np.ones_like(levels)
        ref = np.clip(levels, 0.005, 0.995)
        return ref * (1 - ref)

    def per_response(self, levels: FloatArray) -> FloatArray:
        return self.phi * self.reference(levels)


def _start_numbers(starts: Sequence[Start]) -> list[int] | None:
    """Starts as integers: Unix seconds for datetimes (naive ones taken as UTC), ints as they are.

    None when the starts are of mixed or unsupported types.
    """
    out: list[int] = []
    kinds = set()
    for s in starts:
        if isinstance(s, datetime):
            aware = s if s.tzinfo is not None else s.replace(tzinfo=UTC)
            out.append(math.floor(aware.timestamp()))
            kinds.add("datetime")
        elif isinstance(s, int) and not isinstance(s, bool):
            out.append(s)
            kinds.add("int")
        else:
            return None
    return out if len(kinds) <= 1 else None


def _phase_keys(
    starts: Sequence[Start], period: timedelta | int | None, *, numbers: list[int] | None = None
) -> list[int] | None:
    """Phase of each start within the season period (0 for all when there is no period).

    None when the starts are of mixed or unsupported types, or the period is not positive.
    numbers: `_start_numbers(starts)` when the caller has them already (not converted twice).
    """
    if numbers is None:
        numbers = _start_numbers(starts)
    if numbers is None:
        return None
    if period is None:
        return [0] * len(numbers)
    unit = int(period.total_seconds()) if isinstance(period, timedelta) else int(period)
    if unit <= 0:
        return None
    return [x % unit for x in numbers]


@dataclass(frozen=True)
class _Season:
    """Which profile value each non-empty bucket gets, and how the values are pooled.

    phase[i] is the bucket's phase (0..K-1, in circular order); groups[k] marks the phases whose
    buckets estimate phase k: itself when it has been seen on >= 3 periods, else itself and its
    nearest neighbours on each side until they have (so sparse night hours borrow strength).
    """

    phase: IntArray
    groups: FloatArray  # K x K, 0/1
    day: IntArray | None = None  # weekly part: the bucket's day (0, 1, ...) for the detrending

    def per_phase(self, values: FloatArray) -> FloatArray:
        """Per phase: the sum of `values` over the buckets of the phase's group."""
        sums = np.bincount(self.phase, weights=values, minlength=self.groups.shape[0])
        return self.groups @ sums


def _weekly_season(
    numbers: list[int], nonempty: IntArray, period: timedelta | int | None
) -> _Season | None:
    """Day-of-week offsets (on top of the time-of-day profile) when the series spans enough
    weeks that every weekday has been seen on at least 3 different days: a weekend dip is a
    rhythm, not two changes a week. Only with the default daily period."""
    if period is None:
        return None
    unit = int(period.total_seconds()) if isinstance(period, timedelta) else int(period)
    if unit != 86_400:
        return None
    days = np.asarray(numbers, dtype=np.int64)[nonempty] // unit
    dow = (days + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    distinct = [np.unique(days[dow == k]).size for k in range(7)]
    if min(distinct) < _MIN_SEASON_PERIODS:
        return None
    return _Season(dow.astype(np.int64), np.eye(7), (days - days.min()).astype(np.int64))


def _weekly_offsets(r: FloatArray, w: FloatArray, season: _Season) -> FloatArray:
    """Day-of-week offsets from day-to-day differences, per bucket.

    Like tau^2, they are read from differences, which a level shift touches once: the offset
    of weekday k over weekday k-1 is the median over the weeks of (day mean - previous day's
    mean), so one step or a drift (not yet found when the profile is first fitted) cannot
    fake a weekly rhythm. The seven steps are closed around the week, summed into offsets,
    centred, and shrunk towards flat by a James-Stein factor against their own spread.
    """
    assert season.day is not None
    size = int(season.day.max()) + 1
    dw = np.bincount(season.day, weights=w, minlength=size)
    dy = np.bincount(season.day, weights=w * r, minlength=size)
    seen = dw > 0
    dm = np.divide(dy, dw, out=np.zeros(size), where=seen)
    both = seen[1:] & seen[:-1]
    diffs = (dm[1:] - dm[:-1])[both]
    dows = np.zeros(size, dtype=np.int64)
    dows[season.day] = season.phase
    keys = dows[1:][both]
    steps = np.zeros(7)
    resid: list[float] = []
    for k in range(7):
        d = diffs[keys == k]
        if d.size < _MIN_SEASON_PERIODS:
            return np.zeros_like(r)
        steps[k] = float(np.median(d))
        resid += (d - steps[k]).tolist()
    steps -= steps.mean()
    offsets = np.cumsum(np.roll(steps, -1))  # offset of weekday k+1 over weekday 0, ...
    offsets = np.roll(offsets, 1)
    offsets -= offsets.mean()
    weeks = diffs.size / 7
    spread = (1.4826 * float(np.median(np.abs(resid)))) ** 2 * math.pi / 2 / weeks
    q = float(np.dot(offsets, offsets)) / max(spread, _VAR_FLOOR)
    shrink = max(0.0, 1.0 - 4.0 / q) if q > 0 else 0.0
    out = shrink * offsets[season.phase]
    return out - float(np.average(out, weights=w))


def _season(keys: list[int], nonempty: IntArray) -> _Season | None:
    """The profile structure, or None when the series spans too few periods for one."""
    ks = np.asarray(keys, dtype=np.int64)[nonempty]
    uniq, inv, counts = np.unique(ks, return_inverse=True, return_counts=True)
    k = uniq.size
    if k < 2 or float(np.median(counts)) < _MIN_SEASON_PERIODS:
        return None
    groups = np.eye(k)
    for j in np.flatnonzero(counts < _MIN_SEASON_PERIODS):
        width = 0
        while groups[j] @ counts < _MIN_SEASON_PERIODS and width < k // 2:
            width += 1
            groups[j, (j - width) % k] = groups[j, (j + width) % k] = 1.0
    return _Season(inv.astype(np.int64).ravel(), groups)


@dataclass(frozen=True)
class _Cost:
    """Segment cost from cumulative sums: cost(s, t) of buckets s..t-1, vectorized over s.

    Costs are -2 log-likelihood up to a per-bucket constant (which cancels between
    segmentations). Quasi-binomial (0..1 metrics): -2 C g(mu), C = sum of c_i = w_i V0, mu the
    c-weighted segment mean, g(x) = x log x + (1 - x) log(1 - x), V0 = mean (1 - mean) of the
    series: the binomial deviance with effective counts, equal to the weighted Gaussian cost
    near the reference levels but with the right skew near 0 or 1. Gaussian otherwise: the
    weighted within-segment sum of squares.
    """

    binomial: bool
    cw: FloatArray
    c1: FloatArray
    c2: FloatArray

    @classmethod
    def build(cls, y: FloatArray, w: FloatArray, vref: FloatArray | None) -> _Cost:
        """vref: None for the Gaussian cost, else mu (1 - mu) at each bucket's reference level
        (c_i = w_i vref_i, so the deviance's curvature there is the Gaussian one)."""
        mean = float(np.average(y, weights=w))
        zero = np.zeros(1)
        if vref is not None:
            c = w * vref
            cum = np.cumsum
            return cls(
                True, np.concatenate((zero, cum(c))), np.concatenate((zero, cum(c * y))), zero
            )
        yc = y - mean  # centered: better-conditioned cumulative sums
        return cls(
            False,
            np.concatenate((zero, np.cumsum(w))),
            np.concatenate((zero, np.cumsum(w * yc))),
            np.concatenate((zero, np.cumsum(w * yc * yc))),
        )

    def __call__(self, s: IntArray, t: int) -> FloatArray:
        dw = self.cw[t] - self.cw[s]
        d1 = self.c1[t] - self.c1[s]
        if self.binomial:
            mu = np.minimum(np.maximum(d1 / dw, 1e-12), 1 - 1e-12)
            nu = 1 - mu
            return -2 * dw * (mu * np.log(mu) + nu * np.log(nu))
        return (self.c2[t] - self.c2[s]) - d1 * d1 / dw

    def rows(self) -> tuple[FloatArray, list[int]]:
        """The costs of every segment [s, t) with s < t, packed by end: row t (s = 0..t-1) is
        `packed[offsets[t] : offsets[t] + t]`. The same values element by element as
        `self(s, t)` (the same operations, done in place, all rows in one go): the optimal
        partitioning reads rows.

        The intermediate arrays are this thread's scratch (`_scratch`), not new ones: at a
        few hundred buckets they are ~0.5 MB each, which the allocator maps afresh and the
        kernel zero-fills page by page at every call; that was half of this method's time."""
        size = self.cw.size
        t, s = _lower_pairs(size)
        a, b, c = _scratch(t.size, 3)
        out: FloatArray = np.empty(t.size)
        # np.take with mode="clip" (the indices are in range): "raise" copies `out` first
        with np.errstate(divide="ignore", invalid="ignore"):
            dw = np.take(self.cw, t, out=a, mode="clip")
            dw -= np.take(self.cw, s, out=b, mode="clip")
            d1 = np.take(self.c1, t, out=c, mode="clip")
            d1 -= np.take(self.c1, s, out=b, mode="clip")
            if self.binomial:
                mu = np.divide(d1, dw, out=d1)
                np.maximum(mu, 1e-12, out=mu)
                np.minimum(mu, 1 - 1e-12, out=mu)
                nu = np.subtract(1, mu, out=b)
                g = np.log(mu, out=out)
                g *= mu
                lg = np.log(nu, out=c)  # mu is used up
                lg *= nu
                g += lg
                dw *= -2
                g *= dw
                return g, _row_offsets(size)
            c2 = np.take(self.c2, t, out=out, mode="clip")
            c2 -= np.take(self.c2, s, out=b, mode="clip")
            d1 *= d1
            d1 /= dw
            c2 -= d1
            return c2, _row_offsets(size)

    def span(self, a: int, b: int) -> float:
        return float(self(np.array([a], dtype=np.int64), b)[0])


@functools.lru_cache(maxsize=8)
def _lower_pairs(size: int) -> tuple[IntArray, IntArray]:
    """(t, s) index arrays of every pair s < t, ordered by t then s (read-only, cached)."""
    t, s = np.tril_indices(size, -1)
    t.flags.writeable = False
    s.flags.writeable = False
    return t, s


_scratch_arrays = threading.local()


def _scratch(size: int, count: int) -> list[FloatArray]:
    """`count` float arrays of `size` elements, this thread's own, reused from call to call
    (grown to the largest size asked: at most 4 MB each, at `_DENSE_MAX` buckets)."""
    held: list[FloatArray] = getattr(_scratch_arrays, "arrays", [])
    if len(held) < count or held[0].size < size:
        held = [np.empty(max(size, held[0].size if held else 0)) for _ in range(count)]
        _scratch_arrays.arrays = held
    return [h[:size] for h in held[:count]]


@functools.lru_cache(maxsize=8)
def _row_offsets(size: int) -> list[int]:
    """Where row t of `_Cost.rows`' packed costs begins: t (t - 1) / 2."""
    return [t * (t - 1) // 2 for t in range(size)]


@dataclass(frozen=True)
class _Fit:
    cps: list[int]  # indices (among non-empty buckets) where a new segment starts
    y: FloatArray  # de-seasonalized bucket means
    w: FloatArray  # 1 / per-bucket variance
    cost: _Cost
    profile: FloatArray
    tau2: float
    iterations: int


def _fit(
    m: FloatArray,
    n: FloatArray,
    noise: _Noise,
    season: _Season | None,
    *,
    penalty: float,
    min_segment: int,
    min_segment_n: int,
    min_effect: float,
    max_iterations: int,
    weekly: _Season | None = None,
) -> _Fit:
    """Alternate profile + variances (given segment levels) and segmentation (given those)."""
    levels = np.full_like(m, np.average(m, weights=n))
    cps: list[int] = []
    for it in range(max(1, max_iterations)):
        s2 = noise.per_response(levels)
        tau2, w, profile = _fit_variance_and_profile(m, n, s2, levels, season, weekly)
        y = m - profile
        cost = _Cost.build(y, w, noise.reference(levels) if noise.binomial else None)
        new: list[int] = []
        if math.isfinite(penalty):
            new = _pelt(
                cost, n, penalty=penalty, min_segment=min_segment, min_segment_n=min_segment_n
            )
            new = _merge_small_effects(y, n, new, min_effect)
        levels = _segment_levels(y, w, new)
        done = it > 0 and new == cps
        cps = new
        if done:
            break
    return _Fit(cps, y, w, cost, profile, tau2, it + 1)


def _weights(n: FloatArray, s2: FloatArray, tau2: float) -> FloatArray:
    return 1.0 / np.maximum(s2 / n + tau2, _VAR_FLOOR)


def _fit_variance_and_profile(
    m: FloatArray,
    n: FloatArray,
    s2: FloatArray,
    levels: FloatArray,
    season: _Season | None,
    weekly: _Season | None = None,
) -> tuple[float, FloatArray, FloatArray]:
    """tau^2, weights and seasonal profile, given the current segment levels.

    The profile is the weighted mean per phase (group) of m - levels, shrunk towards flat by
    the positive-part James-Stein factor (a noisy profile of a low-traffic series is mostly
    shrunk away instead of adding its noise). With a weekly part (day-of-week offsets, for a
    series of three weeks or more) the two are back-fitted: each is the shrunk mean per
    phase of what the other leaves. The profile depends on the weights and tau^2 on the
    profile; two fixed-point rounds are plenty.
    """
    r = m - levels
    tau2 = _tau2(r, n, s2, (), ())
    parts = [p for p in (season, weekly) if p is not None]
    fitted = [np.zeros_like(m) for _ in parts]
    shrinks = [1.0 for _ in parts]
    for _ in range(2 if len(parts) < 2 else 3):
        if not parts:
            break
        w = _weights(n, s2, tau2)
        for i, part in enumerate(parts):
            rest = r - sum((f for j, f in enumerate(fitted) if j != i), np.zeros_like(m))
            if part.day is not None:
                fitted[i], shrinks[i] = _weekly_offsets(rest, w, part), 1.0
            else:
                fitted[i], shrinks[i] = _shrunk_profile(part, rest, w, n)
        tau2 = _tau2(r - sum(fitted, np.zeros_like(m)), n, s2, tuple(parts), tuple(shrinks))
    profile = sum(fitted, np.zeros_like(m))
    return tau2, _weights(n, s2, tau2), profile


def _shrunk_profile(
    season: _Season, r: FloatArray, w: FloatArray, n: FloatArray
) -> tuple[FloatArray, float]:
    """Weighted mean of r per phase, centred, shrunk by the positive-part James-Stein factor."""
    sw = season.per_phase(w)
    prof = season.per_phase(w * r) / sw
    dev = prof - float(np.dot(sw, prof) / sw.sum())
    q = float(np.dot(sw, dev * dev))
    k = prof.size
    shrink = max(0.0, 1.0 - (k - 3) / q) if k > 3 and q > 0 else 1.0
    profile = (shrink * dev)[season.phase]
    return profile - np.average(profile, weights=n), shrink


def _tau2(
    r: FloatArray,
    n: FloatArray,
    s2: FloatArray,
    seasons: tuple[_Season, ...] | _Season | None,
    shrinks: tuple[float, ...] | float,
) -> float:
    """Overdispersion variance from lag-1 differences d_i of the residuals r.

    Var d_i = V_i = v_i (1 - h_i) + v_{i+1} (1 - h_{i+1}), v_i = s2_i / n_i + tau^2, h_i the
    bucket's leverage on its profile value (the residual of a fitted profile is smaller than
    the noise). Solves the Gaussian maximum-likelihood equation for tau^2 with each squared
    standardized difference capped at 25 (5 sd), so one level shift or outlier cannot inflate
    it: sum (dV_i / V_i) (min(d_i^2 / V_i, 25) - E min(chi2_1, 25)) = 0. Differences are
    blind to the level shifts being looked for; weighting by 1 / V_i lets the busy buckets,
    which are the ones that tell overdispersion from sampling noise, speak for it. With s2 = 0
    (no within-bucket information) tau^2 is the whole per-bucket variance.
    """
    d2 = np.diff(r) ** 2
    if d2.size == 0 or not d2.any():
        return 0.0
    homogeneous = not s2.any()
    if seasons is None:
        parts: tuple[_Season, ...] = ()
    elif isinstance(seasons, _Season):
        parts = (seasons,)
    else:
        parts = seasons
    shr = (shrinks,) if isinstance(shrinks, float | int) else tuple(shrinks)

    ratio = s2 / n  # the same in every call of `score`: divided once

    def score(tau2: float) -> float:
        v = ratio + tau2
        keep = np.ones_like(v)
        if parts:
            w = 1.0 / np.maximum(v, _VAR_FLOOR)  # _weights(n, s2, tau2)
            for part, shrink in zip(parts, shr, strict=True):
                keep = keep - shrink * w / part.per_phase(w)[part.phase]
            keep = np.maximum(keep, 0.05)
        big_v = np.maximum(v[1:] * keep[1:] + v[:-1] * keep[:-1], _VAR_FLOOR)
        d_v = keep[1:] + keep[:-1]
        z2 = np.minimum(d2 / big_v, _CAP)
        if homogeneous:  # dV / V is the same for every difference
            return float(np.mean(z2)) - _CAP_MEAN
        return float(np.sum(d_v / big_v * (z2 - _CAP_MEAN)) / np.sum(d_v / big_v))

    lo = 0.0 if not homogeneous else max(float(np.mean(d2)) * 1e-9, 1e-300)
    if score(lo) <= 0:
        return lo if homogeneous else 0.0
    hi = max(float(np.mean(d2)), 1e-12)
    while score(hi) > 0:
        hi *= 4
    return float(optimize.brentq(score, lo, hi, xtol=1e-16, rtol=1e-6))


def _backtrack(f: FloatArray, last: IntArray) -> list[int]:
    """Segment starts of the optimal partition ending at the last bucket."""
    t = f.size - 1
    if not np.isfinite(f[t]):
        return []
    out: list[int] = []
    while t > 0:
        t = int(last[t])
        if t > 0:
            out.append(t)
    return sorted(out)


_DENSE_MAX = 1000  # series up to this many buckets: every segment cost in one array op


def _optimal_partitioning(cost: _Cost, s_max: list[int], *, penalty: float) -> list[int]:
    """The same optimum as PELT (which only prunes candidates that cannot win), computed from
    every segment cost (`_Cost.rows`): for a few hundred buckets, one vectorized evaluation of
    all (s, t) costs is far cheaper than one small numpy call per t."""
    t_len = len(s_max) - 1
    c, offsets = cost.rows()  # row t: the costs of [s, t) for every s < t
    f = np.full(t_len + 1, np.inf)
    f[0] = -penalty
    last = np.zeros(t_len + 1, dtype=np.int64)
    base = np.empty(t_len + 1)
    add, isfinite = np.add, math.isfinite  # a few hundred thousand steps a pass: no lookups
    for t in range(1, t_len + 1):
        k = s_max[t] + 1
        if k <= 0:
            continue
        o = offsets[t]
        b = add(f[:k], c[o : o + k], out=base[:k])
        j = b.argmin()
        v = b[j]
        if isfinite(v):
            f[t] = v + penalty
            last[t] = j
    return _backtrack(f, last)


def _pelt(
    cost: _Cost,
    n: FloatArray,
    *,
    penalty: float,
    min_segment: int,
    min_segment_n: int,
) -> list[int]:
    """Optimal partitioning with PELT pruning; returns the segment start indices (> 0).

    Minimizes total segment cost + penalty per change, over segments of >= min_segment buckets
    and >= min_segment_n total n. Pruning with a minimum segment length is only safe once the
    pruning point can itself end a segment, so pruning decisions taken at t are applied when t
    becomes an admissible last change.
    """
    t_len = n.size
    cn = np.concatenate(([0.0], np.cumsum(n)))
    ts = np.arange(t_len + 1)
    # Admissible last changes s for an end t: t - s >= min_segment, cn[t] - cn[s] >= min_segment_n.
    s_max = np.minimum(ts - min_segment, np.searchsorted(cn, cn - min_segment_n, "right") - 1)
    s_max_list = s_max.tolist()
    if t_len <= _DENSE_MAX:
        return _optimal_partitioning(cost, s_max_list, penalty=penalty)
    f = np.full(t_len + 1, np.inf)
    f[0] = -penalty
    last = np.zeros(t_len + 1, dtype=np.int64)
    alive = np.zeros(t_len + 1, dtype=bool)
    cand = np.zeros(0, dtype=np.int64)
    next_new = 0
    pending: deque[tuple[int, IntArray]] = deque()
    for t in range(1, t_len + 1):
        top = s_max_list[t]
        changed = False
        while next_new <= top:
            if math.isfinite(f[next_new]):
                alive[next_new] = changed = True
            next_new += 1
        while pending and pending[0][0] <= top:
            alive[pending.popleft()[1]] = False
            changed = True
        if changed:
            cand = np.flatnonzero(alive[:next_new])
        if cand.size == 0:
            continue
        base = f[cand] + cost(cand, t)
        j = int(base.argmin())
        best = float(base[j]) + penalty
        f[t] = best
        last[t] = cand[j]
        drop = base > best
        if drop.any():
            pending.append((t, cand[drop]))
    return _backtrack(f, last)


def _segment_levels(y: FloatArray, w: FloatArray, cps: list[int]) -> FloatArray:
    """Inverse-variance-weighted level of each segment, per bucket."""
    out = np.empty_like(y)
    bounds = [0, *cps, y.size]
    for a, b in itertools.pairwise(bounds):
        out[a:b] = np.average(y[a:b], weights=w[a:b])
    return out


def _n_level(y: FloatArray, n: FloatArray, v: FloatArray) -> tuple[float, float]:
    """n-weighted mean of y and its variance given per-bucket variances v."""
    tot = float(n.sum())
    return float(np.dot(n, y)) / tot, float(np.dot(n * n, v)) / (tot * tot)


def _merge_small_effects(
    y: FloatArray, n: FloatArray, cps: list[int], min_effect: float
) -> list[int]:
    """Drop change points whose n-weighted level difference is below min_effect, smallest first."""
    cps = list(cps)
    while cps and min_effect > 0:
        bounds = [0, *cps, y.size]
        lv = [float(np.dot(n[a:b], y[a:b]) / n[a:b].sum()) for a, b in itertools.pairwise(bounds)]
        diffs = [abs(lv[j + 1] - lv[j]) for j in range(len(cps))]
        j = int(np.argmin(diffs))
        if diffs[j] >= min_effect:
            break
        del cps[j]
    return cps


# ---------------------------------------------------------------------------------------------
# Ramps: a staircase of same-direction steps or one linear drift?
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ramp:
    """A linear drift inside the stretch [a, b) of non-empty buckets: level `alpha` before
    bucket `onset`, a straight line to `alpha + beta` at bucket `end`, flat after it (end == b:
    still moving at the stretch's end)."""

    a: int
    b: int
    onset: int
    end: int
    alpha: float
    beta: float
    var_beta: float
    cost: float  # weighted residual sum of squares (chi-square units)
    flat_cost: float  # the same stretch as one flat level
    stair_cost: float  # the same stretch cut at the staircase's change points
    knots: int  # change points the ramp pays for (onset, and its end when inside)
    steps: int  # change points of the staircase it replaces


def _gauss_cost(y: FloatArray, w: FloatArray, a: int, b: int) -> float:
    sw = float(w[a:b].sum())
    sy = float(np.dot(w[a:b], y[a:b]))
    return float(np.dot(w[a:b], y[a:b] ** 2)) - sy * sy / sw


def _best_ramp(
    y: FloatArray,
    w: FloatArray,
    t: FloatArray,
    a: int,
    b: int,
    *,
    min_before: int,
    min_ramp: int,
    penalty: float,
) -> tuple[float, int, int, float, float, float] | None:
    """The continuous two-knot broken line (flat, ramp, flat) of least penalized weighted
    squares over the stretch [a, b): (cost, onset, end, alpha, beta, var_beta), every
    (onset, end) pair searched exactly from cumulative sums. end == b means the ramp runs to
    the stretch end; an end inside the stretch is a knot and pays `penalty`."""
    ys, ws = y[a:b], w[a:b]
    tt = t[a:b] - t[a]
    size = ys.size
    if size < min_before + min_ramp:
        return None
    te = np.append(tt, tt[-1] + 1.0)  # the virtual bucket one past the stretch
    z = np.zeros(1)
    cw = np.concatenate((z, np.cumsum(ws)))
    cwt = np.concatenate((z, np.cumsum(ws * tt)))
    cwtt = np.concatenate((z, np.cumsum(ws * tt * tt)))
    cwy = np.concatenate((z, np.cumsum(ws * ys)))
    cwty = np.concatenate((z, np.cumsum(ws * tt * ys)))
    sw, sy, syy = cw[-1], cwy[-1], float(np.dot(ws, ys * ys))
    o = np.arange(min_before, size)[:, None]
    e = np.arange(size + 1)[None, :]
    ok = e - o >= min_ramp
    if not ok.any():
        return None
    o_b, e_b = np.broadcast_arrays(o, e)
    oo, ee = o_b[ok], e_b[ok]
    t0, d = te[oo], te[ee] - te[oo]
    mw, mwt, mwtt = cw[ee] - cw[oo], cwt[ee] - cwt[oo], cwtt[ee] - cwtt[oo]
    mwy, mwty = cwy[ee] - cwy[oo], cwty[ee] - cwty[oo]
    tail_w, tail_y = sw - cw[ee], sy - cwy[ee]
    sx = (mwt - t0 * mw) / d + tail_w
    sxx = (mwtt - 2 * t0 * mwt + t0 * t0 * mw) / (d * d) + tail_w
    sxy = (mwty - t0 * mwy) / d + tail_y
    vxx = sxx - sx * sx / sw
    vxy = sxy - sx * sy / sw
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = syy - sy * sy / sw - np.where(vxx > 0, vxy * vxy / vxx, 0.0)
    j = int(np.argmin(cost + np.where(ee < size, penalty, 0.0)))
    beta = float(vxy[j] / vxx[j]) if vxx[j] > 0 else 0.0
    alpha = float((sy - beta * sx[j]) / sw)
    var_beta = float(1.0 / vxx[j]) if vxx[j] > 0 else math.inf
    return float(cost[j]), a + int(oo[j]), a + int(ee[j]), alpha, beta, var_beta


def _ramps(
    y: FloatArray,
    w: FloatArray,
    t: FloatArray,
    cps: list[int],
    *,
    penalty: float,
    min_segment: int,
) -> tuple[list[int], list[_Ramp]]:
    """Replace each run of same-direction change points by one linear drift when the drift
    explains the stretch at least as well, penalties counted (penalized-likelihood model
    choice on the Gaussian weighted cost, one penalty per change point or ramp knot: a ramp
    pays for its onset, and its end when the end is inside the stretch). A single step is
    kept unless a ramp beats it by a whole penalty, so a real step never turns into a ramp
    by chance; a gentle drift that the level model had cut into a staircase becomes one
    finding with an onset, an end and a slope. Returns the steps kept and the ramps."""
    if not cps:
        return [], []
    size = y.size
    bounds = [0, *cps, size]
    levels = [float(np.average(y[a:b], weights=w[a:b])) for a, b in itertools.pairwise(bounds)]
    signs = [1 if levels[j + 1] > levels[j] else -1 for j in range(len(cps))]
    runs: list[list[int]] = []
    for j, s in enumerate(signs):
        if runs and signs[runs[-1][-1]] == s:
            runs[-1].append(j)
        else:
            runs.append([j])
    kept: list[int] = []
    ramps: list[_Ramp] = []
    floor = 0  # a ramp accepted earlier ends here: the next stretch starts no earlier
    for run in runs:
        a, b = max(bounds[run[0]], floor), bounds[run[-1] + 2]
        inner = [cps[j] for j in run]
        if a >= inner[0]:
            kept += inner
            continue
        best = _best_ramp(
            y, w, t, a, b, min_before=min_segment, min_ramp=2 * min_segment, penalty=penalty
        )
        edges = [a, *inner, b]
        stair = sum(_gauss_cost(y, w, s, e) for s, e in itertools.pairwise(edges))
        if best is None:
            kept += inner
            continue
        cost, onset, end, alpha, beta, var_beta = best
        knots = 1 + (end < b)
        extra = penalty if len(inner) == 1 else 0.0
        if cost + knots * penalty + extra <= stair + len(inner) * penalty and beta != 0:
            flat = _gauss_cost(y, w, a, b)
            ramps.append(
                _Ramp(a, b, onset, end, alpha, beta, var_beta, cost, flat, stair, knots, len(inner))
            )
            floor = end
        else:
            kept += inner
    return sorted(kept), ramps


def _side_variance(
    r: FloatArray, n: FloatArray, within: FloatArray, level: FloatArray, noise: _Noise
) -> tuple[float, float]:
    """(per-response variance, overdispersion) of a stretch, from that stretch alone: its own
    pooled within-bucket variance when it has >= 30 degrees of freedom (else the series'
    variance model at its level), and tau^2 from the residuals r (bucket means minus their
    segment's level)."""
    dof = float((n - 1).sum())
    if noise.bernoulli or dof < _MIN_WITHIN_DOF:
        s2 = float(np.mean(noise.per_response(level)))
    else:
        s2 = float(within.sum()) / dof
    tau2 = _tau2(r, n, np.full_like(r, s2), None, 1.0)
    if s2 == 0.0 and tau2 == 0.0:
        tau2 = max(float(np.var(r)), _VAR_FLOOR)
    return s2, tau2


def _noise_df(buckets: int, sampling: float, tau2: float) -> float:
    """Effective degrees of freedom of a bucket variance sampling + tau^2 where only tau^2 is
    estimated (from `buckets` residuals): (buckets - 1) x (total / tau^2)^2, at least 2."""
    if tau2 <= 0:
        return 1e6
    return float(min(max((buckets - 1) * ((sampling + tau2) / tau2) ** 2, 2.0), 1e6))


# A side's own noise is read from the buckets next to the change: at least this many (the
# side's neighbours beyond it when the side is shorter), at most the second (a long side
# may span a change of spread further away).
_LOCAL_NOISE_MIN = 24
_LOCAL_NOISE_MAX = 72


def _confirm_steps(
    y: FloatArray,
    n: FloatArray,
    within: FloatArray,
    noise: _Noise,
    cps: list[int],
    fixed: set[int],
    *,
    penalty: float,
    v_global: FloatArray,
) -> list[int]:
    """Keep only the steps whose level change still pays the penalty when each side gets its
    own noise (sampling variance and overdispersion estimated from that side, or from the
    24 buckets next to the change on that side when the side is shorter).

    Only a side significantly noisier than the series' variance model (F test at 1 %) is
    re-weighed; any other keeps the model's variances, so thin and short series, and a fresh
    change a few buckets before the end, keep their power. The segmentation
    assumes one noise level for the whole series, so a series that only got noisier (a model
    that answers more erratically, a busier mix of users) shows its larger wobbles as level
    shifts. Here the likelihood ratio of "one level" against "two
    levels" is recomputed with each side's own variances (a heteroscedastic Gaussian test of
    the means), and the weakest step below the penalty is dropped, one at a time: a change of
    spread alone does not alarm, a change of level does."""
    cps = list(cps)
    size = y.size
    p_pen = 2 * float(stats.norm.sf(math.sqrt(penalty)))

    def ss(yy: FloatArray, w: FloatArray) -> float:
        return float(np.dot(w, (yy - np.average(yy, weights=w)) ** 2))

    while cps:
        bounds = sorted({0, *cps, *fixed, size})
        lv = np.empty_like(y)
        for a, b in itertools.pairwise(bounds):
            lv[a:b] = np.average(y[a:b], weights=n[a:b])
        res = y - lv

        def side(
            lo: int, hi: int, left: bool, res: FloatArray = res, lv: FloatArray = lv
        ) -> tuple[FloatArray, float]:
            """Variances of buckets lo..hi-1 from the noise next to the change (at hi when
            left, else at lo), and the effective df of that estimate."""
            span = min(max(hi - lo, _LOCAL_NOISE_MIN), _LOCAL_NOISE_MAX)
            ra, rb = (max(0, hi - span), hi) if left else (lo, min(size, lo + span))
            if rb - ra < span:  # at the series' edge: the nearest buckets across the change
                ra, rb = (ra, min(size, ra + span)) if left else (max(0, rb - span), rb)
            s2, t2 = _side_variance(res[ra:rb], n[ra:rb], within[ra:rb], lv[ra:rb], noise)
            df = _noise_df(rb - ra, float(np.mean(s2 / n[ra:rb])), t2)
            ratio = float(np.mean(s2 / n[ra:rb] + t2)) / float(np.mean(v_global[ra:rb]))
            if ratio <= float(stats.chi2.ppf(0.99, df)) / df:
                # not significantly noisier than the series' model says (an F test at 1 %
                # against its many degrees of freedom): the segmentation's verdict stands
                return v_global[lo:hi], 1e6
            return np.maximum(s2 / n[lo:hi] + t2, v_global[lo:hi]), df

        def need(df: float) -> float:
            # the overdispersion is estimated from a few dozen buckets: the likelihood-ratio
            # z is then roughly a t, at Satterthwaite's df for a variance whose estimated part
            # is tau^2 (large when sampling noise, known, dominates), held to the penalty's p
            return float(stats.t.isf(p_pen / 2, df)) ** 2

        slack = []
        for cp in cps:
            j = bounds.index(cp)
            a, b = bounds[j - 1], bounds[j + 1]
            v_l, df_l = side(a, cp, True)
            v_r, df_r = side(cp, b, False)
            w = 1.0 / np.maximum(np.concatenate((v_l, v_r)), _VAR_FLOOR)
            yy, k = y[a:b], cp - a
            gain = ss(yy, w) - ss(yy[:k], w[:k]) - ss(yy[k:], w[k:])
            slack.append(gain / need(min(df_l, df_r)))
        j = int(np.argmin(slack))
        if slack[j] < 1.0:
            del cps[j]
            continue
        # a blip (a level that leaves and comes back) is two steps that stand or fall
        # together: both must pay, jointly, with the blip's own noise
        dropped = False
        for i in range(len(cps) - 1):
            c1, c2 = cps[i], cps[i + 1]
            j1 = bounds.index(c1)
            if bounds[j1 + 1] != c2:
                continue
            a, b = bounds[j1 - 1], bounds[j1 + 2]
            up1 = lv[c1] > lv[c1 - 1]
            up2 = lv[c2] > lv[c2 - 1]
            if up1 == up2:
                continue
            v1, df1 = side(a, c1, True)
            v2, df2 = side(c1, c2, False)
            v3, df3 = side(c2, b, False)
            w = 1.0 / np.maximum(np.concatenate((v1, v2, v3)), _VAR_FLOOR)
            yy, k1, k2 = y[a:b], c1 - a, c2 - a
            gain = ss(yy, w) - ss(yy[:k1], w[:k1]) - ss(yy[k1:k2], w[k1:k2])
            gain -= ss(yy[k2:], w[k2:])
            if gain < 2 * need(min(df1, df2, df3)):
                del cps[i : i + 2]
                dropped = True
                break
        if not dropped:
            break
    return cps


def _split_positions(n: FloatArray, min_segment: int, min_segment_n: int) -> int:
    """Number of admissible split positions in a stretch of buckets (for the Bonferroni p)."""
    cn = np.cumsum(n)
    total = cn[-1]
    ks = np.arange(1, n.size)  # split before bucket k
    left_n = cn[ks - 1]
    ok = (ks >= min_segment) & (n.size - ks >= min_segment)
    ok &= (left_n >= min_segment_n) & (total - left_n >= min_segment_n)
    return max(int(ok.sum()), 1)


def _segments_report(
    buckets: Sequence[Bucket],
    ns: IntArray,
    sums: FloatArray,
    nonempty: IntArray,
    m: FloatArray,
    cps: list[int],
    profile: FloatArray,
    slopes: Mapping[int, float] | None = None,
) -> list[Segment]:
    if nonempty.size == 0:
        return []
    y = m - profile
    n = ns[nonempty].astype(np.float64)
    starts_orig = [0, *(int(nonempty[c]) for c in cps)]
    ends_orig = [s - 1 for s in starts_orig[1:]] + [len(buckets) - 1]
    bounds = [0, *cps, nonempty.size]
    out = []
    for j, (a, b) in enumerate(itertools.pairwise(bounds)):
        s_idx, e_idx = starts_orig[j], ends_orig[j]
        cnt = int(ns[s_idx : e_idx + 1].sum())
        out.append(
            Segment(
                start_index=s_idx,
                end_index=e_idx,
                start=buckets[s_idx].start,
                end=buckets[e_idx].start,
                n=cnt,
                mean=float(sums[s_idx : e_idx + 1].sum()) / cnt,
                level=float(np.dot(n[a:b], y[a:b]) / n[a:b].sum()),
                slope=(slopes or {}).get(a),
            )
        )
    return out
