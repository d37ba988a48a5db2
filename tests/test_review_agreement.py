"""Agreement coefficients against published examples, hand computation and reference libraries
(scikit-learn, scipy), degenerate label sets included, and on seeded synthetic raters whose true
agreement is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from promptblame.review.agreement import Agreement, Coefficient, alpha, measure


def pairs_from_table(
    table: list[list[int]], levels: list[float]
) -> tuple[list[float], list[float]]:
    a, b = [], []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            a += [levels[i]] * count
            b += [levels[j]] * count
    return a, b


def coef(ag: Agreement, name: str) -> Coefficient:
    return next(c for c in ag.coefficients if c.name == name)


def test_cohens_kappa_matches_the_textbook_example_and_its_standard_error_by_hand():
    # 50 items; both yes 20, A yes/B no 5, A no/B yes 10, both no 15: po 0.7, pe 0.5, kappa 0.4
    a, b = pairs_from_table([[20, 5], [10, 15]], [1.0, 0.0])
    ag = measure(a, b, level="categorical", levels=[0.0, 1.0])
    k = coef(ag, "kappa")
    assert ag.n == 50 and ag.percent_agreement == pytest.approx(0.7)
    assert k.value == pytest.approx(0.4)
    assert k.value == pytest.approx(cohen_kappa_score(a, b))
    # Fleiss, Cohen & Everitt (1969) large-sample variance, computed by hand
    p = np.array([[20, 5], [10, 15]]) / 50
    r, c = p.sum(1), p.sum(0)
    pe, kappa = r @ c, 0.4
    diag = sum(p[i, i] * (1 - (r[i] + c[i]) * (1 - kappa)) ** 2 for i in range(2))
    off = (1 - kappa) ** 2 * (p[0, 1] * (c[0] + r[1]) ** 2 + p[1, 0] * (c[1] + r[0]) ** 2)
    se = math.sqrt((diag + off - (kappa - pe * (1 - kappa)) ** 2) / (50 * (1 - pe) ** 2))
    assert k.ci_low == pytest.approx(0.4 - 1.959964 * se, abs=1e-5)
    assert k.ci_high == pytest.approx(0.4 + 1.959964 * se, abs=1e-5)


def test_weighted_kappa_of_a_scale_equals_scikit_learns_quadratic_kappa():
    rng = np.random.default_rng(5)
    a = rng.integers(1, 6, 80).astype(float)
    b = np.clip(a + rng.integers(-1, 2, 80), 1, 5)
    ag = measure(a.tolist(), b.tolist(), level="ordinal", levels=[1, 2, 3, 4, 5])
    assert coef(ag, "weighted_kappa").value == pytest.approx(
        cohen_kappa_score(a, b, weights="quadratic")
    )
    assert ag.primary is not None and ag.primary.name == "weighted_kappa"
    w = coef(ag, "krippendorff_alpha")
    assert w.value is not None and w.ci_low is not None and w.ci_high is not None
    assert w.ci_low < w.value < w.ci_high


def test_krippendorffs_alpha_reproduces_krippendorffs_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", example C: 4 observers,
    # 12 units, missing values; alpha nominal 0.743, ordinal 0.815, interval 0.849
    observers: list[list[float | None]] = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[v for o in observers if (v := o[u]) is not None] for u in range(12)]
    assert alpha(units, level="categorical").value == pytest.approx(0.743, abs=5e-4)
    assert alpha(units, level="ordinal").value == pytest.approx(0.815, abs=5e-4)
    assert alpha(units, level="continuous").value == pytest.approx(0.849, abs=5e-4)


def test_continuous_agreement_is_scipys_pearson_r_and_the_mean_difference():
    rng = np.random.default_rng(11)
    human = rng.normal(3, 1, 60)
    judge = 0.8 * human + rng.normal(0.5, 0.5, 60)
    ag = measure(human.tolist(), judge.tolist(), level="continuous")
    r = coef(ag, "pearson_r")
    ref = stats.pearsonr(human, judge)
    ci = ref.confidence_interval(0.95)
    assert (r.value, r.ci_low, r.ci_high) == pytest.approx((ref.statistic, ci.low, ci.high))
    bias = coef(ag, "mean_bias")
    diff = judge - human
    half = stats.t.ppf(0.975, 59) * diff.std(ddof=1) / math.sqrt(60)
    assert (bias.value, bias.ci_low, bias.ci_high) == pytest.approx(
        (diff.mean(), diff.mean() - half, diff.mean() + half)
    )


def test_a_judges_numbers_against_pass_fail_labels_are_measured_as_continuous():
    ag = measure([1, 0, 1, 1, 0], [0.9, 0.2, 0.7, 0.8, 0.4], level="categorical", levels=[0, 1])
    assert ag.level == "continuous" and ag.primary is not None and ag.primary.name == "pearson_r"


def test_all_one_class_gives_no_kappa_and_says_why():
    ag = measure([1.0] * 12, [1.0] * 12, level="categorical", levels=[0.0, 1.0])
    k = coef(ag, "kappa")
    assert ag.percent_agreement == 1.0 and k.value is None and k.reason == "no_variation"
    with pytest.warns(UserWarning):  # the reference library agrees: undefined
        assert math.isnan(cohen_kappa_score([1] * 12, [1] * 12))
    assert alpha([[1.0, 1.0]] * 5, level="categorical").reason == "no_variation"
    # one rater constant, the other not: kappa is 0 (no better than chance), as sklearn says
    one = measure([1, 0, 1, 0], [1, 1, 1, 1], level="categorical", levels=[0, 1])
    assert coef(one, "kappa").value == pytest.approx(cohen_kappa_score([1, 0, 1, 0], [1] * 4))
    flat = measure([1, 2, 3, 4], [2, 2, 2, 2], level="continuous")
    assert (
        coef(flat, "pearson_r").value is None and coef(flat, "pearson_r").reason == "no_variation"
    )
    assert measure([1.0], [1.0], level="categorical").reason == "too_few_pairs"


def test_seeded_raters_recover_their_known_agreement_and_no_skill_reads_near_zero():
    """A rater copying the truth with probability q and otherwise guessing from the same
    balanced marginals has kappa = q in expectation; q = 0 (no skill) gives kappa ≈ 0."""
    rng = np.random.default_rng(2026)
    n = 4000
    truth = rng.integers(0, 2, n).astype(float)
    for q in (0.0, 0.5, 0.8):
        copy = rng.random(n) < q
        rater = np.where(copy, truth, rng.integers(0, 2, n)).astype(float)
        k = coef(
            measure(truth.tolist(), rater.tolist(), level="categorical", levels=[0, 1]), "kappa"
        )
        assert k.value == pytest.approx(q, abs=0.04)
        assert k.ci_low is not None and k.ci_high is not None
        assert k.ci_low <= q + 0.01 and q - 0.01 <= k.ci_high
