"""Two-group comparisons: which test, how big the change, how sure, how much we could have seen.

B is always the candidate (new prompt/model version) and A the baseline, so every effect is B − A
and every relative effect is (B − A) / A. Pure functions on numbers, no I/O. Degenerate input
(no data, n < 2, zero variance, mismatched pairs) never raises: the result carries a
machine-readable `reason` and whatever could still be computed.

Distributions and standard tests come from scipy/statsmodels. Written here only what they lack:
Welch from sufficient statistics, delta-method and MOVER intervals for relative lift, the paired
Newcombe interval, Hodges–Lehmann estimates with their distribution-free intervals, and power
and minimum detectable effect (MDE) for unequal variances. Hot paths call `scipy.special`
directly — the routines `scipy.stats` wraps, minus ~100 µs of per-call overhead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats
from statsmodels.stats.contingency_tables import mcnemar as _sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportions_ztest

from promptblame.analysis.moments import Moments

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
Statistic = str | Callable[[FloatArray], float]

POWER = 0.8  # target power for the MDE
SMALL_N = 30  # below this per group, normal approximations and shape estimates are shaky
IMBALANCE_RATIO = 4.0  # larger/smaller group beyond this: Welch's df and error rates degrade
HEAVY_TAIL_KURTOSIS = 10.0  # sample excess kurtosis; exponential is 6, lognormal(0, 1) ~110
COCHRAN_FACTOR = 25.0  # a mean is ~normal once n > 25·skewness² (Cochran's rule)
MIN_EXPECTED_CELL = 5.0  # below this expected 2×2 count the z test's normal approximation fails
MIN_TAIL_OBS = 10  # a bootstrapped quantile needs this many points beyond it


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Outcome of one two-group comparison; every test returns this shape.

    When `reason` is set the test itself could not run; fields that are not None are still
    valid (e.g. the two means when both groups have zero variance).
    """

    test: str
    """welch_t, mann_whitney_u, two_proportion_z, fisher_exact, paired_t,
    wilcoxon_signed_rank, mcnemar_exact or bootstrap."""
    why: str
    """One sentence on why this test (prefixed "auto:" when chosen by `compare`)."""
    alpha: float
    """Two-sided significance level; intervals are at 1 − alpha."""
    n_a: int
    """Observations (or pairs) of A the test used, after dropping non-finite values/sampling."""
    n_b: int
    """Same for B; equals n_a for paired tests."""
    estimate_a: float | None = None
    """A's summary: mean, proportion, median (rank tests) or the bootstrapped statistic."""
    estimate_b: float | None = None
    """B's summary, same kind as estimate_a."""
    effect: float | None = None
    """B − A on the scale named by effect_kind."""
    effect_kind: str | None = None
    """difference_in_means, hodges_lehmann_shift, difference_in_proportions,
    mean_of_differences, pseudomedian_of_differences or difference_in_<statistic>."""
    ci_low: float | None = None
    """Lower 1 − alpha confidence limit of `effect`."""
    ci_high: float | None = None
    """Upper 1 − alpha confidence limit of `effect`."""
    relative_effect: float | None = None
    """(B − A) / A of the estimates; None (warning zero_baseline) when A's estimate is 0."""
    rel_ci_low: float | None = None
    """Lower confidence limit of relative_effect."""
    rel_ci_high: float | None = None
    """Upper confidence limit of relative_effect; None when unbounded (warning unbounded_ci)."""
    statistic: float | None = None
    """Test statistic: t, z, U of B, signed-rank W, Fisher's sample odds ratio, McNemar's
    smaller discordant count."""
    df: float | None = None
    """Degrees of freedom of t tests (Welch–Satterthwaite for welch_t)."""
    p_value: float | None = None
    """Two-sided p-value; None for the bootstrap (see `bootstrap`)."""
    prob_superiority: float | None = None
    """Rank tests: P(B > A) + ½·P(B = A), the common-language effect size (0.5 = no shift)."""
    power: float | None = None
    """Power of this test (at alpha, these n and variance) to detect a true effect of
    `power_effect`. That is the caller's effect_of_interest when given; otherwise the observed
    effect ("observed power", warning observed_power) — a transform of the p-value, so it says
    nothing new about a non-significant result; prefer `mde`."""
    power_effect: float | None = None
    """The effect (same scale as `effect`) that `power` refers to."""
    mde: float | None = None
    """Minimum detectable effect: smallest |effect| with 80% power at alpha for these n and
    variance; None for rank, McNemar and bootstrap comparisons (no closed form)."""
    warnings: tuple[str, ...] = ()
    """Machine-readable caveats: small_n, imbalanced_groups, heavy_tails, skewed_for_n,
    zero_baseline, baseline_near_zero, unbounded_ci, unstable_ratio, sampled, ties,
    zero_differences, dropped_non_finite, observed_power, no_discordant_pairs,
    few_tail_observations, ci_unavailable."""
    reason: str | None = None
    """Why the test could not run: no_data, too_few_observations, zero_variance,
    length_mismatch, invalid_counts, non_finite."""

    @property
    def significant(self) -> bool | None:
        """p < alpha when there is a p-value, else whether the CI excludes 0 (the bootstrap)."""
        if self.p_value is not None:
            return self.p_value < self.alpha
        if self.ci_low is not None and self.ci_high is not None:
            return self.ci_low > 0 or self.ci_high < 0
        return None


@dataclass(frozen=True, kw_only=True)
class ArmShare:
    """One arm of a sample-ratio check: counts and shares, observed vs configured."""

    arm: str
    observed: int
    expected: float
    observed_share: float
    expected_share: float


@dataclass(frozen=True, kw_only=True)
class SampleRatio:
    """Sample-ratio-mismatch check: a mismatch means the split itself is broken (bucketing,
    logging, filtering), so no comparison between these arms can be trusted."""

    statistic: float | None
    p_value: float | None
    mismatch: bool | None
    alpha: float
    arms: tuple[ArmShare, ...]
    reason: str | None = None
    """no_data, too_few_arms, arms_differ, invalid_counts or invalid_expected."""


# ---------------------------------------------------------------------------------------------
# small shared helpers


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _z(alpha: float) -> float:
    """Two-sided normal critical value."""
    return float(special.ndtri(1.0 - alpha / 2.0))


def _finite(values: Sequence[float] | FloatArray) -> tuple[FloatArray, int]:
    """Finite values as float64 and how many were dropped: NaN/inf can't be ranked or summed."""
    x = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(x)
    return x[keep], int(x.size - np.count_nonzero(keep))


def _finite_pairs(
    a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray
) -> tuple[FloatArray, FloatArray, int] | None:
    """Aligned finite pairs (a pair with a non-finite side is dropped); None if lengths differ."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size != y.size:
        return None
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep], int(x.size - np.count_nonzero(keep))


def _paired_input(
    a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray, base: Comparison
) -> Comparison | tuple[Comparison, FloatArray, FloatArray]:
    """Aligned finite pairs and `base` carrying their count, or the finished result (with its
    reason) when there are none to test."""
    pairs = _finite_pairs(a, b)
    if pairs is None:
        return replace(base, reason="length_mismatch")
    x, y, dropped = pairs
    base = replace(base, n_a=int(x.size), n_b=int(x.size), warnings=tuple(_dropped(dropped)))
    if x.size == 0:
        return replace(base, reason="no_data")
    return base, x, y


def _cap(
    x: FloatArray, y: FloatArray, *, max_n: int, seed: int
) -> tuple[FloatArray, FloatArray, list[str]]:
    """Each group cut to a seeded uniform sample of max_n (without replacement) if larger."""
    rng = np.random.default_rng(seed)
    sampled = x.size > max_n or y.size > max_n
    if x.size > max_n:
        x = x[rng.choice(x.size, size=max_n, replace=False)]
    if y.size > max_n:
        y = y[rng.choice(y.size, size=max_n, replace=False)]
    return x, y, ["sampled"] if sampled else []


def _group_warnings(n_a: int, n_b: int, *, paired: bool = False) -> list[str]:
    out = []
    if min(n_a, n_b) < SMALL_N:
        out.append("small_n")
    if not paired and min(n_a, n_b) > 0 and max(n_a, n_b) / min(n_a, n_b) > IMBALANCE_RATIO:
        out.append("imbalanced_groups")
    return out


def _dropped(count: int) -> list[str]:
    return ["dropped_non_finite"] if count else []


def _pvalue_t(t: float, df: float) -> float:
    return float(2.0 * special.stdtr(df, -abs(t)))


# ---------------------------------------------------------------------------------------------
# power and minimum detectable effect


def t_power(*, effect: float, se: float, df: float, alpha: float) -> float:
    """Power of a two-sided t test with this standard error and df against a true `effect`.

    Noncentral t with noncentrality effect/se, both tails. Exact for one-sample/paired/pooled
    t tests; for Welch it is the usual approximation treating df and se as known.
    """
    crit = float(special.stdtrit(df, 1.0 - alpha / 2.0))
    nc = abs(effect) / se  # both tails: the power is symmetric in the effect's sign
    far = float(special.nctdtr(df, nc, -crit))
    # scipy answers NaN for the far tail at small df and large nc, where it is below 1e-16
    far = far if math.isfinite(far) else 0.0
    return float(1.0 - special.nctdtr(df, nc, crit) + far)


def t_mde(*, se: float, df: float, alpha: float, power: float = POWER) -> float:
    """Smallest effect a two-sided t test detects with `power`: root of t_power = power."""
    return _solve_effect(lambda e: t_power(effect=e, se=se, df=df, alpha=alpha), power, se)


def normal_power(*, effect: float, se: float, alpha: float) -> float:
    """Power of a two-sided z test (both tails) — statsmodels NormalIndPower in closed form."""
    z = _z(alpha)
    return float(special.ndtr(effect / se - z) + special.ndtr(-effect / se - z))


def normal_mde(*, se: float, alpha: float, power: float = POWER) -> float:
    """Smallest effect a two-sided z test detects with `power` (both tails counted)."""
    return _solve_effect(lambda e: normal_power(effect=e, se=se, alpha=alpha), power, se)


def _solve_effect(power_at: Callable[[float], float], target: float, scale: float) -> float:
    """Root of the increasing power curve on [0, ∞), bracketing outward from a few scales."""
    if power_at(0.0) >= target:  # alpha >= power: any effect, even none, is "detected"
        return 0.0
    hi = 3.0 * scale
    while power_at(hi) < target:
        hi *= 2.0
        if not math.isfinite(hi):
            return math.inf
    return float(optimize.brentq(lambda e: power_at(e) - target, 0.0, hi, xtol=1e-14 * hi))


def _power_fields(
    *, effect: float, effect_of_interest: float | None, power_at: Callable[[float], float]
) -> tuple[float, float, list[str]]:
    """(power, the effect it refers to, warnings): effect_of_interest if given, else observed."""
    if effect_of_interest is not None:
        return power_at(abs(effect_of_interest)), effect_of_interest, []
    return power_at(abs(effect)), effect, ["observed_power"]


# ---------------------------------------------------------------------------------------------
# relative lift


def _relative_delta(
    *,
    mean_a: float,
    var_mean_a: float,
    mean_b: float,
    var_mean_b: float,
    cov_means: float = 0.0,
    alpha: float,
    df: float | None = None,
) -> tuple[float | None, float | None, float | None, list[str]]:
    """(B − A)/A with a delta-method CI: Var(B̄/Ā) ≈ (V_B − 2R·C + R²·V_A)/Ā², R = B̄/Ā.

    The quantile is Student's t at `df` — the same df as the absolute interval (Welch's for
    `welch`, n − 1 for `paired_t`), as GrowthBook's frequentist engine does — so the two
    intervals agree on how sure we are; a normal quantile was ~1 % too narrow at n = 40.
    df None: normal. Unreliable when Ā is not clearly away from 0 (Fieller's exact interval
    would then be unbounded): flagged baseline_near_zero.
    """
    if mean_a == 0.0:
        return None, None, None, ["zero_baseline"]
    ratio = mean_b / mean_a
    var = (var_mean_b - 2.0 * ratio * cov_means + ratio * ratio * var_mean_a) / mean_a**2
    q = _z(alpha) if df is None else float(special.stdtrit(df, 1.0 - alpha / 2.0))
    half = q * math.sqrt(max(var, 0.0))
    warns = []
    if var_mean_a > 0 and abs(mean_a) / math.sqrt(var_mean_a) <= q:
        warns.append("baseline_near_zero")
    return ratio - 1.0, ratio - 1.0 - half, ratio - 1.0 + half, warns


def _wilson(successes: int, n: int, alpha: float) -> tuple[float, float]:
    """Wilson score interval, as statsmodels proportion_confint(method="wilson") computes it —
    inlined because statsmodels' per-call overhead dominated `proportions` (3 calls each)."""
    z = _z(alpha)
    z2 = z * z
    p = successes / n
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    return min(max(center - half, 0.0), 1.0), min(max(center + half, 0.0), 1.0)


def _mover_difference(
    *,
    p1: float,
    ci1: tuple[float, float],
    p2: float,
    ci2: tuple[float, float],
    corr: float = 0.0,
) -> tuple[float, float]:
    """MOVER ("square-and-add") interval for p1 − p2 from each proportion's own interval.

    With Wilson limits and corr = 0 this is Newcombe's hybrid score interval (statsmodels
    method "newcomb"); with Newcombe's correlation estimate it is his paired interval.
    """
    l1, u1 = ci1
    l2, u2 = ci2
    diff = p1 - p2
    low = diff - math.sqrt(
        max((p1 - l1) ** 2 - 2.0 * corr * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0)
    )
    high = diff + math.sqrt(
        max((p2 - l2) ** 2 - 2.0 * corr * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0)
    )
    return low, high


def _mover_ratio(
    *,
    p1: float,
    ci1: tuple[float, float],
    p2: float,
    ci2: tuple[float, float],
    corr: float = 0.0,
) -> tuple[float, float | None]:
    """MOVER-R interval for p1/p2 from each proportion's own interval (Donner & Zou 2012).

    corr is the correlation of the two estimates (0 when independent, the sample correlation
    of the two pass indicators when paired). The upper limit is None when unbounded (p2's
    interval reaches 0). Lower limit in the rationalised form, stable when the denominator nears 0.
    """
    l1, u1 = ci1
    l2, u2 = ci2
    x = p1 * p2 - corr * (p1 - l1) * (u2 - p2)
    c_low = l1 * (2.0 * p1 - l1)
    d_low = u2 * (2.0 * p2 - u2)
    root = math.sqrt(max(x * x - c_low * d_low, 0.0))
    low = c_low / (x + root) if x + root > 0 else 0.0
    y = p1 * p2 - corr * (u1 - p1) * (p2 - l2)
    c_high = u1 * (2.0 * p1 - u1)
    d_high = l2 * (2.0 * p2 - l2)
    disc = y * y - c_high * d_high
    high = (y + math.sqrt(disc)) / d_high if d_high > 0 and disc >= 0 else -1.0
    return max(low, 0.0), high if high >= 0 else None


# ---------------------------------------------------------------------------------------------
# Welch from sufficient statistics


def _numerical_var(m: Moments) -> float:
    """Sample variance, with values below the sum-of-squares formula's rounding noise (relative
    spread < 1e-6 of the RMS) treated as exactly 0 — constant data must read as constant."""
    var = m.var
    return 0.0 if var <= 1e-12 * (m.total_sq / m.n) else var


def welch(
    *, a: Moments, b: Moments, alpha: float = 0.05, effect_of_interest: float | None = None
) -> Comparison:
    """Welch's t test on the difference in means, from (n, sum, sum of squares) alone.

    Works straight off ClickHouse aggregates and doesn't assume equal variances (versions
    often differ in spread). df by Welch–Satterthwaite; CI of B̄ − Ā from the same t; relative
    lift by the delta method (means independent), with the same t quantile. Power/MDE:
    noncentral t at the Welch df.
    """
    _check_alpha(alpha)
    base = Comparison(
        test="welch_t",
        why="Welch's t-test: compares means without assuming equal variances",
        alpha=alpha,
        n_a=a.n,
        n_b=b.n,
        effect_kind="difference_in_means",
    )
    if a.n <= 0 or b.n <= 0:
        return replace(base, reason="no_data")
    if not all(math.isfinite(v) for v in (a.total, a.total_sq, b.total, b.total_sq)):
        return replace(base, reason="non_finite")
    mean_a, mean_b = a.mean, b.mean
    base = replace(base, estimate_a=mean_a, estimate_b=mean_b, effect=mean_b - mean_a)
    if a.n < 2 or b.n < 2:
        return replace(base, reason="too_few_observations")
    va, vb = _numerical_var(a) / a.n, _numerical_var(b) / b.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return replace(base, reason="zero_variance")
    df = (va + vb) ** 2 / (va * va / (a.n - 1) + vb * vb / (b.n - 1))
    effect = mean_b - mean_a
    t = effect / se
    half = float(special.stdtrit(df, 1.0 - alpha / 2.0)) * se
    rel, rel_low, rel_high, rel_warns = _relative_delta(
        mean_a=mean_a, var_mean_a=va, mean_b=mean_b, var_mean_b=vb, alpha=alpha, df=df
    )
    power, power_effect, power_warns = _power_fields(
        effect=effect,
        effect_of_interest=effect_of_interest,
        power_at=lambda e: t_power(effect=e, se=se, df=df, alpha=alpha),
    )
    return replace(
        base,
        ci_low=effect - half,
        ci_high=effect + half,
        relative_effect=rel,
        rel_ci_low=rel_low,
        rel_ci_high=rel_high,
        statistic=t,
        df=df,
        p_value=_pvalue_t(t, df),
        power=power,
        power_effect=power_effect,
        mde=t_mde(se=se, df=df, alpha=alpha),
        warnings=(*_group_warnings(a.n, b.n), *rel_warns, *power_warns),
    )


# ---------------------------------------------------------------------------------------------
# order statistics of pairwise sums (Hodges–Lehmann without materialising n·m pairs)

_ENUMERATE_BELOW = 1_000_000  # candidates left in the bracket before we just sort them


def _prefix(x: FloatArray, y: FloatArray, t: float) -> IntArray:
    """For each y_j, how many x_i have fl(x_i + y_j) ≤ t (x sorted).

    searchsorted on t − y_j is off by rounding, so boundaries are nudged until they agree with
    the floating-point sums themselves — the same numbers a brute-force outer sum would hold.
    """
    n = x.size
    idx: IntArray = np.searchsorted(x, t - y, side="right")
    for _ in range(64):
        up = idx < n
        up[up] = x[idx[up]] + y[up] <= t
        down = idx > 0
        down[down] = x[idx[down] - 1] + y[down] > t
        if not (up.any() or down.any()):
            break
        idx[up] = np.searchsorted(x, x[idx[up]], side="right")
        idx[down] = np.searchsorted(x, x[idx[down] - 1], side="left")
    return idx


def _kth_sum(x: FloatArray, y: FloatArray, k: int, *, symmetric: bool = False) -> float:
    """k-th smallest (1-based) of x_i + y_j over all pairs — or over i ≤ j when `symmetric`
    (y is x: Walsh sums). x and y sorted ascending.

    Bisect on the value, counting sums ≤ t in O(m log n); after each step snap to the next
    actual sum (so ties terminate); sort the bracket once it holds few candidates.
    """

    def count(t: float) -> int:
        full = int(_prefix(x, y, t).sum())
        if symmetric:
            return (full + int(np.count_nonzero(x + x <= t))) // 2
        return full

    def next_above(t: float) -> float:
        idx = _prefix(x, y, t)
        ok = idx < x.size
        return float(np.min(x[idx[ok]] + y[ok]))

    lo = float(x[0] + y[0])
    count_lo = count(lo)
    if count_lo >= k:
        return lo
    hi = float(x[-1] + y[-1])
    count_hi = x.size * (x.size + 1) // 2 if symmetric else x.size * y.size
    for _ in range(2_000):  # each pass halves [lo, hi] or lands on the answer
        snap = next_above(lo)
        count_snap = count(snap)
        if count_snap >= k:
            return snap
        lo, count_lo = snap, count_snap
        if count_hi - count_lo <= _ENUMERATE_BELOW:
            return _kth_in_bracket(x, y, lo, hi, k - count_lo, symmetric=symmetric)
        mid = lo + (hi - lo) / 2.0
        if not lo < mid < hi:
            return hi
        count_mid = count(mid)
        if count_mid >= k:
            hi, count_hi = mid, count_mid
        else:
            lo, count_lo = mid, count_mid
    return hi


def _kth_in_bracket(
    x: FloatArray, y: FloatArray, lo: float, hi: float, r: int, *, symmetric: bool
) -> float:
    """r-th smallest sum in (lo, hi], enumerating just those pairs."""
    start, stop = _prefix(x, y, lo), _prefix(x, y, hi)
    lengths = stop - start
    j = np.repeat(np.arange(y.size), lengths)
    offsets = np.arange(j.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    i = np.repeat(start, lengths) + offsets
    if symmetric:
        keep = i <= j
        i, j = i[keep], j[keep]
    values = x[i] + y[j]
    return float(np.partition(values, r - 1)[r - 1])


def _median_of_sums(x: FloatArray, y: FloatArray, *, symmetric: bool) -> float:
    total = x.size * (x.size + 1) // 2 if symmetric else x.size * y.size
    mid = (total + 1) // 2
    low = _kth_sum(x, y, mid, symmetric=symmetric)
    if total % 2:
        return low
    return (low + _kth_sum(x, y, mid + 1, symmetric=symmetric)) / 2.0


def _order_ci(
    x: FloatArray, y: FloatArray, *, total: int, sd: float, alpha: float, symmetric: bool
) -> tuple[float, float] | None:
    """Distribution-free CI from order statistics of the pairwise sums: the k-th smallest and
    k-th largest, k from the rank statistic's normal approximation with continuity correction
    (Moses for Mann–Whitney, Tukey for Wilcoxon). None when even the extremes don't reach
    1 − alpha."""
    k = math.floor(total / 2.0 + 0.5 - _z(alpha) * sd)
    if k < 1:
        return None
    return (
        _kth_sum(x, y, k, symmetric=symmetric),
        _kth_sum(x, y, total + 1 - k, symmetric=symmetric),
    )


# ---------------------------------------------------------------------------------------------
# rank tests


def mann_whitney(
    *,
    a: Sequence[float] | FloatArray,
    b: Sequence[float] | FloatArray,
    alpha: float = 0.05,
    max_n: int = 50_000,
    seed: int = 0,
) -> Comparison:
    """Mann–Whitney U (two-sided, scipy `method="auto"`, tie-corrected): does B tend to exceed A?

    For skewed/heavy-tailed metrics (latency, cost, token counts), where a few extreme values
    dominate means. Effect: the Hodges–Lehmann shift, median of all B_j − A_i (not the
    difference in medians), with the Moses order-statistic CI — distribution-free under a pure
    shift model, approximate with ties or shape changes. Also P(B > A) + ½P(tie). No
    relative effect, power or MDE (no closed form without a distributional model).

    Above max_n values per group, a seeded uniform sample of max_n without replacement is used
    (warning "sampled"; n_a/n_b and medians are the sample's). At 50k per group the standard
    error of P(B > A) is already ~0.002, and the pairwise-difference selection stays ~1 s.
    """
    _check_alpha(alpha)
    x, dropped_a = _finite(a)
    y, dropped_b = _finite(b)
    x, y, sampled = _cap(x, y, max_n=max_n, seed=seed)
    warns = [*_dropped(dropped_a + dropped_b), *sampled]
    base = Comparison(
        test="mann_whitney_u",
        why="Mann-Whitney U: rank-based, so robust to skew and outliers",
        alpha=alpha,
        n_a=int(x.size),
        n_b=int(y.size),
        effect_kind="hodges_lehmann_shift",
    )
    if x.size == 0 or y.size == 0:
        return replace(base, reason="no_data", warnings=tuple(warns))
    base = replace(base, estimate_a=float(np.median(x)), estimate_b=float(np.median(y)))
    if x.size < 2 or y.size < 2:
        return replace(base, reason="too_few_observations", warnings=tuple(warns))
    both = np.concatenate([x, y])
    if np.ptp(both) == 0:
        return replace(
            base, effect=0.0, prob_superiority=0.5, reason="zero_variance", warnings=tuple(warns)
        )
    if np.unique(both).size < both.size:
        warns.append("ties")
    res = stats.mannwhitneyu(y, x, alternative="two-sided", method="auto")
    neg_a = np.sort(-x)  # B_j − A_i as B_j + (−A_i): exact same floats as a brute-force outer
    sorted_b = np.sort(y)
    n_a, n_b = x.size, y.size
    total = n_a * n_b
    ci = _order_ci(
        neg_a,
        sorted_b,
        total=total,
        sd=math.sqrt(total * (n_a + n_b + 1) / 12.0),
        alpha=alpha,
        symmetric=False,
    )
    if ci is None:
        warns.append("ci_unavailable")
    return replace(
        base,
        effect=_median_of_sums(neg_a, sorted_b, symmetric=False),
        ci_low=None if ci is None else ci[0],
        ci_high=None if ci is None else ci[1],
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        prob_superiority=float(res.statistic) / total,
        warnings=(*_group_warnings(n_a, n_b), *warns),
    )


# ---------------------------------------------------------------------------------------------
# proportions


def proportions(
    *,
    a_success: int,
    a_n: int,
    b_success: int,
    b_n: int,
    alpha: float = 0.05,
    test: Literal["auto", "z", "fisher"] = "auto",
    effect_of_interest: float | None = None,
) -> Comparison:
    """Difference of two independent pass rates (B − A).

    Test: two-proportion z (pooled; = Pearson chi-square without continuity correction), or
    Fisher's exact test — in auto mode whenever an expected cell count is < 5, where the
    normal approximation misstates the p-value.
    CI: Newcombe's hybrid score interval (= statsmodels confint_proportions_2indep "newcomb",
    built here from the Wilson limits the ratio needs anyway): closed form, stays in [−1, 1],
    near-nominal coverage at small n and at 0%/100% rates, where statsmodels' "score"
    inversion divides by zero.
    Relative lift (risk ratio − 1): MOVER-R on the same Wilson intervals, so both intervals
    share one construction; statsmodels' ratio intervals fail with zero counts ("log"),
    collapse to a point at 100% ("log-adjusted"), or near 100% exclude a ratio of 1 that no test
    would reject ("score" in statsmodels 0.15 gives 1.05–1.68 for 10/10 vs 9/10).
    Power/MDE: normal approximation on Cohen's h (arcsine), as statsmodels NormalIndPower.
    """
    _check_alpha(alpha)
    base = Comparison(
        test="fisher_exact" if test == "fisher" else "two_proportion_z",
        why=(
            "Fisher's exact test: exact p-value for a 2x2 table"
            if test == "fisher"
            else "two-proportion z-test (pooled): binary outcome, large-sample normal approximation"
        ),
        alpha=alpha,
        n_a=a_n,
        n_b=b_n,
        effect_kind="difference_in_proportions",
    )
    if a_n < 0 or b_n < 0 or not (0 <= a_success <= a_n and 0 <= b_success <= b_n):
        return replace(base, reason="invalid_counts")
    if a_n == 0 or b_n == 0:
        return replace(base, reason="no_data")
    p_a, p_b = a_success / a_n, b_success / b_n
    effect = p_b - p_a
    table = np.array([[b_success, b_n - b_success], [a_success, a_n - a_success]], dtype=float)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    min_expected = float(expected.min())
    use_fisher = test == "fisher" or (test == "auto" and min_expected < MIN_EXPECTED_CELL)
    if test == "auto":
        base = replace(
            base,
            test="fisher_exact" if use_fisher else "two_proportion_z",
            why=(
                f"auto: smallest expected cell count {min_expected:.3g} < 5, so Fisher's exact test"
                if use_fisher
                else "auto: every expected cell count >= 5, so the two-proportion z-test"
            ),
        )
    wilson_a, wilson_b = _wilson(a_success, a_n, alpha), _wilson(b_success, b_n, alpha)
    ci_low, ci_high = _mover_difference(p1=p_b, ci1=wilson_b, p2=p_a, ci2=wilson_a)
    warns = _group_warnings(a_n, b_n)
    rel = rel_low = rel_high = None
    if a_success == 0:
        warns.append("zero_baseline")
    else:
        rel = p_b / p_a - 1.0
        low, high = _mover_ratio(p1=p_b, ci1=wilson_b, p2=p_a, ci2=wilson_a)
        rel_low, rel_high = low - 1.0, None if high is None else high - 1.0
        if high is None:
            warns.append("unbounded_ci")
    h_se = math.sqrt(1.0 / a_n + 1.0 / b_n)
    power, power_effect, power_warns = _power_fields(
        effect=effect,
        effect_of_interest=effect_of_interest,
        power_at=lambda e: _proportion_power(p_a=p_a, change=e, h_se=h_se, alpha=alpha),
    )
    base = replace(
        base,
        estimate_a=p_a,
        estimate_b=p_b,
        effect=effect,
        ci_low=ci_low,
        ci_high=ci_high,
        relative_effect=rel,
        rel_ci_low=rel_low,
        rel_ci_high=rel_high,
        power=power,
        power_effect=power_effect,
        mde=_proportion_mde(p_a=p_a, h_se=h_se, alpha=alpha),
        warnings=(*warns, *power_warns),
    )
    if use_fisher:
        odds, p = stats.fisher_exact(table, alternative="two-sided")
        return replace(base, statistic=float(odds), p_value=float(p))
    pooled = (a_success + b_success) / (a_n + b_n)
    if pooled in (0.0, 1.0):
        return replace(base, reason="zero_variance")
    z, p = proportions_ztest(np.array([b_success, a_success]), np.array([b_n, a_n]))
    return replace(base, statistic=float(z), p_value=float(p))


def _proportion_power(*, p_a: float, change: float, h_se: float, alpha: float) -> float:
    """Power against a true rate p_a ± |change| (an increase if it fits in [0, 1], else a
    decrease) via Cohen's h; an impossible change has power 0."""
    change = abs(change)
    p_b = p_a + change if p_a + change <= 1.0 else p_a - change
    if not 0.0 <= p_b <= 1.0:
        return 0.0
    h = 2.0 * math.asin(math.sqrt(p_b)) - 2.0 * math.asin(math.sqrt(p_a))
    return normal_power(effect=abs(h), se=h_se, alpha=alpha)


def _proportion_mde(*, p_a: float, h_se: float, alpha: float) -> float | None:
    """Smallest |change| from p_a detectable with 80% power: h from the normal power curve, then
    back to a rate — upward if that stays ≤ 1, else downward; None if neither fits."""
    h = normal_mde(se=h_se, alpha=alpha)
    angle = math.asin(math.sqrt(p_a))
    if angle + h / 2.0 <= math.pi / 2.0:
        return math.sin(angle + h / 2.0) ** 2 - p_a
    if angle - h / 2.0 >= 0.0:
        return p_a - math.sin(angle - h / 2.0) ** 2
    return None


# ---------------------------------------------------------------------------------------------
# paired: the same eval cases under both versions (index i of a and b is the same case)


def paired_t(
    *,
    a: Sequence[float] | FloatArray,
    b: Sequence[float] | FloatArray,
    alpha: float = 0.05,
    effect_of_interest: float | None = None,
) -> Comparison:
    """Paired t test on B_i − A_i (scipy ttest_rel): case-to-case difficulty cancels, so far
    more power than an unpaired test on the same scores. Relative lift by the delta method with
    the covariance of the two means. Power/MDE: noncentral t, df = n − 1 (exact, as
    statsmodels TTestPower)."""
    _check_alpha(alpha)
    start = _paired_input(
        a,
        b,
        Comparison(
            test="paired_t",
            why="paired t-test: same cases under both versions, tests the mean per-case change",
            alpha=alpha,
            n_a=len(a),
            n_b=len(b),
            effect_kind="mean_of_differences",
        ),
    )
    if isinstance(start, Comparison):
        return start
    base, x, y = start
    n = int(x.size)
    mean_a, mean_b = float(x.mean()), float(y.mean())
    d = y - x
    base = replace(base, estimate_a=mean_a, estimate_b=mean_b, effect=float(d.mean()))
    if n < 2:
        return replace(base, reason="too_few_observations")
    sd = float(d.std(ddof=1))
    if sd <= 1e-12 * float(np.sqrt(np.mean(d * d))):
        return replace(base, reason="zero_variance")
    res = stats.ttest_rel(y, x)
    ci = res.confidence_interval(confidence_level=1.0 - alpha)
    se = sd / math.sqrt(n)
    cov = np.cov(x, y, ddof=1)
    rel, rel_low, rel_high, rel_warns = _relative_delta(
        mean_a=mean_a,
        var_mean_a=float(cov[0, 0]) / n,
        mean_b=mean_b,
        var_mean_b=float(cov[1, 1]) / n,
        cov_means=float(cov[0, 1]) / n,
        alpha=alpha,
        df=float(n - 1),
    )
    df = float(n - 1)
    power, power_effect, power_warns = _power_fields(
        effect=float(d.mean()),
        effect_of_interest=effect_of_interest,
        power_at=lambda e: t_power(effect=e, se=se, df=df, alpha=alpha),
    )
    return replace(
        base,
        ci_low=float(ci.low),
        ci_high=float(ci.high),
        relative_effect=rel,
        rel_ci_low=rel_low,
        rel_ci_high=rel_high,
        statistic=float(res.statistic),
        df=df,
        p_value=float(res.pvalue),
        power=power,
        power_effect=power_effect,
        mde=t_mde(se=se, df=df, alpha=alpha),
        warnings=(*base.warnings, *_group_warnings(n, n, paired=True), *rel_warns, *power_warns),
    )


def wilcoxon(
    *, a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray, alpha: float = 0.05
) -> Comparison:
    """Wilcoxon signed-rank test on B_i − A_i (scipy, two-sided): paired, robust to outliers.

    Zero differences (a case scored the same under both versions — common with graded evals)
    use Pratt's method: kept in the ranking, then given no sign. Dropping them first
    ("wilcox") would rank the changed cases as if the unchanged ones never existed.
    Effect: Hodges–Lehmann pseudomedian of the differences (median of the Walsh averages), with
    Tukey's order-statistic CI over all n differences (normal approximation for the index;
    exact coverage for continuous symmetric differences, approximate with ties/zeros).
    estimate_a/b are the medians. No relative effect, power or MDE.
    """
    _check_alpha(alpha)
    start = _paired_input(
        a,
        b,
        Comparison(
            test="wilcoxon_signed_rank",
            why="Wilcoxon signed-rank: same cases under both versions, rank-based",
            alpha=alpha,
            n_a=len(a),
            n_b=len(b),
            effect_kind="pseudomedian_of_differences",
        ),
    )
    if isinstance(start, Comparison):
        return start
    base, x, y = start
    n = int(x.size)
    warns = list(base.warnings)
    base = replace(base, estimate_a=float(np.median(x)), estimate_b=float(np.median(y)))
    d = np.sort(y - x)
    if n < 2:
        return replace(base, effect=float(d[0]), reason="too_few_observations")
    if not d.any():
        return replace(base, effect=0.0, reason="zero_variance")
    if not d.all():
        warns.append("zero_differences")
    if np.unique(np.abs(d[d != 0])).size < np.count_nonzero(d):
        warns.append("ties")
    res = stats.wilcoxon(d, zero_method="pratt", alternative="two-sided", method="auto")
    total = n * (n + 1) // 2
    ci = _order_ci(
        d,
        d,
        total=total,
        sd=math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0),
        alpha=alpha,
        symmetric=True,
    )
    if ci is None:
        warns.append("ci_unavailable")
    return replace(
        base,
        effect=_median_of_sums(d, d, symmetric=True) / 2.0,
        ci_low=None if ci is None else ci[0] / 2.0,
        ci_high=None if ci is None else ci[1] / 2.0,
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        warnings=(*warns, *_group_warnings(n, n, paired=True)),
    )


def mcnemar(
    *,
    a_pass: Sequence[bool] | npt.NDArray[np.bool_],
    b_pass: Sequence[bool] | npt.NDArray[np.bool_],
    alpha: float = 0.05,
) -> Comparison:
    """Exact McNemar test (statsmodels): pass/fail of the same cases under both versions.

    Only discordant cases (pass under one version, fail under the other) carry information;
    the exact binomial test on them stays valid however few there are. With none, p = 1.
    CI of p_B − p_A: Newcombe's paired square-and-add interval (Wilson limits with the
    correlation correction). Relative lift: MOVER-R on the same Wilson limits with the
    correlation of the two rates. Both as in Fagerland, Lydersen & Laake, "Statistical Analysis
    of Contingency Tables" (2017), ch. 8, whose worked example the tests reproduce.
    """
    _check_alpha(alpha)
    base = Comparison(
        test="mcnemar_exact",
        why="exact McNemar test: same cases under both versions, binary outcome",
        alpha=alpha,
        n_a=len(a_pass),
        n_b=len(b_pass),
        effect_kind="difference_in_proportions",
    )
    if len(a_pass) != len(b_pass):
        return replace(base, reason="length_mismatch")
    pa_arr = np.asarray(a_pass, dtype=bool)
    pb_arr = np.asarray(b_pass, dtype=bool)
    both = int(np.count_nonzero(pa_arr & pb_arr))
    only_a = int(np.count_nonzero(pa_arr & ~pb_arr))
    only_b = int(np.count_nonzero(~pa_arr & pb_arr))
    return mcnemar_counts(
        both=both,
        only_a=only_a,
        only_b=only_b,
        neither=len(a_pass) - both - only_a - only_b,
        alpha=alpha,
    )


def mcnemar_counts(
    *, both: int, only_a: int, only_b: int, neither: int, alpha: float = 0.05
) -> Comparison:
    """`mcnemar` from the 2×2 table of paired outcomes (pass under both, only A, only B,
    neither) — for callers that only have the counts."""
    _check_alpha(alpha)
    n = both + only_a + only_b + neither
    base = Comparison(
        test="mcnemar_exact",
        why="exact McNemar test: same cases under both versions, binary outcome",
        alpha=alpha,
        n_a=n,
        n_b=n,
        effect_kind="difference_in_proportions",
    )
    if min(both, only_a, only_b, neither) < 0:
        return replace(base, reason="invalid_counts")
    if n == 0:
        return replace(base, reason="no_data")
    pass_a, pass_b = both + only_a, both + only_b
    p_a, p_b = pass_a / n, pass_b / n
    res = _sm_mcnemar(np.array([[both, only_a], [only_b, neither]]), exact=True)
    wilson_a, wilson_b = _wilson(pass_a, n, alpha), _wilson(pass_b, n, alpha)
    margins = float(pass_a) * (n - pass_a) * pass_b * (n - pass_b)
    cross = float(both) * neither - float(only_a) * only_b
    # Newcombe's correlation, shrunk by N/2 when positive (his continuity-style adjustment)
    psi = 0.0
    if margins > 0:
        psi = (cross - n / 2.0 if cross > n / 2.0 else min(cross, 0.0)) / math.sqrt(margins)
    corr = cross / math.sqrt(margins) if margins > 0 else 0.0
    effect = p_b - p_a
    ci_low, ci_high = _mover_difference(p1=p_b, ci1=wilson_b, p2=p_a, ci2=wilson_a, corr=psi)
    warns = _group_warnings(n, n, paired=True)
    if only_a + only_b == 0:
        warns.append("no_discordant_pairs")
    rel = rel_low = rel_high = None
    if pass_a == 0:
        warns.append("zero_baseline")
    else:
        rel = p_b / p_a - 1.0
        low, high = _mover_ratio(p1=p_b, ci1=wilson_b, p2=p_a, ci2=wilson_a, corr=corr)
        rel_low, rel_high = low - 1.0, None if high is None else high - 1.0
        if high is None:
            warns.append("unbounded_ci")
    return replace(
        base,
        estimate_a=p_a,
        estimate_b=p_b,
        effect=effect,
        ci_low=ci_low,
        ci_high=ci_high,
        relative_effect=rel,
        rel_ci_low=rel_low,
        rel_ci_high=rel_high,
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        warnings=tuple(warns),
    )


# ---------------------------------------------------------------------------------------------
# bootstrap


def _named_statistic(name: str) -> Callable[[FloatArray, int], FloatArray] | None:
    if name == "mean":
        return lambda x, axis: np.mean(x, axis=axis)
    if name == "median":
        return lambda x, axis: np.median(x, axis=axis)
    match = re.fullmatch(r"p(\d+(?:\.\d+)?)", name)
    if match and 0.0 < float(match.group(1)) < 100.0:
        q = float(match.group(1))
        return lambda x, axis: np.percentile(x, q, axis=axis)
    return None


def bootstrap(
    *,
    a: Sequence[float] | FloatArray,
    b: Sequence[float] | FloatArray,
    statistic: Statistic = "p95",
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    max_n: int = 10_000,
) -> Comparison:
    """CI of statistic(B) − statistic(A) by scipy.stats.bootstrap, resampling each group
    independently — for summaries with no closed-form standard error (tail latency "p95",
    "p99", "median", any "pNN", "mean", or a callable on a 1-D array).

    Percentile method, not BCa: BCa's acceleration comes from a jackknife, which is
    inconsistent for quantiles (the very statistics this is for) and costs O(n) extra
    evaluations. The relative effect uses the same resamples.
    No p-value: inverting a percentile interval treats the bootstrap distribution as a shifted
    null distribution, which nothing guarantees for tail quantiles; read `significant` (CI
    excludes 0) instead.

    Cost is n_resamples × n per group (~1 s at 2000 × 10k), so above max_n per group a seeded
    uniform sample without replacement is used (warning "sampled"; estimates, n_a/n_b and CI
    all from the sample). An interval from a random subsample is still valid, only wider.
    """
    _check_alpha(alpha)
    name = statistic if isinstance(statistic, str) else getattr(statistic, "__name__", "")
    name = name if isinstance(statistic, str) or name.isidentifier() else "custom"
    vector_fn = _named_statistic(statistic) if isinstance(statistic, str) else None
    if isinstance(statistic, str) and vector_fn is None:
        raise ValueError(f"unknown statistic {statistic!r}: use mean, median, pNN or a callable")
    x, dropped_a = _finite(a)
    y, dropped_b = _finite(b)
    x, y, sampled = _cap(x, y, max_n=max_n, seed=seed)
    warns = [*_dropped(dropped_a + dropped_b), *sampled]
    base = Comparison(
        test="bootstrap",
        why=f"percentile bootstrap of the {name}: no closed-form standard error for it",
        alpha=alpha,
        n_a=int(x.size),
        n_b=int(y.size),
        effect_kind=f"difference_in_{name}",
        warnings=tuple(warns),
    )
    if x.size == 0 or y.size == 0:
        return replace(base, reason="no_data")

    def one(values: FloatArray) -> float:
        if vector_fn is not None:
            return float(vector_fn(values, -1))
        assert callable(statistic)
        return float(statistic(values))

    stat_a, stat_b = one(x), one(y)
    base = replace(base, estimate_a=stat_a, estimate_b=stat_b, effect=stat_b - stat_a)
    if x.size < 2 or y.size < 2:
        return replace(base, reason="too_few_observations")
    if np.ptp(np.concatenate([x, y])) == 0:
        return replace(base, reason="zero_variance")
    match = re.fullmatch(r"p(\d+(?:\.\d+)?)", name)
    if match:
        q = float(match.group(1)) / 100.0
        if min(x.size, y.size) * min(q, 1.0 - q) < MIN_TAIL_OBS:
            warns.append("few_tail_observations")
    with_ratio = stat_a != 0.0
    if not with_ratio:
        warns.append("zero_baseline")

    def vectorized(xs: FloatArray, ys: FloatArray, axis: int = -1) -> FloatArray:
        assert vector_fn is not None
        sa, sb = vector_fn(xs, axis), vector_fn(ys, axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.stack([sb - sa, sb / sa]) if with_ratio else sb - sa

    def scalar(xs: FloatArray, ys: FloatArray) -> FloatArray:
        sa, sb = one(xs), one(ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = sb / sa if sa != 0.0 else math.nan
        return np.array([sb - sa, ratio]) if with_ratio else np.array(sb - sa)

    res = stats.bootstrap(
        (x, y),
        vectorized if vector_fn is not None else scalar,
        vectorized=vector_fn is not None,
        paired=False,
        n_resamples=n_resamples,
        batch=max(1, min(n_resamples, 2_000_000 // (x.size + y.size))),
        confidence_level=1.0 - alpha,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low = np.atleast_1d(res.confidence_interval.low)
    high = np.atleast_1d(res.confidence_interval.high)
    rel = rel_low = rel_high = None
    if with_ratio:
        if np.all(np.isfinite(res.bootstrap_distribution[1])):
            rel, rel_low, rel_high = stat_b / stat_a - 1.0, low[1] - 1.0, high[1] - 1.0
        else:
            rel = stat_b / stat_a - 1.0
            warns.append("unstable_ratio")
    return replace(
        base,
        ci_low=float(low[0]),
        ci_high=float(high[0]),
        relative_effect=rel,
        rel_ci_low=None if rel_low is None else float(rel_low),
        rel_ci_high=None if rel_high is None else float(rel_high),
        warnings=(*_group_warnings(x.size, y.size), *warns),
    )


# ---------------------------------------------------------------------------------------------
# choosing a test


def _is_binary(x: FloatArray) -> bool:
    return bool(x.size) and bool(np.all((x == 0.0) | (x == 1.0)))


def choose_test(
    *, a: Sequence[float] | FloatArray | Moments, b: Sequence[float] | FloatArray | Moments
) -> tuple[Literal["welch_t", "mann_whitney_u", "proportions"], str]:
    """(test, why) for two independent groups of a metric.

    Rule, first match wins:
    1. only sufficient statistics (Moments) for either group → Welch: nothing else is possible;
    2. raw values all 0/1 → proportions (z or Fisher, decided there);
    3. sample excess kurtosis > 10 in either group → Mann–Whitney: heavy tails make the mean a
       noisy, outlier-driven summary and Welch loses most of its power;
    4. n below Cochran's 25·skewness² in either group → Mann–Whitney: the mean's sampling
       distribution is still visibly skewed, so t p-values and CIs are off;
    5. otherwise Welch: the question stays "did the mean change".
    Switching to Mann–Whitney changes the estimand (shift / P(B > A), not the mean); `why`
    says so.
    """
    test, why, _ = _choose(a, b)
    return test, why


def _choose(
    a: Sequence[float] | FloatArray | Moments, b: Sequence[float] | FloatArray | Moments
) -> tuple[Literal["welch_t", "mann_whitney_u", "proportions"], str, list[str]]:
    """choose_test plus the warning naming the rule that fired (heavy_tails, skewed_for_n)."""
    if isinstance(a, Moments) or isinstance(b, Moments):
        return "welch_t", "auto: only sufficient statistics available, so Welch's t-test", []
    x, _ = _finite(a)
    y, _ = _finite(b)
    if _is_binary(x) and _is_binary(y):
        return "proportions", "auto: values are all 0/1, so a test of two proportions", []
    shapes = [_shape(v) for v in (x, y)]
    kurt = max(k for _, k in shapes)
    if kurt > HEAVY_TAIL_KURTOSIS:
        why = (
            f"auto: excess kurtosis {kurt:.3g} > {HEAVY_TAIL_KURTOSIS:g} (heavy tails), so "
            "Mann-Whitney U; the effect is the Hodges-Lehmann shift, not a change in means"
        )
        return "mann_whitney_u", why, ["heavy_tails"]
    for values, (skew, _) in zip((x, y), shapes, strict=True):
        needed = COCHRAN_FACTOR * skew * skew
        if values.size < needed:
            why = (
                f"auto: skewness {skew:.3g} needs n >= {needed:.0f} for a normal mean "
                f"(Cochran), have {values.size}, so Mann-Whitney U; the effect is the "
                "Hodges-Lehmann shift, not a change in means"
            )
            return "mann_whitney_u", why, ["skewed_for_n"]
    why = "auto: tails and skew are mild for these n, so Welch's t-test on the means"
    return "welch_t", why, []


def _shape(x: FloatArray) -> tuple[float, float]:
    """(skewness, excess kurtosis), plain moment estimators; (0, 0) if undefined."""
    if x.size < 2 or np.ptp(x) == 0:
        return 0.0, 0.0
    return float(stats.skew(x)), float(stats.kurtosis(x))


def compare(
    *,
    a: Sequence[float] | FloatArray | Moments,
    b: Sequence[float] | FloatArray | Moments,
    alpha: float = 0.05,
    effect_of_interest: float | None = None,
) -> Comparison:
    """Independent groups, test picked by `choose_test`; `why` records the rule that fired."""
    test, why, rule_warnings = _choose(a, b)
    if isinstance(a, Moments) or isinstance(b, Moments):
        ma = a if isinstance(a, Moments) else _moments(_finite(a)[0])
        mb = b if isinstance(b, Moments) else _moments(_finite(b)[0])
        result = welch(a=ma, b=mb, alpha=alpha, effect_of_interest=effect_of_interest)
        return replace(result, why=why)
    x, dropped_a = _finite(a)
    y, dropped_b = _finite(b)
    if test == "proportions":
        result = proportions(
            a_success=int(x.sum()),
            a_n=int(x.size),
            b_success=int(y.sum()),
            b_n=int(y.size),
            alpha=alpha,
            effect_of_interest=effect_of_interest,
        )
        result = replace(result, why=f"{why}; {result.why.removeprefix('auto: ')}")
    elif test == "mann_whitney_u":
        result = mann_whitney(a=x, b=y, alpha=alpha)
        result = replace(result, why=why, warnings=(*result.warnings, *rule_warnings))
    else:
        result = welch(
            a=_moments(x), b=_moments(y), alpha=alpha, effect_of_interest=effect_of_interest
        )
        result = replace(result, why=why)
    if dropped_a + dropped_b and "dropped_non_finite" not in result.warnings:
        result = replace(result, warnings=(*result.warnings, "dropped_non_finite"))
    return result


def _moments(x: FloatArray) -> Moments:
    return Moments(int(x.size), float(x.sum()), float(np.dot(x, x)))


# ---------------------------------------------------------------------------------------------
# sample ratio mismatch and multiplicity


def srm(
    *, observed: Mapping[str, int], expected: Mapping[str, float], alpha: float = 0.001
) -> SampleRatio:
    """Chi-square goodness of fit of arm counts to the configured split (scipy chisquare).

    `expected` holds weights (normalised here). alpha defaults to 0.001: the check runs on every
    experiment and refresh, and a false alarm discards a valid comparison.
    """
    _check_alpha(alpha)
    arms = sorted(observed)
    if set(arms) != set(expected):
        return SampleRatio(
            statistic=None, p_value=None, mismatch=None, alpha=alpha, arms=(), reason="arms_differ"
        )
    counts = np.array([observed[k] for k in arms], dtype=float)
    weights = np.array([expected[k] for k in arms], dtype=float)
    reason = None
    if len(arms) < 2:
        reason = "too_few_arms"
    elif np.any(counts < 0) or not np.all(np.isfinite(counts)):
        reason = "invalid_counts"
    elif np.any(weights <= 0) or not np.all(np.isfinite(weights)):
        reason = "invalid_expected"
    elif counts.sum() == 0:
        reason = "no_data"
    if reason is not None:
        return SampleRatio(
            statistic=None, p_value=None, mismatch=None, alpha=alpha, arms=(), reason=reason
        )
    total = counts.sum()
    shares = weights / weights.sum()
    exp_counts = shares * total
    res = stats.chisquare(counts, exp_counts)
    p = float(res.pvalue)
    return SampleRatio(
        statistic=float(res.statistic),
        p_value=p,
        mismatch=p < alpha,
        alpha=alpha,
        arms=tuple(
            ArmShare(
                arm=arm,
                observed=int(c),
                expected=float(e),
                observed_share=float(c / total),
                expected_share=float(s),
            )
            for arm, c, e, s in zip(arms, counts, exp_counts, shares, strict=True)
        ),
    )


def adjust(p_values: Sequence[float], *, method: Literal["holm", "bh"]) -> list[float]:
    """Multiplicity-adjusted p-values (statsmodels multipletests), same order as given.

    holm controls the family-wise error rate (any false "this version changed quality");
    bh the false discovery rate (share of flagged versions that are wrong) — more power when
    scanning many versions/metrics. NaN entries (tests that could not run) stay NaN and are
    not counted in the family.
    """
    p = np.asarray(p_values, dtype=float)
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    out = np.full(p.size, math.nan)
    if np.count_nonzero(ok) == 1:  # a family of one needs no adjusting (and multipletests
        out[ok] = p[ok]  # runs a full gc.collect() per call: ~60 ms in a large process)
    elif ok.any():
        out[ok] = multipletests(p[ok], method="holm" if method == "holm" else "fdr_bh")[1]
    return [float(v) for v in out]
