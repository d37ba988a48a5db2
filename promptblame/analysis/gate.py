"""The CI gate: is a candidate version's eval run worse than the baseline's, case by case?

Pure: takes each metric's per-case values under both versions, returns verdicts. Every value is
oriented so that higher is better before testing (lower-is-better metrics are negated, or
flipped for pass/fail), so a "drop" always means "worse".

Rule per metric (effect e = candidate − baseline, oriented; allowed drop m ≥ 0):
- fail: the paired test is significant after Holm across the gated metrics AND e < −m —
  a real regression, and bigger than the team agreed to tolerate;
- pass: otherwise, if the eval rules out a drop bigger than m: the one-sided 1 − alpha lower
  confidence bound of e is ≥ −m (a non-inferiority test at alpha);
- inconclusive: neither — too few cases (or too flaky ones) to tell; `cases_needed` says how
  many cases, at the same per-case behaviour, would decide it.
A 2-case wobble on 300 stable cases passes; the same wobble on 10 cases is inconclusive.

Tests: pass/fail metrics → exact McNemar with Newcombe's paired interval; scores → paired t,
or, when the per-case changes are too skewed for the t approximation (Cochran's rule, heavy
tails), a sign-flip permutation test of the mean change. Not Wilcoxon: its estimand is the
median change, and "12 cases broke badly, 288 did not move" leaves that median at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import stats

from promptblame.analysis import compare as cmp

Verdict = Literal["pass", "fail", "inconclusive"]
MAX_CASES_NEEDED = 1_000_000  # beyond this, "no realistic eval size decides it"
PERMUTATIONS = 9_999  # sign flips for skewed score changes: p-value resolution 1e-4
PERMUTATION_SEED = 20261124  # the same run always gets the same verdict


@dataclass(frozen=True, kw_only=True)
class MetricCases:
    """One gated metric: the value of each eval case under each version (a case's mean when it
    ran several times)."""

    metric: str
    source: str
    baseline: Mapping[str, float]
    candidate: Mapping[str, float]
    higher_is_better: bool = True


@dataclass(frozen=True, kw_only=True)
class CaseChange:
    case_id: str
    baseline: float
    candidate: float
    change: float
    """candidate − baseline, in the metric's own units (negative = lower)."""


@dataclass(frozen=True, kw_only=True)
class MetricVerdict:
    metric: str
    source: str
    kind: Literal["pass_fail", "score"]
    higher_is_better: bool
    verdict: Verdict
    why: str
    """One sentence a reviewer can act on."""
    test: str
    test_why: str
    cases: int
    """Cases with a value under both versions (the pairs tested)."""
    only_baseline: tuple[str, ...]
    """Cases scored under the baseline but not the candidate: listed, never silently dropped."""
    only_candidate: tuple[str, ...]
    baseline_mean: float | None
    candidate_mean: float | None
    effect: float | None
    """candidate − baseline mean (pass-rate difference for pass/fail), in the metric's units."""
    ci_low: float | None
    ci_high: float | None
    """Two-sided 1 − alpha confidence interval of `effect`."""
    worst_plausible_drop: float | None
    """The one-sided 1 − alpha bound on how much worse the candidate may be (≥ 0 = a drop);
    pass needs it ≤ max_drop."""
    p_value: float | None
    p_holm: float | None
    max_drop: float
    cases_needed: int | None
    """Inconclusive only: the eval size that would decide, at this run's per-case behaviour."""
    regressed: tuple[CaseChange, ...]
    improved: tuple[CaseChange, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class GateResult:
    verdict: Verdict
    alpha: float
    metrics: tuple[MetricVerdict, ...]


def _oriented(values: np.ndarray, *, binary: bool, higher_is_better: bool) -> np.ndarray:
    if higher_is_better:
        return values
    return 1.0 - values if binary else -values


@dataclass(frozen=True)
class _Tested:
    kind: Literal["pass_fail", "score"]
    test: str
    test_why: str
    effect: float  # oriented
    ci: tuple[float, float] | None  # oriented, two-sided 1 − alpha
    bound: float | None  # oriented one-sided lower bound
    p_value: float | None
    warnings: tuple[str, ...]
    needed: Callable[[bool], int | None]  # (detect_drop) → cases needed


def _test_pass_fail(x: np.ndarray, y: np.ndarray, alpha: float, max_drop: float) -> _Tested:
    a, b = x == 1.0, y == 1.0
    n = x.size
    counts = np.array(
        [
            np.count_nonzero(a & b),
            np.count_nonzero(a & ~b),
            np.count_nonzero(~a & b),
            np.count_nonzero(~a & ~b),
        ]
    )

    def at(size: int, level: float) -> cmp.Comparison:
        """The test on `size` cases with this run's shares of each outcome pair."""
        c = counts if size == n else np.rint(counts * size / n).astype(int)
        return cmp.mcnemar_counts(
            both=int(c[0]), only_a=int(c[1]), only_b=int(c[2]), neither=int(c[3]), alpha=level
        )

    def needed(detect: bool) -> int | None:
        if detect:  # the drop is big enough: how many cases make it significant
            return _smallest(n, lambda s: (at(s, alpha).p_value or 1.0) < alpha)
        return _smallest(n, lambda s: (at(s, 2 * alpha).ci_low or -1.0) >= -max_drop)

    res = at(n, alpha)
    return _Tested(
        kind="pass_fail",
        test=res.test,
        test_why=res.why,
        effect=float(res.effect or 0.0),
        ci=(float(res.ci_low), float(res.ci_high))
        if res.ci_low is not None and res.ci_high is not None
        else None,
        bound=at(n, 2 * alpha).ci_low,
        p_value=res.p_value,
        warnings=res.warnings,
        needed=needed,
    )


def _test_scores(x: np.ndarray, y: np.ndarray, alpha: float, max_drop: float) -> _Tested:
    d = y - x
    n = d.size
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    if n < 2 or sd == 0.0:  # every case moved by exactly the same amount (often: not at all)
        return _Tested(
            kind="score",
            test="none",
            test_why=f"every case changed by exactly {mean:g}: nothing to test",
            effect=mean,
            ci=(mean, mean),
            bound=mean,
            p_value=1.0 if mean == 0.0 else 0.0,
            warnings=("zero_variance",),
            needed=lambda detect: None,
        )
    tt = cmp.paired_t(a=x, b=y, alpha=alpha)
    bound = cmp.paired_t(a=x, b=y, alpha=2 * alpha).ci_low
    skew, kurt = float(stats.skew(d)), float(stats.kurtosis(d))
    test, why, p, warns = tt.test, tt.why, tt.p_value, list(tt.warnings)
    if kurt > cmp.HEAVY_TAIL_KURTOSIS or n < cmp.COCHRAN_FACTOR * skew * skew:
        # A few cases moving a lot is exactly the regression to catch, so stay on the mean
        # (a rank test would all but ignore them) but drop the normal approximation: flip the
        # signs of the per-case changes, as if the version labels were random.
        perm = stats.permutation_test(
            (d,),
            np.mean,
            permutation_type="samples",
            n_resamples=PERMUTATIONS,
            vectorized=True,
            rng=np.random.default_rng(PERMUTATION_SEED),
        )
        test, p = "paired_permutation", float(perm.pvalue)
        why = (
            f"sign-flip permutation test of the mean change: per-case changes are skewed or"
            f" heavy-tailed (skewness {skew:.2g}, excess kurtosis {kurt:.2g}) for {n} cases,"
            " so the t-test's p-value is unreliable; the interval is the t interval"
        )
        warns.append("skewed_changes")

    def t_crit(size: int, level: float) -> float:
        return float(stats.t.ppf(1.0 - level, size - 1))

    def needed(detect: bool) -> int | None:
        if detect:
            return _smallest(
                n, lambda s: abs(mean) * math.sqrt(s) / sd > t_crit(s, alpha / 2), floor=2
            )
        return _smallest(n, lambda s: mean - t_crit(s, alpha) * sd / math.sqrt(s) >= -max_drop)

    return _Tested(
        kind="score",
        test=test,
        test_why=why,
        effect=mean,
        ci=(float(tt.ci_low), float(tt.ci_high))
        if tt.ci_low is not None and tt.ci_high is not None
        else None,
        bound=bound,
        p_value=p,
        warnings=tuple(warns),
        needed=needed,
    )


def _smallest(n: int, decides: Callable[[int], bool], floor: int = 1) -> int | None:
    """Smallest eval size > n at which `decides` holds (assumed monotone), or None."""
    lo, hi = max(n, floor), max(n, floor) * 2
    while not decides(hi):
        if hi >= MAX_CASES_NEEDED:
            return None
        lo, hi = hi, min(hi * 2, MAX_CASES_NEEDED)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decides(mid) else (mid, hi)
    return hi


def _case_threshold(d: np.ndarray, max_drop: float, given: float | None) -> float:
    """How far a score case must move to be named: the caller's threshold, else beyond both
    the allowed drop and 3 robust SDs of the per-case changes (the eval's own wobble)."""
    if given is not None:
        return given
    mad = float(np.median(np.abs(d - np.median(d))))
    return max(max_drop, 3.0 * 1.4826 * mad)


def _changes(
    ids: Sequence[str], x: np.ndarray, y: np.ndarray, oriented: np.ndarray, threshold: float
) -> tuple[tuple[CaseChange, ...], tuple[CaseChange, ...]]:
    """Cases that got worse / better by more than `threshold` (oriented), worst/best first."""
    order = np.argsort(oriented, kind="stable")
    worse = [i for i in order if oriented[i] < -threshold]
    better = [i for i in order[::-1] if oriented[i] > threshold]

    def change(i: int) -> CaseChange:
        return CaseChange(
            case_id=ids[i],
            baseline=float(x[i]),
            candidate=float(y[i]),
            change=float(y[i] - x[i]),
        )

    return tuple(change(i) for i in worse), tuple(change(i) for i in better)


def _judge(m: MetricVerdict, t: _Tested, alpha: float, family: int) -> MetricVerdict:
    """Verdict and its sentence, once Holm's p is known. Effects in `t` are oriented."""
    worse = "lower" if m.higher_is_better else "higher"
    size = f"{abs(t.effect):.3g}"
    holm = m.p_holm if m.p_holm is not None else 1.0
    if holm < alpha and t.effect < -m.max_drop:
        return replace(
            m,
            verdict="fail",
            why=f"{worse} by {size} (more than the allowed {m.max_drop:g}), significant"
            f" (p = {holm:.2g}{f' after Holm over {family} metrics' if family > 1 else ''});"
            f" {len(m.regressed)} cases regressed",
        )
    if t.bound is not None and t.bound >= -m.max_drop:
        return replace(
            m,
            verdict="pass",
            why=f"rules out a drop of more than {m.max_drop:g} (worst plausible: "
            f"{max(-t.bound, 0.0):.3g}) over {m.cases} cases",
        )
    detect = t.effect < -m.max_drop
    needed = t.needed(detect)
    if detect:
        why = (
            f"{worse} by {size}, beyond the allowed {m.max_drop:g}, but not significant with"
            f" {m.cases} cases (p = {holm:.2g})"
        )
        goal = "to tell whether a drop this size is real"
    else:
        why = (
            f"cannot rule out a drop of more than {m.max_drop:g} with {m.cases} cases"
            f" (worst plausible: {-(t.bound if t.bound is not None else -math.inf):.3g})"
        )
        goal = f"to rule out a drop of {m.max_drop:g}"
    if needed is not None:
        why += f"; about {needed} cases would be needed {goal}"
    else:
        why += f"; no eval size up to {MAX_CASES_NEEDED:,} would decide it at this behaviour"
    return replace(m, verdict="inconclusive", why=why, cases_needed=needed)


def gate(
    metrics: Sequence[MetricCases],
    *,
    max_drop: float | Mapping[str, float] = 0.02,
    alpha: float = 0.05,
    case_threshold: float | None = None,
) -> GateResult:
    """Verdicts for every metric and overall (fail > inconclusive > pass).

    max_drop: the allowed drop in each metric's units, one number or per metric name (missing
    names fall back to 0.02). case_threshold: a score case counts as regressed/improved when it
    moves by more than this (default: beyond its max_drop and 3 robust SDs of all cases'
    changes); pass/fail cases when they flip.
    """
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    drops = max_drop if isinstance(max_drop, Mapping) else {}
    default_drop = 0.02 if isinstance(max_drop, Mapping) else float(max_drop)
    partial: list[tuple[MetricVerdict, _Tested | None]] = []
    for mc in metrics:
        m_drop = float(drops.get(mc.metric, default_drop))
        if m_drop < 0 or not math.isfinite(m_drop):
            raise ValueError(f"max_drop for {mc.metric} must be a finite number >= 0")
        ids = sorted(set(mc.baseline) & set(mc.candidate))
        x = np.array([mc.baseline[i] for i in ids], dtype=float)
        y = np.array([mc.candidate[i] for i in ids], dtype=float)
        base = MetricVerdict(
            metric=mc.metric,
            source=mc.source,
            kind="score",
            higher_is_better=mc.higher_is_better,
            verdict="inconclusive",
            why="no case was scored under both versions",
            test="none",
            test_why="",
            cases=len(ids),
            only_baseline=tuple(sorted(set(mc.baseline) - set(mc.candidate))),
            only_candidate=tuple(sorted(set(mc.candidate) - set(mc.baseline))),
            baseline_mean=float(x.mean()) if x.size else None,
            candidate_mean=float(y.mean()) if y.size else None,
            effect=None,
            ci_low=None,
            ci_high=None,
            worst_plausible_drop=None,
            p_value=None,
            p_holm=None,
            max_drop=m_drop,
            cases_needed=None,
            regressed=(),
            improved=(),
        )
        if not ids:
            partial.append((replace(base, warnings=("no_data",)), None))
            continue
        binary = bool(np.all((x == 0.0) | (x == 1.0)) and np.all((y == 0.0) | (y == 1.0)))
        ox = _oriented(x, binary=binary, higher_is_better=mc.higher_is_better)
        oy = _oriented(y, binary=binary, higher_is_better=mc.higher_is_better)
        tested = (_test_pass_fail if binary else _test_scores)(ox, oy, alpha, m_drop)
        sign = 1.0 if mc.higher_is_better else -1.0
        threshold = 0.5 if binary else _case_threshold(oy - ox, m_drop, case_threshold)
        regressed, improved = _changes(ids, x, y, oy - ox, threshold)
        ci = tested.ci
        partial.append(
            (
                replace(
                    base,
                    kind=tested.kind,
                    test=tested.test,
                    test_why=tested.test_why,
                    effect=sign * tested.effect,
                    ci_low=None if ci is None else min(sign * ci[0], sign * ci[1]),
                    ci_high=None if ci is None else max(sign * ci[0], sign * ci[1]),
                    worst_plausible_drop=None if tested.bound is None else -tested.bound,
                    p_value=tested.p_value,
                    regressed=regressed,
                    improved=improved,
                    warnings=tested.warnings,
                ),
                tested,
            )
        )
    p = [m.p_value if m.p_value is not None else math.nan for m, _ in partial]
    holm = cmp.adjust(p, method="holm")
    family = sum(1 for v in p if not math.isnan(v))
    out: list[MetricVerdict] = []
    for (m, t), ph in zip(partial, holm, strict=True):
        m = replace(m, p_holm=None if math.isnan(ph) else ph)
        out.append(m if t is None else _judge(m, t, alpha, family))
    verdicts = {m.verdict for m in out}
    overall: Verdict = (
        "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"
    )
    if not out:
        overall = "inconclusive"
    return GateResult(verdict=overall, alpha=alpha, metrics=tuple(out))
