"""Mean CI from sufficient statistics equals scipy's t-interval on the raw values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from promptblame.analysis.summary import mean_ci


@pytest.mark.parametrize("n", [2, 5, 30, 1000])
def test_the_interval_matches_scipy_on_raw_values(n):
    rng = np.random.default_rng(n)
    x = rng.beta(2, 5, size=n)
    ci = mean_ci(n=n, total=float(x.sum()), total_sq=float((x * x).sum()))
    lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
    assert ci.mean == pytest.approx(x.mean())
    assert (ci.low, ci.high) == pytest.approx((lo, hi), rel=1e-9)


def test_the_95_percent_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(2000):
        x = rng.normal(0.7, 0.2, size=20)
        ci = mean_ci(n=20, total=float(x.sum()), total_sq=float((x * x).sum()))
        assert ci.low is not None and ci.high is not None
        covered += ci.low <= 0.7 <= ci.high
    assert 0.935 <= covered / 2000 <= 0.965


def test_degenerate_input_says_why_instead_of_raising():
    assert mean_ci(n=0, total=0, total_sq=0).reason == "no_data"
    one = mean_ci(n=1, total=0.4, total_sq=0.16)
    assert (one.mean, one.low, one.reason) == (0.4, None, "single_observation")
    constant = mean_ci(n=3, total=3.0, total_sq=3.0)
    assert (constant.low, constant.high) == (1.0, 1.0)
