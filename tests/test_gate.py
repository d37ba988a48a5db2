"""The CI gate's statistics on synthetic eval runs with known ground truth, and against
scipy/statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from promptblame.analysis.gate import PERMUTATION_SEED, PERMUTATIONS, MetricCases, gate

IDS = [f"case-{i:03d}" for i in range(300)]


def pass_fail(baseline: np.ndarray, candidate: np.ndarray, ids=IDS, **kw) -> MetricCases:
    return MetricCases(
        metric="correct",
        source="app",
        baseline=dict(zip(ids, baseline.tolist(), strict=True)),
        candidate=dict(zip(ids, candidate.tolist(), strict=True)),
        **kw,
    )


def scores(baseline: np.ndarray, candidate: np.ndarray, name: str = "f1", **kw) -> MetricCases:
    return MetricCases(
        metric=name,
        source="e",
        baseline=dict(zip(IDS, baseline.tolist(), strict=True)),
        candidate=dict(zip(IDS, candidate.tolist(), strict=True)),
        **kw,
    )


def stable_eval(seed: int, n: int = 300) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < 0.85).astype(float)


def test_a_candidate_that_breaks_12_of_300_cases_fails_and_names_exactly_those_12():
    base = stable_eval(1)
    broken = np.flatnonzero(base == 1)[[3, 17, 40, 41, 77, 90, 120, 150, 151, 200, 230, 249]]
    cand = base.copy()
    cand[broken] = 0
    result = gate([pass_fail(base, cand)])
    m = result.metrics[0]
    assert result.verdict == "fail" and m.verdict == "fail"
    assert m.test == "mcnemar_exact" and m.kind == "pass_fail"
    assert sorted(c.case_id for c in m.regressed) == sorted(IDS[i] for i in broken)
    assert all(c.baseline == 1.0 and c.candidate == 0.0 for c in m.regressed)
    assert m.improved == ()
    assert m.effect == pytest.approx(-12 / 300)
    assert "12 cases regressed" in m.why


def test_a_two_case_wobble_on_300_stable_cases_passes_but_is_still_listed():
    base = stable_eval(2)
    cand = base.copy()
    cand[np.flatnonzero(base == 1)[:2]] = 0
    m = gate([pass_fail(base, cand)]).metrics[0]
    assert m.verdict == "pass"
    assert len(m.regressed) == 2
    assert m.worst_plausible_drop is not None and m.worst_plausible_drop <= 0.02


def test_a_candidate_equal_to_the_baseline_passes_in_at_least_95_percent_of_200_seeded_runs():
    """Equal candidate, a near-deterministic eval: each case's outcome flips with probability
    0.2% on a rerun (about one flipped case per 300-case run, either way)."""
    verdicts = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        base = (rng.random(300) < 0.85).astype(float)
        cand = np.where(rng.random(300) < 0.002, 1 - base, base)
        verdicts.append(gate([pass_fail(base, cand)]).verdict)
    assert verdicts.count("pass") >= 190
    assert verdicts.count("fail") == 0


def test_flaky_evals_of_an_equal_candidate_rarely_fail_they_come_out_inconclusive():
    """10% of cases flaky (pass probability 0.2-0.8): an equal candidate cannot be shown to be
    within 0.02, so the gate says inconclusive — but false fails stay under alpha."""
    verdicts = []
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        p = np.where(rng.random(300) < 0.85, 0.995, 0.005)
        flaky = rng.random(300) < 0.1
        p[flaky] = rng.uniform(0.2, 0.8, flaky.sum())
        base = (rng.random(300) < p).astype(float)
        cand = (rng.random(300) < p).astype(float)
        verdicts.append(gate([pass_fail(base, cand)]).verdict)
    assert verdicts.count("fail") <= 10
    assert verdicts.count("inconclusive") > verdicts.count("fail")


def test_a_tiny_eval_is_inconclusive_and_the_size_it_names_would_decide():
    ids = IDS[:10]
    base = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 1], dtype=float)
    m = gate([pass_fail(base, base.copy(), ids=ids)]).metrics[0]
    assert m.verdict == "inconclusive"
    assert m.cases_needed is not None and m.cases_needed > 10
    assert f"about {m.cases_needed} cases" in m.why

    # the same per-case behaviour (80% pass, unchanged) at the named size passes; fewer do not
    def equal_eval(size: int) -> MetricCases:
        outcome = (np.arange(size) < round(0.8 * size)).astype(float)
        return pass_fail(outcome, outcome.copy(), ids=[f"c{i}" for i in range(size)])

    assert gate([equal_eval(m.cases_needed)]).verdict == "pass"
    assert gate([equal_eval(m.cases_needed - 5)]).verdict == "inconclusive"


def test_a_significant_drop_within_the_allowed_drop_passes_a_larger_one_fails():
    rng = np.random.default_rng(5)
    base = rng.normal(0.8, 0.1, 300)
    small = base - 0.01 + rng.normal(0, 0.01, 300)
    large = base - 0.05 + rng.normal(0, 0.01, 300)
    for cand, verdict in ((small, "pass"), (large, "fail")):
        m = gate([scores(base, cand)]).metrics[0]
        assert m.p_value is not None and m.p_value < 1e-6
        assert m.verdict == verdict, m.why


def test_a_score_metric_names_the_cases_that_dropped_far_beyond_the_eval_wobble():
    rng = np.random.default_rng(9)
    base = np.clip(rng.normal(0.75, 0.15, 300), 0, 1)
    cand = np.clip(base + rng.normal(0, 0.01, 300), 0, 1)
    hit = rng.choice(300, 12, replace=False)
    cand[hit] = np.maximum(base[hit] - 0.6, 0.0)
    m = gate([scores(base, cand)]).metrics[0]
    assert {c.case_id for c in m.regressed} == {IDS[i] for i in hit}
    assert m.verdict == "fail", m.why


def test_results_match_statsmodels_and_scipy_paired_tests():
    rng = np.random.default_rng(11)
    base = stable_eval(11)
    cand = np.where(rng.random(300) < 0.06, 1 - base, base)
    m = gate([pass_fail(base, cand)], alpha=0.05).metrics[0]
    a, b = base == 1, cand == 1
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert m.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)

    x = rng.normal(0.7, 0.1, 300)
    y = x + rng.normal(-0.01, 0.05, 300)
    s = gate([scores(x, y)]).metrics[0]
    ref = stats.ttest_rel(y, x)
    ci = ref.confidence_interval(0.95)
    assert s.test == "paired_t"
    assert s.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert (s.ci_low, s.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    one_sided = stats.ttest_rel(y, x, alternative="greater").confidence_interval(0.95)
    assert s.worst_plausible_drop == pytest.approx(-one_sided.low, rel=1e-9)

    skewed_y = x.copy()
    skewed_y[:6] -= 0.5  # a few big drops: skewed changes, the rank test decides
    skewed_y += rng.normal(0, 0.002, 300)
    w = gate([scores(x, skewed_y)]).metrics[0]
    assert w.test == "paired_permutation"
    ref_perm = stats.permutation_test(
        (skewed_y - x,),
        np.mean,
        permutation_type="samples",
        n_resamples=PERMUTATIONS,
        rng=np.random.default_rng(PERMUTATION_SEED),
    )
    assert w.p_value == pytest.approx(ref_perm.pvalue, rel=1e-12)
    assert w.p_value is not None
    assert w.p_value < 0.05  # six big drops move the mean; a rank test would barely notice
    assert stats.wilcoxon(skewed_y - x, zero_method="pratt").pvalue > 0.05


def test_p_values_are_holm_corrected_across_the_gated_metrics():
    rng = np.random.default_rng(12)
    metrics = []
    for k, shift in enumerate((0.0, -0.01, -0.03)):
        x = rng.normal(0.7, 0.1, 300)
        y = x + shift + rng.normal(0, 0.08, 300)
        metrics.append(scores(x, y, name=f"m{k}"))
    result = gate(metrics)
    raw = [m.p_value for m in result.metrics]
    expected = multipletests(raw, method="holm")[1]
    assert [m.p_holm for m in result.metrics] == pytest.approx(list(expected), rel=1e-12)


def test_lower_is_better_metrics_regress_when_they_rise():
    rng = np.random.default_rng(13)
    x = rng.lognormal(6, 0.2, 300)
    m = gate(
        [
            MetricCases(
                metric="response.latency_ms",
                source="",
                baseline=dict(zip(IDS, x, strict=False)),
                candidate=dict(zip(IDS, x * 1.3, strict=False)),
                higher_is_better=False,
            )
        ],
        max_drop=20.0,
    ).metrics[0]
    assert m.verdict == "fail" and m.effect is not None and m.effect > 0
    assert "higher by" in m.why
    assert len(m.regressed) > 250 and m.improved == ()


def test_cases_on_one_side_only_are_listed_not_silently_dropped():
    base = stable_eval(14)
    m = gate(
        [
            MetricCases(
                metric="correct",
                source="app",
                baseline=dict(zip(IDS[:298], base[:298], strict=False)),
                candidate=dict(zip(IDS[2:], base[2:], strict=False)),
            )
        ]
    ).metrics[0]
    assert m.cases == 296
    assert m.only_baseline == (IDS[0], IDS[1]) and m.only_candidate == (IDS[298], IDS[299])


def test_one_failing_metric_fails_the_gate_and_an_unscored_one_is_inconclusive():
    base = stable_eval(15)
    cand = base.copy()
    cand[np.flatnonzero(base == 1)[:20]] = 0
    result = gate(
        [pass_fail(base, cand), MetricCases(metric="tone", source="e", baseline={}, candidate={})]
    )
    assert result.verdict == "fail"
    assert [m.verdict for m in result.metrics] == ["fail", "inconclusive"]
    assert result.metrics[1].warnings == ("no_data",)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        gate([], alpha=0.7)
    with pytest.raises(ValueError, match="max_drop"):
        gate([pass_fail(stable_eval(1), stable_eval(1))], max_drop=-1)
