"""Always-valid (mSPRT) inference on B − A: the formula, its intervals, and peeking-safety."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, stats

from promptblame.analysis.moments import Moments
from promptblame.analysis.sequential import (
    always_valid,
    always_valid_path,
    tau2_for_horizon,
)


def _moments(n: int, mean: float, sd: float) -> Moments:
    return Moments(n, n * mean, (n - 1) * sd * sd + n * mean * mean)


def _mixture_lr_by_quadrature(effect: float, s2: float, tau2: float) -> float:
    """∫ N(θ; 0, τ²) · N(θ̂; θ, s²) / N(θ̂; 0, s²) dθ, numerically."""
    centre = effect * tau2 / (tau2 + s2)
    spread = math.sqrt(tau2 * s2 / (tau2 + s2))

    def integrand(theta: float) -> float:
        prior = stats.norm.pdf(theta, 0.0, math.sqrt(tau2))
        return prior * math.exp((2 * theta * effect - theta * theta) / (2 * s2))

    value, _ = integrate.quad(
        integrand,
        centre - 40 * spread,
        centre + 40 * spread,
        points=[centre],
        epsabs=0.0,
        epsrel=1e-11,
        limit=200,
    )
    return float(value)


@pytest.mark.parametrize(
    ("n_a", "n_b", "shift", "tau2"),
    [(50, 50, 0.0, 1e-3), (200, 350, 0.03, None), (1000, 800, -0.02, 4e-4), (40, 5000, 0.05, 1e-2)],
)
def test_the_msprt_statistic_equals_a_numeric_integral_over_the_normal_mixture(
    n_a, n_b, shift, tau2
):
    rng = np.random.default_rng(n_a + n_b)
    x = rng.beta(7, 3, size=n_a)
    y = np.clip(rng.beta(7, 3, size=n_b) + shift, 0, 1)
    r = always_valid(a=Moments.of(x.tolist()), b=Moments.of(y.tolist()), tau2=tau2)
    assert r.reason is None and r.log_lr is not None and r.tau2 is not None
    effect = float(y.mean() - x.mean())
    s2 = float(x.var(ddof=1) / n_a + y.var(ddof=1) / n_b)
    assert r.effect == pytest.approx(effect, rel=1e-9)
    assert r.se == pytest.approx(math.sqrt(s2), rel=1e-9)
    expected = _mixture_lr_by_quadrature(effect, s2, r.tau2)
    assert math.exp(r.log_lr) == pytest.approx(expected, rel=1e-6)
    assert r.p_value == pytest.approx(min(1.0, 1.0 / expected), rel=1e-6)


@pytest.mark.parametrize("n", [30, 200, 5000])
def test_the_always_valid_interval_contains_the_fixed_horizon_welch_interval(n):
    rng = np.random.default_rng(n)
    x = rng.beta(7, 3, size=n)
    y = rng.beta(6, 3, size=n + 17)
    r = always_valid(a=Moments.of(x.tolist()), b=Moments.of(y.tolist()))
    welch = stats.ttest_ind(y, x, equal_var=False).confidence_interval(0.95)
    assert r.low is not None and r.high is not None
    assert r.low < welch.low and welch.high < r.high
    assert (r.high - r.low) > 1.2 * (welch.high - welch.low)


def test_the_interval_shrinks_as_the_sample_grows():
    widths = []
    for n in [10, 100, 1_000, 10_000, 100_000]:
        r = always_valid(a=_moments(n, 0.70, 0.2), b=_moments(n, 0.72, 0.2))
        assert r.low is not None and r.high is not None
        widths.append(r.high - r.low)
    assert all(later < earlier for earlier, later in itertools.pairwise(widths))
    assert widths[-1] < 0.01


def test_a_real_effect_eventually_goes_below_alpha_and_stays_there():
    rng = np.random.default_rng(11)
    a = b = Moments(0, 0.0, 0.0)
    looks = []
    for _ in range(30):
        x, y = rng.beta(7, 3, size=200), rng.beta(7.5, 2.5, size=200)  # +5 points
        a += Moments(200, float(x.sum()), float((x * x).sum()))
        b += Moments(200, float(y.sum()), float((y * y).sum()))
        looks.append((a, b))
    path = always_valid_path(looks=looks)
    ps = [r.p_value for r in path]
    assert all(p is not None for p in ps)
    assert all(q <= p for p, q in itertools.pairwise(ps))  # type: ignore[operator]
    assert path[-1].p_value is not None and path[-1].p_value < 0.05
    assert path[-1].low is not None and path[-1].low > 0
    lows = [r.low for r in path]
    assert all(q >= p for p, q in itertools.pairwise(lows))  # type: ignore[operator]


def test_the_path_reports_the_running_minimum_and_intersection_of_single_looks():
    looks = [
        (_moments(100, 0.70, 0.2), _moments(100, 0.76, 0.2)),
        (_moments(200, 0.70, 0.2), _moments(200, 0.71, 0.2)),  # evidence fades at this look
    ]
    single = [always_valid(a=a, b=b) for a, b in looks]
    path = always_valid_path(looks=looks)
    assert path[0] == single[0]
    assert single[1].p_value is not None and single[0].p_value is not None
    assert single[1].p_value > single[0].p_value
    assert path[1].p_value == single[0].p_value
    assert path[1].low == max(single[0].low, single[1].low)  # type: ignore[type-var]
    assert path[1].high == min(single[0].high, single[1].high)  # type: ignore[type-var]
    assert path[1].effect == single[1].effect


def test_binary_metrics_go_through_the_same_function():
    a = Moments.of([1.0] * 800 + [0.0] * 200)
    b = Moments.of([1.0] * 880 + [0.0] * 120)
    r = always_valid(a=a, b=b)
    assert r.effect == pytest.approx(0.08)
    se = math.sqrt(0.8 * 0.2 / 999 + 0.88 * 0.12 / 999)
    assert r.se == pytest.approx(se, rel=1e-9)
    assert r.p_value is not None and r.p_value < 0.05
    one_sided = always_valid(a=Moments(50, 50.0, 50.0), b=Moments(50, 45.0, 45.0))
    assert one_sided.reason is None and one_sided.effect == pytest.approx(-0.1)


def test_degenerate_input_says_why_instead_of_raising():
    empty = Moments(0, 0.0, 0.0)
    r = always_valid(a=empty, b=_moments(10, 0.5, 0.1))
    assert (r.effect, r.p_value, r.low, r.reason) == (None, None, None, "too_few_observations")
    one = always_valid(a=Moments(1, 0.4, 0.16), b=_moments(10, 0.5, 0.1))
    assert one.effect == pytest.approx(0.1) and one.reason == "too_few_observations"
    constant = always_valid(a=Moments(5, 5.0, 5.0), b=Moments(3, 3.0, 3.0))
    assert (constant.effect, constant.p_value, constant.reason) == (0.0, None, "zero_variance")
    nan = always_valid(a=Moments(5, math.nan, 1.0), b=_moments(10, 0.5, 0.1))
    assert nan.reason == "non_finite"
    path = always_valid_path(
        looks=[(empty, empty), (_moments(50, 0.5, 0.1), _moments(50, 0.6, 0.1)), (empty, empty)]
    )
    assert path[0].p_value is None and path[0].reason == "too_few_observations"
    assert path[2].p_value == path[1].p_value and path[2].low == path[1].low
    assert path[2].reason == "too_few_observations"
    with pytest.raises(ValueError):
        always_valid(a=empty, b=empty, alpha=1.5)
    with pytest.raises(ValueError):
        always_valid(a=empty, b=empty, tau2=0.0)


def test_the_horizon_tau2_makes_the_interval_tightest_at_the_planned_size():
    n, sd = 4_000, 0.2
    tau2 = tau2_for_horizon(n_per_arm=n, variance=sd * sd)
    a, b = _moments(n, 0.70, sd), _moments(n, 0.71, sd)

    def width(t2: float) -> float:
        r = always_valid(a=a, b=b, tau2=t2)
        assert r.low is not None and r.high is not None
        return r.high - r.low

    assert width(tau2) < width(tau2 * 0.8) and width(tau2) < width(tau2 * 1.25)
    fixed = 2 * 1.959964 * sd * math.sqrt(2 / n)
    assert width(tau2) / fixed == pytest.approx(1.55, abs=0.01)


def test_peeking_at_every_look_keeps_the_false_positive_rate_for_msprt_but_not_for_welch():
    experiments, looks, per_look = 300, 20, 100
    rng = np.random.default_rng(2024)
    x = rng.beta(7, 3, size=(2, experiments, looks, per_look))
    n = per_look * np.arange(1, looks + 1)
    total = x.sum(axis=3).cumsum(axis=2)
    total_sq = (x * x).sum(axis=3).cumsum(axis=2)
    var = (total_sq - total * total / n) / (n - 1)
    se2 = var / n
    t = (total[1] - total[0]) / n / np.sqrt(se2[0] + se2[1])
    df = (se2[0] + se2[1]) ** 2 / (se2[0] ** 2 / (n - 1) + se2[1] ** 2 / (n - 1))
    welch_p = 2 * stats.t.sf(np.abs(t), df)
    naive_fpr = float((welch_p < 0.05).any(axis=1).mean())

    rejected = 0
    for e in range(experiments):
        path = always_valid_path(
            looks=[
                (
                    Moments(int(n[k]), float(total[0, e, k]), float(total_sq[0, e, k])),
                    Moments(int(n[k]), float(total[1, e, k]), float(total_sq[1, e, k])),
                )
                for k in range(looks)
            ]
        )
        p = path[-1].p_value
        assert p is not None
        rejected += p < 0.05
    sequential_fpr = rejected / experiments
    assert sequential_fpr <= 0.05 + 0.02
    assert naive_fpr > 0.10
