"""Two-group comparisons agree with scipy/statsmodels on raw data, and are calibrated."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, TTestIndPower, TTestPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
)

from promptblame.analysis.compare import (
    adjust,
    bootstrap,
    choose_test,
    compare,
    mann_whitney,
    mcnemar,
    paired_t,
    proportions,
    srm,
    t_mde,
    t_power,
    welch,
    wilcoxon,
)
from promptblame.analysis.moments import Moments

REL = 1e-6


def moments(x: np.ndarray) -> Moments:
    return Moments(int(x.size), float(x.sum()), float(np.dot(x, x)))


def sample(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.normal(0.7, 0.2, size=n)
    if kind == "lognormal":
        return rng.lognormal(0.0, 1.0, size=n)
    if kind == "student_t2":
        return rng.standard_t(2, size=n)
    if kind == "ties":
        return rng.integers(1, 6, size=n).astype(float)
    raise AssertionError(kind)


def brute_pair_diffs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sort(np.subtract.outer(b, a).ravel())


def brute_walsh(d: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(d.size)
    return np.sort((d[i] + d[j]) / 2.0)


def order_ci(sorted_values: np.ndarray, sd: float, alpha: float = 0.05) -> tuple[float, float]:
    total = sorted_values.size
    k = math.floor(total / 2 + 0.5 - stats.norm.ppf(1 - alpha / 2) * sd)
    return float(sorted_values[k - 1]), float(sorted_values[total - k])


# ---------------------------------------------------------------------------------------------
# Welch


@pytest.mark.parametrize("n", [20, 200, 2_000, 200_000])
@pytest.mark.parametrize("kind", ["normal", "lognormal", "student_t2", "ties"])
def test_welch_from_sufficient_statistics_matches_scipy_on_the_raw_values(n, kind):
    rng = np.random.default_rng(n)
    a = sample(kind, n, rng)
    b = sample(kind, n + n // 3, rng) * 1.5 + 0.05  # unequal n and variance
    got = welch(a=Moments.of(a.tolist()), b=Moments.of(b.tolist()), alpha=0.1)
    ref = stats.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(confidence_level=0.9)
    assert got.reason is None
    assert got.p_value == pytest.approx(ref.pvalue, rel=REL)
    assert got.statistic == pytest.approx(ref.statistic, rel=REL)
    assert got.df == pytest.approx(ref.df, rel=REL)
    assert (got.ci_low, got.ci_high) == pytest.approx((ci.low, ci.high), rel=REL)
    assert got.effect == pytest.approx(b.mean() - a.mean(), rel=REL)


@pytest.mark.filterwarnings("ignore:Precision loss occurred")  # scipy, on the constant group
def test_welch_with_one_constant_group_still_matches_scipy():
    rng = np.random.default_rng(3)
    a = np.full(40, 0.5)
    b = rng.normal(0.6, 0.1, size=30)
    got = welch(a=moments(a), b=moments(b))
    ref = stats.ttest_ind(b, a, equal_var=False)
    assert got.p_value == pytest.approx(ref.pvalue, rel=REL)
    assert got.df == pytest.approx(29.0, rel=REL)


def test_welch_power_and_mde_equal_statsmodels_when_groups_have_equal_size_and_variance():
    # equal n and equal sample variance: Welch's df and se are exactly the pooled t test's
    n, sd, alpha = 80, 0.3, 0.05
    a = Moments(n, 0.5 * n, n * (0.25 + sd * sd * (n - 1) / n))
    b = Moments(n, 0.55 * n, n * (0.55**2 + sd * sd * (n - 1) / n))
    got = welch(a=a, b=b, alpha=alpha, effect_of_interest=0.1)
    assert got.df == pytest.approx(2 * n - 2)
    ref = TTestIndPower()
    assert got.power == pytest.approx(
        ref.power(effect_size=0.1 / sd, nobs1=n, alpha=alpha, ratio=1.0), rel=REL
    )
    assert got.mde == pytest.approx(
        ref.solve_power(effect_size=None, nobs1=n, alpha=alpha, power=0.8, ratio=1.0) * sd,
        rel=REL,
    )
    assert got.power_effect == 0.1 and "observed_power" not in got.warnings


def test_power_at_the_mde_is_eighty_percent_and_observed_power_is_flagged():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 37), rng.normal(0.2, 2, 91)
    got = welch(a=moments(a), b=moments(b))
    assert got.mde is not None and got.df is not None
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert t_power(effect=got.mde, se=se, df=got.df, alpha=0.05) == pytest.approx(0.8, abs=1e-9)
    assert got.power_effect == got.effect and "observed_power" in got.warnings
    assert "imbalanced_groups" not in got.warnings  # 91/37 < 4


def test_welch_relative_lift_is_the_ratio_of_means_with_a_delta_method_interval():
    rng = np.random.default_rng(9)
    a, b = rng.normal(10, 2, 400), rng.normal(11, 3, 300)
    got = welch(a=moments(a), b=moments(b))
    ratio = b.mean() / a.mean()
    var = (b.var(ddof=1) / b.size + ratio**2 * a.var(ddof=1) / a.size) / a.mean() ** 2
    # Student's t at the same Welch df as the absolute interval (scipy's), not a normal quantile
    df = stats.ttest_ind(b, a, equal_var=False).df
    half = stats.t.ppf(0.975, df) * math.sqrt(var)
    assert got.relative_effect == pytest.approx(ratio - 1, rel=REL)
    assert (got.rel_ci_low, got.rel_ci_high) == pytest.approx(
        (ratio - 1 - half, ratio - 1 + half), rel=REL
    )


@pytest.mark.parametrize(("n_a", "n_b", "seed"), [(40, 40, 3), (12, 90, 4), (2_000, 1_500, 5)])
def test_welch_relative_and_absolute_intervals_match_growthbooks_frequentist_engine(n_a, n_b, seed):
    gb_tests = pytest.importorskip("gbstats.frequentist.tests")  # dev dep, see scripts/setup.sh
    gb_stats = pytest.importorskip("gbstats.models.statistics")
    rng = np.random.default_rng(seed)
    a, b = rng.normal(10, 2, n_a), rng.lognormal(2.4, 0.3, n_b)
    got = welch(a=moments(a), b=moments(b), alpha=0.1)

    def stat(x: np.ndarray):
        return gb_stats.SampleMeanStatistic(
            n=int(x.size), sum=float(x.sum()), sum_squares=float(np.dot(x, x))
        )

    def gb(kind: str):
        config = gb_tests.FrequentistConfig(alpha=0.1, difference_type=kind)
        return gb_tests.TwoSidedTTest(stat(a), stat(b), config).compute_result()

    rel, absolute = gb("relative"), gb("absolute")
    assert got.relative_effect == pytest.approx(rel.expected, rel=REL)
    assert (got.rel_ci_low, got.rel_ci_high) == pytest.approx(tuple(rel.ci), rel=REL)
    assert (got.ci_low, got.ci_high) == pytest.approx(tuple(absolute.ci), rel=REL)
    assert got.p_value == pytest.approx(absolute.p_value, rel=1e-6, abs=1e-12)


def test_welch_with_a_zero_baseline_mean_has_no_relative_effect_and_says_why():
    got = welch(a=Moments.of([-1.0, 1.0, -2.0, 2.0]), b=Moments.of([1.0, 2.0, 3.0]))
    assert got.relative_effect is None and got.rel_ci_low is None
    assert "zero_baseline" in got.warnings and got.p_value is not None


def test_welch_flags_a_baseline_too_close_to_zero_for_a_ratio():
    got = welch(a=Moments.of([-1.0, 1.2, -2.0, 2.1]), b=Moments.of([1.0, 2.0, 3.0]))
    assert "baseline_near_zero" in got.warnings


def test_welch_degenerate_input_returns_reasons_not_exceptions():
    assert welch(a=Moments(0, 0, 0), b=Moments.of([1.0, 2.0])).reason == "no_data"
    one = welch(a=Moments.of([1.0]), b=Moments.of([1.0, 2.0]))
    assert (one.reason, one.effect, one.p_value) == ("too_few_observations", 0.5, None)
    flat = welch(a=Moments.of([0.1] * 50), b=Moments.of([0.3] * 70))
    assert flat.reason == "zero_variance"
    assert flat.effect == pytest.approx(0.2) and flat.p_value is None and flat.ci_low is None
    assert welch(a=Moments(3, math.inf, 1.0), b=Moments.of([1, 2])).reason == "non_finite"


# ---------------------------------------------------------------------------------------------
# Mann-Whitney


@pytest.mark.parametrize("n", [20, 200, 2_000])
@pytest.mark.parametrize("kind", ["lognormal", "student_t2", "ties"])
def test_mann_whitney_matches_scipy_and_brute_force_hodges_lehmann(n, kind):
    rng = np.random.default_rng(n + 1)
    a = sample(kind, n, rng)
    b = sample(kind, n + 7, rng) + (0.3 if kind != "ties" else 1.0)
    got = mann_whitney(a=a, b=b)
    ref = stats.mannwhitneyu(b, a, alternative="two-sided")
    diffs = brute_pair_diffs(a, b)
    sd = math.sqrt(a.size * b.size * (a.size + b.size + 1) / 12)
    assert got.p_value == pytest.approx(ref.pvalue, rel=REL)
    assert got.statistic == pytest.approx(ref.statistic, rel=REL)
    assert got.effect == pytest.approx(np.median(diffs), rel=REL)
    assert (got.ci_low, got.ci_high) == pytest.approx(order_ci(diffs, sd), rel=REL)
    superiority = np.mean(diffs > 0) + 0.5 * np.mean(diffs == 0)
    assert got.prob_superiority == pytest.approx(superiority, rel=REL)
    assert got.effect_kind == "hodges_lehmann_shift"
    assert ("ties" in got.warnings) == (kind == "ties")


def test_mann_whitney_samples_large_groups_with_a_seed_and_says_so():
    rng = np.random.default_rng(11)
    a, b = rng.lognormal(size=3_000), rng.lognormal(size=2_500)
    first = mann_whitney(a=a, b=b, max_n=1_000, seed=1)
    assert (first.n_a, first.n_b) == (1_000, 1_000) and "sampled" in first.warnings
    assert mann_whitney(a=a, b=b, max_n=1_000, seed=1) == first
    assert mann_whitney(a=a, b=b, max_n=1_000, seed=2).p_value != first.p_value
    assert "sampled" not in mann_whitney(a=a, b=b).warnings


def test_mann_whitney_degenerate_input_returns_reasons_not_exceptions():
    assert mann_whitney(a=[], b=[1.0, 2.0]).reason == "no_data"
    assert mann_whitney(a=[1.0], b=[1.0, 2.0]).reason == "too_few_observations"
    flat = mann_whitney(a=[3.0] * 5, b=[3.0] * 8)
    assert (flat.reason, flat.effect, flat.p_value) == ("zero_variance", 0.0, None)
    nan = mann_whitney(a=[1.0, math.nan, 2.0, 3.0], b=[2.0, 3.0, 4.0])
    assert nan.n_a == 3 and "dropped_non_finite" in nan.warnings


# ---------------------------------------------------------------------------------------------
# proportions


@pytest.mark.parametrize("n", [20, 200, 2_000, 200_000])
def test_two_proportion_z_test_and_newcombe_interval_match_statsmodels_and_scipy(n):
    a_success, b_success = int(0.41 * n), int(0.55 * n)
    a_n, b_n = n, n + n // 4
    got = proportions(
        a_success=a_success, a_n=a_n, b_success=b_success, b_n=b_n, alpha=0.1, test="z"
    )
    score = sm_proportion.test_proportions_2indep(
        b_success, b_n, a_success, a_n, method="score", correction=False
    )
    table = [[b_success, b_n - b_success], [a_success, a_n - a_success]]
    chi2 = stats.chi2_contingency(table, correction=False)
    low, high = confint_proportions_2indep(
        b_success, b_n, a_success, a_n, method="newcomb", alpha=0.1
    )
    assert got.test == "two_proportion_z"
    assert got.p_value == pytest.approx(score.pvalue, rel=REL)
    assert got.p_value == pytest.approx(chi2.pvalue, rel=REL)
    assert got.statistic == pytest.approx(score.statistic, rel=REL)
    assert (got.ci_low, got.ci_high) == pytest.approx((low, high), rel=REL)
    assert got.effect == pytest.approx(b_success / b_n - a_success / a_n, rel=REL)


def test_auto_mode_uses_fisher_exact_when_an_expected_cell_count_is_below_five():
    got = proportions(a_success=1, a_n=30, b_success=6, b_n=28)
    odds, p = stats.fisher_exact([[6, 22], [1, 29]])
    assert got.test == "fisher_exact" and "expected cell count" in got.why
    assert got.p_value == pytest.approx(p, rel=REL)
    assert got.statistic == pytest.approx(odds, rel=REL)
    big = proportions(a_success=40, a_n=100, b_success=52, b_n=100)
    assert big.test == "two_proportion_z"
    forced = proportions(a_success=40, a_n=100, b_success=52, b_n=100, test="fisher")
    assert forced.p_value == pytest.approx(stats.fisher_exact([[52, 48], [40, 60]]).pvalue, rel=REL)


def test_newcombe_interval_matches_statsmodels_at_zero_and_full_rates():
    for a_s, a_n, b_s, b_n in [(0, 10, 0, 10), (0, 10, 3, 10), (10, 10, 10, 10), (0, 5, 5, 5)]:
        got = proportions(a_success=a_s, a_n=a_n, b_success=b_s, b_n=b_n, alpha=0.01)
        low, high = confint_proportions_2indep(b_s, b_n, a_s, a_n, method="newcomb", alpha=0.01)
        assert (got.ci_low, got.ci_high) == pytest.approx((low, high), rel=REL, abs=1e-12)


def test_with_no_successes_anywhere_the_difference_interval_is_the_two_wilson_limits():
    got = proportions(a_success=0, a_n=40, b_success=0, b_n=25)
    _, b_high = proportion_confint(0, 25, method="wilson")
    a_low, a_high = proportion_confint(0, 40, method="wilson")
    assert a_low == 0.0
    assert got.ci_high == pytest.approx(math.hypot(b_high, 0.0), rel=REL)
    assert got.ci_low == pytest.approx(-a_high, rel=REL)


def test_risk_ratio_interval_reproduces_the_published_mover_r_wilson_example():
    # Fagerland, Lydersen & Laake (2017) ch. 4, Perondi et al. 2004: 7/34 vs 1/34,
    # MOVER-R Wilson 95% CI for the ratio 7.0: 1.1537 to 41.9763
    got = proportions(a_success=1, a_n=34, b_success=7, b_n=34)
    assert got.relative_effect == pytest.approx(6.0)
    assert got.rel_ci_low == pytest.approx(1.1537 - 1, abs=5e-5)
    assert got.rel_ci_high == pytest.approx(41.9763 - 1, abs=5e-5)


def test_risk_ratio_interval_agrees_with_katz_log_when_counts_are_large():
    got = proportions(a_success=3_000, a_n=20_000, b_success=3_300, b_n=20_000)
    low, high = confint_proportions_2indep(3_300, 20_000, 3_000, 20_000, "log", "ratio")
    assert got.rel_ci_low is not None and got.rel_ci_high is not None
    assert got.rel_ci_low + 1 == pytest.approx(low, rel=1e-3)
    assert got.rel_ci_high + 1 == pytest.approx(high, rel=1e-3)


def test_risk_ratio_interval_stays_sensible_at_full_and_empty_rates():
    full = proportions(a_success=10, a_n=10, b_success=10, b_n=10)
    assert full.rel_ci_low is not None and full.rel_ci_high is not None
    assert full.rel_ci_low < 0 < full.rel_ci_high
    none_in_b = proportions(a_success=3, a_n=10, b_success=0, b_n=10)
    assert none_in_b.relative_effect == -1.0 and none_in_b.rel_ci_low == -1.0
    assert none_in_b.rel_ci_high is not None and none_in_b.rel_ci_high > 0


def test_a_zero_baseline_rate_gives_no_relative_lift_but_still_a_difference():
    got = proportions(a_success=0, a_n=100, b_success=4, b_n=100)
    assert got.relative_effect is None and "zero_baseline" in got.warnings
    assert got.ci_low is not None and got.p_value is not None


def test_proportion_power_matches_statsmodels_cohens_h():
    got = proportions(a_success=300, a_n=1_000, b_success=320, b_n=1_500, effect_of_interest=0.04)
    h = proportion_effectsize(0.34, 0.30)
    ref = NormalIndPower().power(effect_size=h, nobs1=1_000, alpha=0.05, ratio=1.5)
    assert got.power == pytest.approx(ref, rel=REL)
    assert got.mde is not None
    h_mde = proportion_effectsize(0.30 + got.mde, 0.30)
    assert NormalIndPower().power(h_mde, nobs1=1_000, alpha=0.05, ratio=1.5) == pytest.approx(
        0.8, rel=REL
    )


def test_proportions_degenerate_input_returns_reasons_not_exceptions():
    assert proportions(a_success=0, a_n=0, b_success=1, b_n=3).reason == "no_data"
    assert proportions(a_success=5, a_n=3, b_success=1, b_n=3).reason == "invalid_counts"
    assert proportions(a_success=-1, a_n=3, b_success=1, b_n=3).reason == "invalid_counts"
    none = proportions(a_success=0, a_n=50, b_success=0, b_n=50, test="z")
    assert (none.reason, none.effect, none.p_value) == ("zero_variance", 0.0, None)
    auto = proportions(a_success=0, a_n=50, b_success=0, b_n=50)
    assert auto.test == "fisher_exact" and auto.p_value == 1.0


# ---------------------------------------------------------------------------------------------
# paired


@pytest.mark.parametrize("n", [20, 200, 2_000, 200_000])
def test_paired_t_matches_scipy_ttest_rel(n):
    rng = np.random.default_rng(n + 2)
    difficulty = rng.normal(0.6, 0.2, size=n)
    a = difficulty + rng.normal(0, 0.05, size=n)
    b = difficulty + 0.01 + rng.normal(0, 0.05, size=n)
    got = paired_t(a=a, b=b, alpha=0.1)
    ref = stats.ttest_rel(b, a)
    ci = ref.confidence_interval(confidence_level=0.9)
    assert got.p_value == pytest.approx(ref.pvalue, rel=REL)
    assert got.statistic == pytest.approx(ref.statistic, rel=REL)
    assert got.df == ref.df
    assert (got.ci_low, got.ci_high) == pytest.approx((ci.low, ci.high), rel=REL)
    # the relative lift's delta-method interval uses the same t quantile (df = n - 1)
    cov = np.cov(a, b, ddof=1) / n
    ratio = b.mean() / a.mean()
    var = (cov[1, 1] - 2 * ratio * cov[0, 1] + ratio**2 * cov[0, 0]) / a.mean() ** 2
    half = stats.t.ppf(0.95, n - 1) * math.sqrt(var)
    assert (got.rel_ci_low, got.rel_ci_high) == pytest.approx(
        (ratio - 1 - half, ratio - 1 + half), rel=REL
    )


def test_paired_power_and_mde_match_statsmodels_one_sample_t_power():
    rng = np.random.default_rng(4)
    a = rng.normal(0.5, 0.2, 60)
    b = a + rng.normal(0.02, 0.1, 60)
    got = paired_t(a=a, b=b, effect_of_interest=0.03)
    sd = float(np.std(b - a, ddof=1))
    ref = TTestPower()
    assert got.power == pytest.approx(ref.power(0.03 / sd, nobs=60, alpha=0.05), rel=REL)
    assert got.mde == pytest.approx(
        ref.solve_power(effect_size=None, nobs=60, alpha=0.05, power=0.8) * sd, rel=REL
    )


@pytest.mark.parametrize("n", [20, 200, 2_000])
@pytest.mark.parametrize("kind", ["student_t2", "ties"])
def test_wilcoxon_matches_scipy_with_pratt_zeros_and_brute_force_walsh_averages(n, kind):
    rng = np.random.default_rng(n + 3)
    a = sample(kind, n, rng)
    b = a + sample(kind, n, rng) * 0.5 + 0.2
    if kind == "ties":
        b = np.round(b)  # many zero differences
    got = wilcoxon(a=a, b=b)
    ref = stats.wilcoxon(b, a, zero_method="pratt")
    walsh = brute_walsh(b - a)
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    assert got.p_value == pytest.approx(ref.pvalue, rel=REL)
    assert got.statistic == pytest.approx(ref.statistic, rel=REL)
    assert got.effect == pytest.approx(np.median(walsh), rel=REL, abs=1e-12)
    assert (got.ci_low, got.ci_high) == pytest.approx(order_ci(walsh, sd), rel=REL, abs=1e-12)
    assert ("zero_differences" in got.warnings) == bool(np.any(b == a))


def test_exact_mcnemar_matches_statsmodels():
    rng = np.random.default_rng(6)
    a_pass = rng.random(300) < 0.6
    b_pass = np.where(rng.random(300) < 0.85, a_pass, rng.random(300) < 0.75)
    got = mcnemar(a_pass=a_pass.tolist(), b_pass=b_pass.tolist())
    table = [
        [np.sum(a_pass & b_pass), np.sum(a_pass & ~b_pass)],
        [np.sum(~a_pass & b_pass), np.sum(~a_pass & ~b_pass)],
    ]
    ref = sm_mcnemar(table, exact=True)
    assert got.p_value == pytest.approx(ref.pvalue, rel=REL)
    assert got.statistic == ref.statistic
    assert got.effect == pytest.approx(b_pass.mean() - a_pass.mean())


def test_paired_intervals_reproduce_the_published_newcombe_and_mover_examples():
    # Fagerland, Lydersen & Laake (2017) ch. 8, Cavo et al. 2012: 59 both, 6 only B, 16 only A,
    # 80 neither. Newcombe square-and-add: -0.0621 (-0.1186 to -0.0046);
    # MOVER Wilson ratio: 0.8667 (0.7592 to 0.9866).
    cases = [(True, True)] * 59 + [(False, True)] * 6 + [(True, False)] * 16
    cases += [(False, False)] * 80
    got = mcnemar(a_pass=[c[0] for c in cases], b_pass=[c[1] for c in cases])
    assert got.effect == pytest.approx(-0.0621, abs=5e-5)
    assert (got.ci_low, got.ci_high) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    assert got.relative_effect == pytest.approx(0.8667 - 1, abs=5e-5)
    assert (got.rel_ci_low, got.rel_ci_high) == pytest.approx((-0.2408, -0.0134), abs=5e-5)


def test_paired_degenerate_input_returns_reasons_not_exceptions():
    assert paired_t(a=[1.0, 2.0], b=[1.0]).reason == "length_mismatch"
    assert wilcoxon(a=[1.0, 2.0], b=[1.0]).reason == "length_mismatch"
    assert mcnemar(a_pass=[True], b_pass=[]).reason == "length_mismatch"
    assert paired_t(a=[], b=[]).reason == "no_data"
    assert mcnemar(a_pass=[], b_pass=[]).reason == "no_data"
    assert paired_t(a=[1.0], b=[2.0]).reason == "too_few_observations"
    shifted = paired_t(a=[0.1, 0.2, 0.3], b=[0.2, 0.3, 0.4])
    assert shifted.reason == "zero_variance" and shifted.effect == pytest.approx(0.1)
    assert wilcoxon(a=[1.0, 2.0, 3.0], b=[1.0, 2.0, 3.0]).reason == "zero_variance"
    same = mcnemar(a_pass=[True, False, True], b_pass=[True, False, True])
    assert same.p_value == 1.0 and "no_discordant_pairs" in same.warnings
    dropped = paired_t(a=[1.0, math.nan, 2.0, 4.0], b=[1.5, 2.0, 2.2, 4.9])
    assert dropped.n_a == 3 and "dropped_non_finite" in dropped.warnings


# ---------------------------------------------------------------------------------------------
# bootstrap


def test_bootstrap_p95_interval_is_scipys_seeded_percentile_bootstrap():
    rng = np.random.default_rng(8)
    a, b = rng.lognormal(0, 1, 1_100), rng.lognormal(0.6, 1, 900)  # < 2M values: one batch
    got = bootstrap(a=a, b=b, statistic="p95", n_resamples=1000, seed=3)
    ref = stats.bootstrap(
        (a, b),
        lambda x, y, axis=-1: np.percentile(y, 95, axis=axis) - np.percentile(x, 95, axis=axis),
        n_resamples=1000,
        method="percentile",
        rng=np.random.default_rng(3),
    )
    assert got.effect == pytest.approx(np.percentile(b, 95) - np.percentile(a, 95), rel=REL)
    assert got.ci_low == pytest.approx(ref.confidence_interval.low, rel=REL)
    assert got.ci_high == pytest.approx(ref.confidence_interval.high, rel=REL)
    assert got.p_value is None and got.significant is True
    assert got.rel_ci_low is not None and got.rel_ci_low > 0


def test_bootstrap_accepts_a_callable_and_warns_about_thin_tails():
    rng = np.random.default_rng(10)
    a, b = rng.normal(1, 1, 60), rng.normal(1, 1, 60)

    def trimmed_mean(x: np.ndarray) -> float:
        return float(stats.trim_mean(x, 0.1))

    got = bootstrap(a=a, b=b, statistic=trimmed_mean, n_resamples=300)
    assert got.effect_kind == "difference_in_trimmed_mean" and got.ci_low is not None
    assert got.ci_low < got.effect < got.ci_high  # type: ignore[operator]
    assert "few_tail_observations" in bootstrap(a=a, b=b, statistic="p99").warnings
    capped = bootstrap(a=rng.normal(size=500), b=rng.normal(size=300), max_n=200, n_resamples=200)
    assert (capped.n_a, capped.n_b) == (200, 200) and "sampled" in capped.warnings


def test_bootstrap_degenerate_input_returns_reasons_not_exceptions():
    assert bootstrap(a=[], b=[1.0, 2.0]).reason == "no_data"
    assert bootstrap(a=[1.0], b=[1.0, 2.0]).reason == "too_few_observations"
    assert bootstrap(a=[2.0] * 10, b=[2.0] * 10).reason == "zero_variance"
    zero = bootstrap(a=[0.0] * 30 + [1.0], b=[0.0] * 20 + [1.0] * 11, statistic="median")
    assert zero.relative_effect is None and "zero_baseline" in zero.warnings
    with pytest.raises(ValueError, match="unknown statistic"):
        bootstrap(a=[1.0, 2.0], b=[1.0, 2.0], statistic="p150")


# ---------------------------------------------------------------------------------------------
# choosing a test


def test_choose_test_keeps_welch_for_well_behaved_metrics_and_switches_for_heavy_tails():
    rng = np.random.default_rng(12)
    assert choose_test(a=rng.normal(size=200), b=rng.normal(size=200))[0] == "welch_t"
    test, why = choose_test(a=rng.lognormal(size=500), b=rng.lognormal(size=500))
    assert test == "mann_whitney_u" and "kurtosis" in why
    test, why = choose_test(a=rng.exponential(size=40), b=rng.exponential(size=40))
    assert test == "mann_whitney_u" and "Cochran" in why
    assert choose_test(a=rng.exponential(size=400), b=rng.exponential(size=400))[0] == "welch_t"
    assert choose_test(a=[0, 1, 1, 0], b=[1, 1, 1, 0])[0] == "proportions"
    assert choose_test(a=Moments(10, 5.0, 3.0), b=rng.lognormal(size=50))[0] == "welch_t"


def test_compare_runs_the_chosen_test_and_records_why():
    rng = np.random.default_rng(13)
    a, b = rng.normal(0.6, 0.1, 300), rng.normal(0.62, 0.1, 300)
    got = compare(a=a, b=b)
    assert got.test == "welch_t" and got.why.startswith("auto:")
    assert got.p_value == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue, rel=REL)
    heavy = compare(a=rng.lognormal(size=300), b=rng.lognormal(size=300))
    assert heavy.test == "mann_whitney_u" and heavy.why.startswith("auto:")
    assert "heavy_tails" in heavy.warnings
    a01, b01 = rng.random(500) < 0.3, rng.random(500) < 0.4
    binary = compare(a=a01.astype(np.float64), b=b01.astype(np.float64))
    assert binary.test == "two_proportion_z" and binary.estimate_a is not None


# ---------------------------------------------------------------------------------------------
# sample ratio mismatch and multiplicity


def test_srm_matches_scipy_chisquare_and_flags_a_broken_split():
    observed = {"a": 5_000, "b": 5_400, "c": 10_150}
    expected = {"a": 1, "b": 1, "c": 2}
    got = srm(observed=observed, expected=expected)
    total = sum(observed.values())
    ref = stats.chisquare([5_000, 5_400, 10_150], [total / 4, total / 4, total / 2])
    assert got.statistic == pytest.approx(ref.statistic, rel=REL)
    assert got.p_value == pytest.approx(ref.pvalue, rel=REL)
    assert got.mismatch is True
    assert [arm.expected_share for arm in got.arms] == [0.25, 0.25, 0.5]
    fine = srm(observed={"a": 5_010, "b": 4_990}, expected={"a": 0.5, "b": 0.5})
    assert fine.mismatch is False and fine.arms[0].observed_share == pytest.approx(0.501)


def test_srm_degenerate_input_returns_reasons_not_exceptions():
    assert srm(observed={"a": 1}, expected={"b": 1.0}).reason == "arms_differ"
    assert srm(observed={"a": 1}, expected={"a": 1.0}).reason == "too_few_arms"
    assert srm(observed={"a": 0, "b": 0}, expected={"a": 1, "b": 1}).reason == "no_data"
    assert srm(observed={"a": 3, "b": 4}, expected={"a": 0, "b": 1}).reason == "invalid_expected"
    assert srm(observed={"a": -3, "b": 4}, expected={"a": 1, "b": 1}).reason == "invalid_counts"


@pytest.mark.parametrize(("method", "sm_method"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjusted_p_values_match_statsmodels_multipletests(method, sm_method):
    p = [0.01, 0.04, 0.03, 0.2, 0.001, 0.5]
    assert adjust(p, method=method) == pytest.approx(multipletests(p, method=sm_method)[1], rel=REL)
    with_nan = adjust([0.01, math.nan, 0.04], method=method)
    assert math.isnan(with_nan[1])
    assert [with_nan[0], with_nan[2]] == pytest.approx(
        multipletests([0.01, 0.04], method=sm_method)[1], rel=REL
    )
    assert adjust([], method=method) == []


def test_an_alpha_outside_zero_and_one_is_a_programming_error():
    with pytest.raises(ValueError, match="alpha"):
        welch(a=Moments.of([1.0, 2.0]), b=Moments.of([1.0, 2.0]), alpha=1.5)


# ---------------------------------------------------------------------------------------------
# calibration on synthetic data with known truth

SIMS = 2_000


def row_moments(x: np.ndarray) -> list[Moments]:
    sums, squares = x.sum(axis=1), np.einsum("ij,ij->i", x, x)
    return [Moments(x.shape[1], float(s), float(q)) for s, q in zip(sums, squares, strict=True)]


def test_welch_rejects_about_five_percent_of_a_a_comparisons():
    rng = np.random.default_rng(100)
    a = row_moments(rng.normal(0.7, 0.1, size=(SIMS, 40)))
    b = row_moments(rng.normal(0.7, 0.25, size=(SIMS, 90)))  # unequal variance and n
    rejected = sum(bool(welch(a=x, b=y).significant) for x, y in zip(a, b, strict=True))
    assert 0.04 <= rejected / SIMS <= 0.06


def test_welch_intervals_cover_the_true_difference_and_lift_about_95_percent():
    rng = np.random.default_rng(101)
    a = row_moments(rng.normal(10.0, 2.0, size=(SIMS, 50)))
    b = row_moments(rng.normal(10.5, 3.0, size=(SIMS, 70)))
    covered = lift_covered = 0
    for x, y in zip(a, b, strict=True):
        got = welch(a=x, b=y)
        assert got.ci_low is not None and got.ci_high is not None
        assert got.rel_ci_low is not None and got.rel_ci_high is not None
        covered += got.ci_low <= 0.5 <= got.ci_high
        lift_covered += got.rel_ci_low <= 0.05 <= got.rel_ci_high
    assert abs(covered / SIMS - 0.95) <= 0.015
    assert abs(lift_covered / SIMS - 0.95) <= 0.015


def test_z_test_rejects_about_five_percent_of_a_a_comparisons():
    rng = np.random.default_rng(102)
    a = rng.binomial(500, 0.3, size=SIMS)
    b = rng.binomial(600, 0.3, size=SIMS)
    rejected = 0
    for x, y in zip(a, b, strict=True):
        got = proportions(a_success=int(x), a_n=500, b_success=int(y), b_n=600)
        assert got.test == "two_proportion_z"
        rejected += bool(got.significant)
    assert 0.04 <= rejected / SIMS <= 0.06


def test_proportion_intervals_cover_the_true_difference_and_lift_about_95_percent():
    rng = np.random.default_rng(103)
    a = rng.binomial(400, 0.30, size=SIMS)
    b = rng.binomial(400, 0.36, size=SIMS)
    covered = lift_covered = 0
    for x, y in zip(a, b, strict=True):
        got = proportions(a_success=int(x), a_n=400, b_success=int(y), b_n=400)
        assert got.ci_low is not None and got.ci_high is not None
        assert got.rel_ci_low is not None and got.rel_ci_high is not None
        covered += got.ci_low <= 0.06 <= got.ci_high
        lift_covered += got.rel_ci_low <= 0.2 <= got.rel_ci_high
    assert abs(covered / SIMS - 0.95) <= 0.015
    assert abs(lift_covered / SIMS - 0.95) <= 0.015


def test_real_effects_get_small_p_values():
    rng = np.random.default_rng(104)
    a, b = rng.normal(0.60, 0.2, 2_000), rng.normal(0.65, 0.2, 2_000)
    assert welch(a=moments(a), b=moments(b)).p_value < 1e-6  # type: ignore[operator]
    z = proportions(a_success=1_500, a_n=5_000, b_success=1_800, b_n=5_000)
    assert z.p_value < 1e-6  # type: ignore[operator]
    slow = mann_whitney(a=rng.lognormal(0, 1, 2_000), b=rng.lognormal(0.3, 1, 2_000))
    assert slow.p_value < 1e-6 and slow.ci_low > 0  # type: ignore[operator]
    paired = paired_t(a=a, b=a + rng.normal(0.01, 0.05, 2_000))
    assert paired.p_value < 1e-6  # type: ignore[operator]


def test_t_power_and_mde_at_tiny_df_where_scipy_far_tail_is_nan():
    # nctdtr(1.5, 20, -crit) is NaN in scipy; the far tail is below 1e-16 there, the power
    # finite and the MDE solvable (a Welch test on a thin cell reached this and crashed)
    from scipy import special

    crit = float(special.stdtrit(1.5, 0.975))
    assert math.isnan(float(special.nctdtr(1.5, 20.0, -crit)))
    p = t_power(effect=20.0, se=1.0, df=1.5, alpha=0.05)
    assert 0.99 < p <= 1.0
    assert t_power(effect=-20.0, se=1.0, df=1.5, alpha=0.05) == p
    mde = t_mde(se=1.0, df=1.5, alpha=0.05)
    assert math.isfinite(mde)
    assert t_power(effect=mde, se=1.0, df=1.5, alpha=0.05) == pytest.approx(0.8, abs=1e-6)
