"""Attribute a quality shift to the prompt or model version that caused it — or say why not.

Method, for a shift at bucket `cp` (found on the aggregate series by the change-point detector):

1. Windows: L buckets either side of cp (a day by default, so each window holds every hour of
   the day once and a daily rhythm cancels), clipped at the neighbouring change points. When
   the bucket was chosen by the caller (no detector p-value), the aggregate change over these
   windows must itself be significant, else `no_shift`.
2. Aggregate change (mean after - mean before) and its mix/within decomposition by route x
   environment (`decompose`).
3. Candidates: for each dimension (prompt, model), the values whose share of their routes'
   traffic rose by at least `min_arrival` across cp (looked for over 2L either side: the
   detector can misplace a shift in thin night traffic); the predecessor is the value of the
   same dimension whose share fell most (for prompts, the same prompt id first). Its arrival
   is the bucket where its share stepped up most; a culprit's arrival is the verdict's time.
4. Effect of each candidate against its predecessor on comparable traffic (`effects`):
   * concurrent when both ran in the same buckets (canary, A/B arm, holdout) between the
     neighbouring change points: strata = bucket x route x environment x other-dimension
     value; immune to drift, seasonality and mix;
   * before/after otherwise: strata = time of day x route x environment x other-dimension
     value, over the window before vs the window after the arrival, with bucket-level shocks
     (overdispersion) in the variance. A before/after step must also stand out from what
     moved without it: (a) control traffic — other routes whose versions did not change,
     same windows (difference-in-differences); (b) the trend around the arrival — the old
     version's change over the window before, the new version's over the window after (at
     a fifth of alpha when there is no control traffic). Each is asked only when it moved the
     shift's way noticeably; failing either, the candidate is `drift` and is not blamed —
     when that guard is itself significant (the trend on its own, or the change on control
     traffic on its own); otherwise the step is not told from noise in the guard: it is
     `not_excluded`, unless over the stable segments either side of the arrival (bounded by
     the neighbouring change points, other candidates' arrivals and a drift's ends, up to
     three periods a side) a fit of level + slope + step + time of day (`segments`) shows
     the step significant the shift's way, with control traffic measured and not moving
     with it (a drift that bends inside the segments passes for a step without control).
   The arrival is where the value's traffic share stepped up most, or a label move of a
   prompt version nearest the shift at which its share rose (`KnownArrival`, a known deploy
   time: a canary or clients' caches picking the move up over hours do not blur it).
   Holding the other dimension fixed is what separates a prompt from a model that switched at
   the same time: with no stratum where only one of them changed, the candidate is
   `not_separable`.
5. Blame only what is significant after Holm's correction over candidates (the smallest of
   the overall and Bonferroni-corrected per-route p-values, so a version that breaks one route
   is found and scoped to it), points the same way as the shift, is not drift, and explains
   at least `min_share` of it (effect x change in its traffic share / aggregate change, around
   its arrival). A prompt and a model that arrived together and both pass are not split by
   guesswork: they go to step 6 as contributors.
6. Otherwise: a prompt and a model that arrived together, whose combined effect explains the
   shift, are `confounded` (with the evidence, and what data would separate them); else
   `no_version_cause`, as traffic mix when the between-segment part dominates the
   decomposition, as drift when it does not.

7. Thin traffic (a version's own test cannot see a small effect: 0.2 per-response SD at 80 %
   power): a version held back as drift, or never held against the effect the shift needs,
   is `not_excluded` rather than cleared — a guard that fired is evidence that the metric
   moved, not that this version did not move it — and a traffic-mix cause needs its mix part
   larger than its share noise (`decompose`).

Known arrivals the detector did not mark (`find_and_attribute`): a version's first bucket, or
a label move, more than a period from every change point is tested directly, as if a shift
had been found there, at ARRIVAL_ALPHA over the number of such arrivals (Bonferroni): blamed
when the version's own test passes every gate above; cleared when the CI of its better-measured
test (a period a side, or a level fit over the stable segments either side) excludes a small
effect either way; `insufficient_evidence` (reason `arrival_underpowered`) otherwise, naming it
with that test's responses a side and the responses a side that would decide it. A
"no version cause" whose compared segments hold such an open arrival becomes
`insufficient_evidence` naming it (reason `version_in_segments_not_excluded`).

A wrong culprit sends people to roll back an innocent version, so every gate errs towards
"can't tell, here is why".
"""

from __future__ import annotations

import math
import operator
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal

from scipy import stats

from promptblame.analysis import compare
from promptblame.analysis.attribution.cells import (
    DIMENSIONS,
    Cell,
    Dimension,
    MetricKind,
    in_range,
    phase,
    sum_by,
    sums_by,
    total,
)
from promptblame.analysis.attribution.decompose import Decomposition, decompose
from promptblame.analysis.attribution.effects import (
    Estimate,
    overdispersion,
    pooled_variance,
    stratified_difference,
)
from promptblame.analysis.attribution.segments import SegmentStep, segment_step, window
from promptblame.analysis.attribution.verdict import (
    Basis,
    Direction,
    Evidence,
    Status,
    Verdict,
    at_level,
    at_time,
    culprit_summary,
    fmt_effect,
)
from promptblame.analysis.changepoints import Bucket, ChangePoint, detect_change_points
from promptblame.analysis.moments import Moments

Key = tuple[Hashable, ...]


@dataclass(frozen=True)
class KnownArrival:
    """A label move that put a prompt version into service: a known deploy time.

    value: "prompt_id@version" as in the cells; bucket: the bucket the move fell in; label:
    the label moved (e.g. "production"). Attribution takes it as the version's arrival when
    the version's traffic share rose there, and still tests the version: a move is when, not
    whether."""

    value: str
    bucket: int
    label: str


@dataclass(frozen=True)
class _Context:
    """Everything the per-candidate steps share."""

    cells: list[Cell]
    cp: int
    lo: int  # neighbouring change points: the windows stay in [lo, hi)
    hi: int
    first: int  # the series' first bucket and one past its last
    last: int
    L: int
    kind: MetricKind
    alpha: float
    sign: int  # sign of the shift
    agg: float  # aggregate change
    tau2: float
    bucket_seconds: int
    period_seconds: int
    period_buckets: int
    min_overlap: float
    drift_alpha: float
    detector_drift: bool = False
    known: tuple[KnownArrival, ...] = ()
    drift_end: int | None = None  # the detector's drift: where its ramp ended
    breaks: tuple[int, ...] = ()  # arrivals of the versions considered

    def phase_of(self, c: Cell, use_phase: bool) -> int:
        if not use_phase:
            return 0
        return phase(
            c.start, bucket_seconds=self.bucket_seconds, period_seconds=self.period_seconds
        )


@dataclass(frozen=True)
class _Trend:
    """Level change per window around a before/after arrival (mean of the sides measured)."""

    value: float
    se: float
    agree: bool  # every side measured moved the same way


@dataclass(frozen=True)
class _Candidate:
    dimension: Dimension
    value: str
    predecessor: str
    segments: frozenset[tuple[str, str]]
    share_before: float
    share_after: float
    arrival: int
    rollback: bool
    label: str | None = None  # the label move that gave the arrival, if one did


def attribute(
    cells: Sequence[Cell],
    *,
    change_index: int | None,
    bucket_seconds: int = 3600,
    kind: MetricKind = "mean",
    alpha: float = 0.05,
    higher_is_better: bool = True,
    lo: int | None = None,
    hi: int | None = None,
    window: int | None = None,
    period_seconds: int = 86_400,
    min_share: float = 0.25,
    min_arrival: float = 0.1,
    min_overlap: float = 30.0,
    drift_alpha: float = 0.05,
    detector_effect: float | None = None,
    detector_p_value: float | None = None,
    detector_drift: bool = False,
    arrivals: Sequence[KnownArrival] = (),
    drift_end_index: int | None = None,
    known_arrival: bool = False,
) -> Verdict:
    """Attribute the shift starting at bucket `change_index` (see the module docstring).

    cells: every cell of the series (one metric), any order. change_index: the first bucket
    of the new level; None = detect change points on the aggregate series and attribute the
    strongest (a `no_shift` verdict when there is none). lo / hi: the neighbouring change
    points (the windows stay inside [lo, hi)); default: the series' ends. window: buckets per
    side (default one seasonal period, at least 6). kind: "proportion" for pass/fail values,
    "mean" for continuous scores. higher_is_better=False for latency or cost.
    min_share: smallest share of the shift a culprit must explain. min_arrival: smallest rise
    of a value's traffic share to count as arriving. min_overlap: effective responses
    (Mantel-Haenszel weight) of concurrent traffic needed to prefer it to before/after.
    drift_alpha: one-sided level at which a before/after step must beat the trend around it;
    control traffic (other routes whose versions did not change) must move less, too.
    detector_effect: the detector's de-seasonalized effect, used for the direction.
    detector_drift: the detector found a drift (a ramp with an onset and an end), not a step:
    a version that is neither blamed nor cleared then does not make it `insufficient_evidence`
    — the ramp is the evidence of a trend.
    detector_p_value: the detector's p-value; without it (a caller-chosen bucket) the shift is
    first tested (all traffic, day after vs day before, same hours): `no_shift` if not
    significant, because an innocent version that happens to sit on a noise bucket must not
    be blamed for noise.
    arrivals: label moves (known deploy times); a prompt version's arrival is the move
    nearest the shift at which its share of its routes' traffic rose, instead of the bucket
    where its share stepped up most (a canary served it before the move made it real).
    known_arrival: `change_index` is a version's known arrival that the detector did not
    mark (see `find_and_attribute`); the version's own test is the gate, not the aggregate
    change (diluted by the traffic the version did not serve).
    """
    live = [c for c in cells if c.n > 0]
    period_buckets = max(1, period_seconds // max(bucket_seconds, 1))
    base = Verdict(
        kind="insufficient_data",
        direction=None,
        index=change_index,
        start=None,
        metric_kind=kind,
        higher_is_better=higher_is_better,
        aggregate_effect=None,
        level_before=None,
        level_after=None,
        window=0,
        detected_index=change_index,
        detector_p_value=detector_p_value,
    )
    if not live:
        return replace(base, reason="no_data", summary="No scored responses to attribute.")
    if change_index is None:
        found = find_and_attribute(
            live,
            bucket_seconds=bucket_seconds,
            kind=kind,
            alpha=alpha,
            higher_is_better=higher_is_better,
            period_seconds=period_seconds,
            arrivals=arrivals,
        )
        if not found:
            return replace(
                base,
                kind="no_shift",
                reason="no_change_point",
                summary="No shift: the change-point detector found no change in this series.",
            )
        return max(found, key=lambda v: abs(v.aggregate_effect or 0.0))
    cp = change_index
    first = min(c.bucket for c in live)
    last = max(c.bucket for c in live) + 1
    lo_ = first if lo is None else max(lo, first)
    hi_ = last if hi is None else min(hi, last)
    width = window if window is not None else max(period_buckets, 6)
    L = min(width, cp - lo_, hi_ - cp)
    start = next((c.start for c in live if c.bucket == cp), None)
    base = replace(base, start=start, window=max(L, 0))
    if L < 1:
        return replace(
            base,
            reason="no_window",
            summary=f"The shift at {at_time(start, cp)} has no data on one side to compare.",
        )
    before, after = in_range(live, cp - L, cp), in_range(live, cp, cp + L)
    mb, ma = total(before), total(after)
    if mb.n == 0 or ma.n == 0:
        return replace(
            base, reason="empty_window", summary="No responses on one side of the shift."
        )
    agg = ma.mean - mb.mean
    shift = detector_effect if detector_effect is not None and detector_effect != 0 else agg
    sign = 1 if shift > 0 else -1
    direction: Direction = "improvement" if (sign > 0) == higher_is_better else "regression"
    decomposition = decompose(before, after)
    ctx = _Context(
        cells=live,
        cp=cp,
        lo=lo_,
        hi=hi_,
        first=first,
        last=last,
        L=L,
        kind=kind,
        alpha=alpha,
        sign=sign,
        agg=agg,
        tau2=overdispersion(live, kind=kind),
        bucket_seconds=bucket_seconds,
        period_seconds=period_seconds,
        period_buckets=period_buckets,
        min_overlap=min_overlap,
        drift_alpha=drift_alpha,
        detector_drift=detector_drift,
        known=tuple(arrivals),
        drift_end=drift_end_index,
    )
    if detector_p_value is None and not known_arrival:
        # a caller-chosen bucket: first check that the metric moved there at all
        moved = _aggregate_change(ctx)
        if moved is None or moved.p_value >= alpha:
            p_txt = "n/a" if moved is None else f"{moved.p_value:.2g}"
            return replace(
                base,
                kind="no_shift",
                aggregate_effect=agg,
                level_before=mb.mean,
                level_after=ma.mean,
                decomposition=decomposition,
                reason="aggregate_not_significant",
                summary=(
                    f"No significant shift at {at_time(start, cp)}: "
                    f"{fmt_effect(agg, kind=kind)} over "
                    f"{L} buckets either side, p={p_txt}."
                ),
            )
    base = replace(
        base,
        kind="no_version_cause",
        direction=direction,
        aggregate_effect=agg,
        level_before=mb.mean,
        level_after=ma.mean,
        decomposition=decomposition,
    )
    # versions are looked for over two windows either side: the detector can misplace a shift
    # by a day when it lands in the night's thin traffic
    wide_before = in_range(live, max(lo_, cp - 2 * L), cp)
    wide_after = in_range(live, cp, min(hi_, cp + 2 * L))
    candidates = _candidates(ctx, wide_before, wide_after, min_arrival=min_arrival)
    ctx = replace(ctx, breaks=tuple(c.arrival for c in candidates))
    evidence = [_evaluate(ctx, cand) for cand in candidates]
    evidence = _decide(ctx, candidates, evidence, min_share=min_share)
    blamed = [e for e in evidence if e.status == "blamed"]
    if blamed:
        culprit = blamed[0]
        # the shift time is the culprit's arrival: a sharper location than the aggregate's
        index = culprit.arrival_index if culprit.arrival_index is not None else cp
        v = replace(
            base,
            kind="culprit",
            index=index,
            start=next((c.start for c in live if c.bucket == index), start),
            culprit=culprit,
            candidates=tuple(evidence),
        )
        return replace(v, summary=culprit_summary(v, culprit))
    confounded = _confounded(ctx, candidates, evidence, min_share=min_share)
    if confounded is not None:
        joint, names, to_separate = confounded
        index = joint.arrival_index if joint.arrival_index is not None else cp
        v = replace(
            base,
            kind="confounded",
            index=index,
            start=next((c.start for c in live if c.bucket == index), start),
            candidates=tuple(evidence),
            joint=joint,
            to_separate=to_separate,
        )
        summary = (
            f"{direction.capitalize()} at {at_time(v.start, index)} "
            f"({fmt_effect(agg, kind=kind)}): confounded — {' and '.join(names)} changed together "
            f"({fmt_effect(joint.effect, kind=kind)} together, p={joint.p_value:.2g}); "
            f"{to_separate}"
        )
        return replace(v, summary=summary)
    cause: Literal["traffic_mix", "drift"] = "drift"
    if (
        decomposition is not None
        and decomposition.mix * sign > 0
        and abs(decomposition.mix) >= abs(decomposition.within)
        and _mix_shown(decomposition, sign=sign, alpha=drift_alpha)
    ):
        cause = "traffic_mix"
    evidence = [
        _excluded_or_not(ctx, cand, e, min_share) for cand, e in _paired(candidates, evidence)
    ]
    if not detector_drift:
        evidence = [
            _thin_drift(ctx, cand, e, min_share) for cand, e in _paired(candidates, evidence)
        ]
    open_ = [e for e in evidence if e.status == "not_excluded"]
    explained_by_trend = detector_drift or any(e.status == "drift" for e in evidence)
    if open_ and cause == "drift" and not explained_by_trend:
        e = open_[0]
        index = e.arrival_index if e.arrival_index is not None else cp
        need = (
            f"; about {e.n_needed:,} responses a side would decide it"
            if e.n_needed is not None
            else ""
        )
        measured = (
            f"{fmt_effect(e.effect, kind=kind)} [{fmt_effect(e.ci_low, kind=kind)}, "
            f"{fmt_effect(e.ci_high, kind=kind)}] on {e.n_new:,} new vs {e.n_old:,} old responses"
            if e.ci_low is not None
            else "no comparable traffic to measure it on"
        )
        return replace(
            base,
            kind="insufficient_evidence",
            index=index,
            start=next((c.start for c in live if c.bucket == index), start),
            candidates=tuple(evidence),
            reason="version_not_excluded",
            summary=(
                f"{direction.capitalize()} at bucket {index} ({fmt_effect(agg, kind=kind)}): "
                f"not enough evidence to blame or clear {e.dimension} {e.value} (from "
                f"{e.predecessor}), not excluded: {measured}; "
                f"{fmt_effect(e.needed_effect, kind=kind)} would explain it{need}."
            ),
        )
    v = replace(base, cause=cause, candidates=tuple(evidence))
    considered = ""
    if evidence:
        considered = "; versions considered, not blamed: " + ", ".join(
            f"{e.value} ({e.status.replace('_', ' ')})" for e in evidence
        )
    if cause == "traffic_mix" and decomposition is not None:
        what = (
            f"traffic mix — {fmt_effect(decomposition.mix, kind=kind)} from traffic moving "
            f"between routes, {fmt_effect(decomposition.within, kind=kind)} within them"
        )
    else:
        within = decomposition.within if decomposition is not None else agg
        what = (
            f"drift with no version change ({fmt_effect(within, kind=kind)} within routes, "
            "not tied to any version's arrival)"
        )
    drifting = [e for e in evidence if e.status == "drift"]
    if drifting and cause == "drift":
        e = drifting[0]
        return replace(
            v,
            summary=(
                f"{direction.capitalize()} at {at_time(start, cp)} "
                f"({fmt_effect(agg, kind=kind)}): no "
                f"version can be blamed — the metric was already moving; {e.dimension} "
                f"{e.value} arrived then ({fmt_effect(e.effect, kind=kind)} vs {e.predecessor}) "
                f"but its step is not clearly larger than {e.note.split(': ')[0]}. A holdout on "
                f"{e.predecessor} or a canary would tell."
            ),
        )
    return replace(
        v,
        summary=(
            f"{direction.capitalize()} at {at_time(start, cp)} "
            f"({fmt_effect(agg, kind=kind)}): no version "
            f"caused it: {what}{considered}."
        ),
    )


def _mix_shown(d: Decomposition, *, sign: int, alpha: float) -> bool:
    """The mix part moved the shift's way by more than its noise if no traffic had moved
    (one-sided at `alpha`): a traffic-mix verdict needs that evidence, not only the larger
    part of a decomposition that thin route shares can tilt by chance."""
    if d.mix_se is None or d.mix_se <= 0:
        return True  # noise-free shares: the decomposition is exact
    return d.mix * sign / d.mix_se >= float(stats.norm.isf(alpha))


def find_and_attribute(
    cells: Sequence[Cell],
    *,
    bucket_seconds: int = 3600,
    kind: MetricKind = "mean",
    alpha: float = 0.05,
    higher_is_better: bool = True,
    period_seconds: int = 86_400,
    min_effect: float | None = None,
    penalty: float | None = None,
    min_share: float = 0.25,
    arrivals: Sequence[KnownArrival] = (),
) -> list[Verdict]:
    """Change points of the aggregate series (all cells summed per bucket), each attributed.

    Uses `detect_change_points` (de-seasonalized, calibrated to rarely alarm on an unchanged
    series); each shift is attributed within its neighbouring change points, so a rollback
    gives two verdicts. A culprit arrival already blamed for an earlier change point is not
    repeated (the detector cut one shift in two). Empty list when nothing changed.
    arrivals: label moves, known deploy times (see `attribute`).
    """
    live = [c for c in cells if c.n > 0]
    if not live:
        return []
    buckets = aggregate_buckets(live, bucket_seconds=bucket_seconds)
    first = min(c.bucket for c in live)
    result = detect_change_points(
        buckets=buckets,
        season_period=timedelta(seconds=period_seconds),
        min_effect=min_effect,
        penalty=penalty,
    )
    cps: list[ChangePoint] = list(result.change_points)
    bounds = [first, *(first + c.index for c in cps), first + len(buckets)]
    verdicts = []
    for j, c in enumerate(cps):
        verdicts.append(
            at_level(
                attribute(
                    live,
                    change_index=first + c.index,
                    bucket_seconds=bucket_seconds,
                    kind=kind,
                    alpha=alpha,
                    higher_is_better=higher_is_better,
                    lo=bounds[j],
                    hi=bounds[j + 2],
                    period_seconds=period_seconds,
                    min_share=min_share,
                    detector_effect=c.effect,
                    detector_p_value=c.p_value,
                    detector_drift=c.kind == "drift",
                    arrivals=arrivals,
                    drift_end_index=(
                        first + c.end_index
                        if c.kind == "drift" and c.end_index is not None
                        else None
                    ),
                ),
                1 - alpha,
            )
        )
    for j, c in enumerate(cps):
        if c.kind == "drift":
            end = None if c.end_index is None else first + c.end_index
            verdicts[j] = replace(verdicts[j], drift_end_index=end, drift_slope=c.slope)
    period_buckets = max(1, period_seconds // max(bucket_seconds, 1))
    untested = untested_arrivals(
        live, bounds=bounds, arrivals=arrivals, reach=max(period_buckets, 6)
    )
    arrival_alpha = min(alpha, ARRIVAL_ALPHA) / max(len(untested), 1)
    for a in untested:
        lo = max(b for b in bounds[:-1] if b <= a)
        hi = min(b for b in bounds[1:] if b > a)
        v = attribute(
            live,
            change_index=a,
            bucket_seconds=bucket_seconds,
            kind=kind,
            alpha=arrival_alpha,
            higher_is_better=higher_is_better,
            lo=lo,
            hi=hi,
            period_seconds=period_seconds,
            min_share=min_share,
            arrivals=arrivals,
            known_arrival=True,
        )
        v = at_level(v, 1 - arrival_alpha)
        if v.kind == "culprit" and v.culprit is not None:
            verdicts.append(_arrival_found(v, tests=len(untested)))
            continue
        # a shift said to have no version cause, measured over segments that hold this
        # arrival: the version is part of what it compares, so clearing it must exclude an
        # effect as large as that shift too (a smaller shift than a "small" effect)
        shift = next(
            (
                i
                for i in range(len(cps))
                if verdicts[i].kind == "no_version_cause" and bounds[i] <= a < bounds[i + 2]
            ),
            None,
        )
        moved = None if shift is None else verdicts[shift].aggregate_effect
        open_ = _underpowered(v, live, alpha=arrival_alpha, at_most=abs(moved) if moved else None)
        if open_ is None:
            continue
        held = None if shift is None else _not_excluded_inside(verdicts[shift], open_)
        if shift is not None and held is not None:
            verdicts[shift] = held
        else:
            verdicts.append(open_)
    verdicts.sort(key=lambda v: v.detected_index if v.detected_index is not None else v.index or 0)
    return one_per_version(verdicts)


# Level of the direct test of an untested arrival (before Bonferroni over such arrivals): as
# rare as a false change point of the detector (~0.3 % of unchanged series), because on busy
# traffic the version's test is then the only gate (at 0.05 a harmless deploy on unchanged
# busy traffic was blamed in 5 of 100 series, at 0.01 in 1, at 0.002 in none).
ARRIVAL_ALPHA = 0.002


def untested_arrivals(
    cells: Sequence[Cell],
    *,
    bounds: Sequence[int],
    arrivals: Sequence[KnownArrival] = (),
    reach: int,
) -> list[int]:
    """Buckets where a version arrived that no change point is near: the first bucket of a
    prompt or model value that did not serve the series' start, and every label move
    (`arrivals`), at least `reach` buckets from either end of the series and more than
    `reach` from a detected change point (whose attribution already looks for versions two
    windows either side). Arrivals within 3 buckets of each other are one (the first).

    On a thin series the detector can miss a step that a test of the version that arrived
    would find: a known arrival is a hypothesis fixed before looking at the metric, so it
    can be tested directly, at alpha over the number of such arrivals (Bonferroni)."""
    first, last = bounds[0], bounds[-1]
    found: set[int] = set()
    for dim in DIMENSIONS:
        firsts: dict[str, int] = {}
        value = operator.attrgetter(dim)  # `Cell.value(dim)`, without a method call a cell
        for c in cells:
            v = value(c)
            seen = firsts.get(v)
            if seen is None or c.bucket < seen:
                firsts[v] = c.bucket
        found.update(firsts.values())
    found.update(m.bucket for m in arrivals)
    detected = bounds[1:-1]
    out: list[int] = []
    for b in sorted(found):
        if b - first < reach or last - b < reach:
            continue
        if any(abs(b - d) <= reach for d in detected):
            continue
        if out and b - out[-1] <= 3:
            continue
        out.append(b)
    return out


# An effect of this many per-response standard deviations is one a test of a version must
# exclude (either way) before its silence counts: Cohen's "small" effect, scale-free.
SMALL_EFFECT_SD = 0.2


def _underpowered(
    v: Verdict, cells: Sequence[Cell], *, alpha: float, at_most: float | None = None
) -> Verdict | None:
    """An untested arrival whose version was not blamed: `insufficient_evidence` unless its
    best-measured test excludes a small effect (SMALL_EFFECT_SD per-response SDs) either way,
    naming the version as not excluded with the responses a side and the responses a side
    that would decide it; None when a test excludes that (the version is cleared).

    Two tests of the step are at hand: the one-period before/after comparison and the fit
    over the stable segments either side of the arrival (bounded by neighbouring change
    points and arrivals, up to SEGMENT_PERIODS periods a side, net of a trend and time of
    day). The one with the smaller standard error decides: a day a side can hold too few
    responses to exclude anything where the quiet weeks around the deploy do.

    at_most: the size of a shift whose compared segments hold the arrival; the effect to
    exclude is then no larger than that shift (the version could have made it).

    The detector found no shift there either, so this is no alarm of a change: it says that
    a version went out on too little traffic to tell whether it changed the metric."""
    m = total(cells)
    if m.n < 2:
        return None
    sd = math.sqrt(max(m.total_sq / m.n - m.mean**2, 0.0))
    small = SMALL_EFFECT_SD * sd
    if at_most is not None:
        small = min(small, at_most)
    if small <= 0:
        return None
    z = float(stats.norm.isf(alpha / 2))
    best: tuple[float, Evidence, str] | None = None
    for e in v.candidates:
        if e.status in ("blamed", "contributor", "not_separable", "wrong_direction"):
            continue
        if e.ci_low is None or e.ci_high is None or e.effect is None:
            continue
        test = _best_test(e, z=z)
        if test is None:
            continue
        effect, se, n_new, n_old = test
        if abs(effect) + z * se < small:
            continue  # its CI excludes a small effect either way: cleared
        # undecided: more data decides it once the CI excludes a small effect (when the
        # estimate held) or excludes zero, whichever comes first
        margin = max(small - abs(effect), abs(effect))
        n_side = max(n_new, n_old)
        need = max(math.ceil(n_side * (z * se / margin) ** 2), n_side + 1)
        e = replace(e, effect=effect, ci_low=effect - z * se, ci_high=effect + z * se)
        e = replace(e, n_new=n_new, n_old=n_old, n_needed=need)
        where = "over the stable segments either side" if se == e.level_se else "a period a side"
        if best is None or se / small > best[0]:
            best = (se / small, e, where)
    if best is None:
        return None
    _, e, where = best
    need = e.n_needed or 0
    sign = 1 if (e.effect or 0.0) >= 0 else -1
    direction: Direction = "improvement" if (sign > 0) == v.higher_is_better else "regression"
    e = replace(
        e,
        status="not_excluded",
        needed_effect=sign * small,
        note=(
            f"its test ({where}) cannot exclude an effect of "
            f"{fmt_effect(small, kind=v.metric_kind)} ({SMALL_EFFECT_SD} per-response SD) "
            "either way"
        ),
    )
    index = e.arrival_index if e.arrival_index is not None else v.index
    start = next((c.start for c in cells if c.bucket == index), v.start)
    kind = v.metric_kind
    return replace(
        v,
        kind="insufficient_evidence",
        direction=direction,
        index=index,
        start=start,
        cause=None,
        culprit=None,
        candidates=tuple(
            e if (c.dimension, c.value) == (e.dimension, e.value) else c for c in v.candidates
        ),
        reason="arrival_underpowered",
        detected_index=None,
        detector_p_value=None,
        summary=(
            f"{e.dimension.capitalize()} {e.value} (from {e.predecessor}) arrived at "
            f"{at_time(start, index)} on too little traffic to tell whether it changed the "
            f"metric: {fmt_effect(e.effect, kind=kind)} [{fmt_effect(e.ci_low, kind=kind)}, "
            f"{fmt_effect(e.ci_high, kind=kind)}] on {e.n_new:,} new vs {e.n_old:,} old "
            f"responses, which does not exclude an effect of {fmt_effect(small, kind=kind)} "
            f"either way; about {need:,} responses a side would decide it. Not excluded; the "
            "change-point detector found no shift here."
        ),
    )


def _best_test(e: Evidence, *, z: float) -> tuple[float, float, int, int] | None:
    """(effect, standard error, n new, n old) of the better-measured test of `e`'s step:
    the one-period comparison (its CI at the level `z` stands for) or the stable-segment
    fit, whichever has the smaller standard error."""
    if e.effect is None or e.ci_low is None or e.ci_high is None:
        return None
    out = (e.effect, (e.ci_high - e.ci_low) / (2 * z), e.n_new, e.n_old)
    if (
        e.level_effect is not None
        and e.level_se is not None
        and 0 < e.level_se < out[1]
        and math.isfinite(e.level_effect)
    ):
        out = (e.level_effect, e.level_se, e.level_n_new, e.level_n_old)
    return out


def _not_excluded_inside(v: Verdict, open_: Verdict) -> Verdict | None:
    """`v` (no version cause) as `insufficient_evidence` when a version arrived inside the
    segments its shift is measured over and that version's test (`open_`, underpowered) can
    not exclude an effect of the shift's sign and of the size it could not see; None when
    its CI excludes that (then it cannot have moved the levels compared the shift's way)."""
    e = next((c for c in open_.candidates if c.status == "not_excluded"), None)
    if e is None or e.ci_low is None or e.ci_high is None or v.aggregate_effect is None:
        return None
    sign = 1 if v.aggregate_effect > 0 else -1
    small = abs(e.needed_effect or 0.0)
    if max(e.ci_low * sign, e.ci_high * sign) < small:
        return None
    kind = v.metric_kind
    return replace(
        v,
        kind="insufficient_evidence",
        cause=None,
        reason="version_in_segments_not_excluded",
        candidates=(*v.candidates, replace(e, needed_effect=sign * small)),
        summary=(
            f"{(v.direction or 'shift').capitalize()} at {at_time(v.start, v.index)} "
            f"({fmt_effect(v.aggregate_effect, kind=kind)}): not enough evidence to say that no "
            f"version caused it — {e.dimension} {e.value} (from {e.predecessor}) arrived at "
            f"{at_time(open_.start, open_.index)}, inside the stretch this shift is measured "
            f"over, and its test on this traffic cannot exclude it: "
            f"{fmt_effect(e.effect, kind=kind)} [{fmt_effect(e.ci_low, kind=kind)}, "
            f"{fmt_effect(e.ci_high, kind=kind)}] on {e.n_new:,} new vs {e.n_old:,} old "
            f"responses; about {e.n_needed or 0:,} responses a side would decide it."
        ),
    )


def _arrival_found(v: Verdict, *, tests: int) -> Verdict:
    """A culprit found by testing a known arrival directly: its adjusted p-value carries the
    Bonferroni factor over the arrivals tested, and the verdict says how it was found."""
    e = v.culprit
    assert e is not None
    p = e.p_adjusted if e.p_adjusted is not None else e.p_value
    e = replace(e, p_adjusted=None if p is None else min(1.0, p * tests))
    v = replace(
        v,
        culprit=e,
        candidates=tuple(
            e if (c.dimension, c.value) == (e.dimension, e.value) else c for c in v.candidates
        ),
        reason="known_arrival",
    )
    note = (
        f" Found by testing the arrival directly (the change-point detector did not mark it; "
        f"p adjusted over {tests} untested arrival{'s' if tests > 1 else ''})."
    )
    return replace(v, summary=culprit_summary(v, e) + note)


def one_per_version(verdicts: list[Verdict]) -> list[Verdict]:
    """One verdict per (version, direction): a staged rollout (5 %, 25 %, 100 %) or a detector
    that cut one shift in two gives several change points with the same culprit; they are one
    finding, the first verdict blaming it, with the other change points as its steps. A
    change point where that same version's share moved again (a rollout step too small or
    too slow to be blamed on its own) is folded in as a step, too, instead of being reported
    as drift."""
    out = list(verdicts)
    owner: dict[tuple[str, str, str | None], int] = {}
    drop: set[int] = set()
    for i, v in enumerate(out):
        if v.culprit is None:
            continue
        key = (v.culprit.dimension, v.culprit.value, v.direction)
        if key in owner:
            out[owner[key]] = replace(out[owner[key]], steps=(*out[owner[key]].steps, *_at(v)))
            drop.add(i)
        else:
            owner[key] = i
    for i, v in enumerate(out):
        if i in drop or v.culprit is not None or v.kind == "confounded":
            continue
        same = [
            owner[(e.dimension, e.value, v.direction)]
            for e in v.candidates
            if (e.dimension, e.value, v.direction) in owner
        ]
        if same:
            out[same[0]] = replace(out[same[0]], steps=(*out[same[0]].steps, *_at(v)))
            drop.add(i)
    return [v for i, v in enumerate(out) if i not in drop]


def _at(v: Verdict) -> tuple[int, ...]:
    return (*(() if v.detected_index is None else (v.detected_index,)), *v.steps)


def aggregate_buckets(cells: Iterable[Cell], *, bucket_seconds: int) -> list[Bucket]:
    """The aggregate series: cells summed per bucket, empty buckets filled (n = 0). (`sums_by`:
    the sums of `sum_by` without a Moments a bucket; a pass builds some 80,000 buckets.)"""
    by_bucket = sums_by(cells, operator.attrgetter("bucket"))
    starts = {c.bucket: c.start for c in cells}
    first, last = min(by_bucket), max(by_bucket)
    s0 = starts[first]
    out = []
    empty = (0, 0.0, 0.0)
    for b in range(first, last + 1):
        n, total, total_sq = by_bucket.get(b, empty)
        st = starts.get(b)
        if st is None:
            if isinstance(s0, int):
                st = s0 + (b - first) * bucket_seconds
            else:
                st = s0 + timedelta(seconds=(b - first) * bucket_seconds)
        out.append(Bucket(st, n, total, total_sq))
    return out


# ---------------------------------------------------------------------------------------------
# candidates


def _segments_of(cells: Iterable[Cell]) -> frozenset[tuple[str, str]]:
    return frozenset((c.route, c.environment) for c in cells)


def _shares(cells: Sequence[Cell], dim: Dimension) -> dict[str, float]:
    n = sum(c.n for c in cells)
    by = sum_by(cells, lambda c: c.value(dim))
    return {k: m.n / n for k, m in by.items()} if n else {}


def _candidates(
    ctx: _Context, before: Sequence[Cell], after: Sequence[Cell], *, min_arrival: float
) -> list[_Candidate]:
    """Values whose traffic share rose across cp, each with its predecessor."""
    out: list[_Candidate] = []
    for dim in DIMENSIONS:
        for value in sorted({c.value(dim) for c in after}):
            segs = _segments_of(c for c in after if c.value(dim) == value)
            b = [c for c in before if (c.route, c.environment) in segs]
            a = [c for c in after if (c.route, c.environment) in segs]
            sb, sa = _shares(b, dim), _shares(a, dim)
            rise = sa.get(value, 0.0) - sb.get(value, 0.0)
            if rise < min_arrival:
                continue
            drops = {
                k: s - sa.get(k, 0.0) for k, s in sb.items() if k != value and s > sa.get(k, 0.0)
            }
            if not drops:
                continue
            pid = value.split("@")[0]
            same = {k: d for k, d in drops.items() if dim == "prompt" and k.split("@")[0] == pid}
            pool = same or drops
            pred = max(sorted(pool), key=lambda k: pool[k])
            arrival, label = _arrival(ctx, dim, value, segs)
            out.append(
                _Candidate(
                    dimension=dim,
                    value=value,
                    predecessor=pred,
                    segments=segs,
                    share_before=sb.get(value, 0.0),
                    share_after=sa.get(value, 0.0),
                    arrival=arrival,
                    rollback=_rollback(ctx, dim, value, pred, segs),
                    label=label,
                )
            )
    return out


def _arrival(
    ctx: _Context, dim: Dimension, value: str, segs: frozenset[tuple[str, str]]
) -> tuple[int, str | None]:
    """The bucket near cp where the value arrived, and the label move that says so (if any).

    A label move of this prompt version within the search span, at which its share of its
    routes' traffic rose, is its arrival (the nearest to cp): the deploy time is known, and a
    canary that served it earlier, or clients whose caches picked the move up over hours, do
    not blur it. Otherwise the bucket where its share stepped up most: step at b = share over
    [b, b + 3) - share over [b - 3, b), each pooled over its buckets (so thin hours do not
    make noise steps); ties go to the bucket nearest cp. For a cutover or an A/B arm this is
    its first bucket, for a canary ramp the biggest ramp step near the shift.
    """
    n_all: dict[int, int] = defaultdict(int)
    n_val: dict[int, int] = defaultdict(int)
    lo, hi = max(ctx.lo, ctx.cp - 2 * ctx.L), min(ctx.hi, ctx.cp + 2 * ctx.L)
    for c in in_range(ctx.cells, lo - 3, hi + 3):
        if (c.route, c.environment) in segs:
            n_all[c.bucket] += c.n
            if c.value(dim) == value:
                n_val[c.bucket] += c.n

    def share(x: int, y: int) -> float:
        n = sum(n_all.get(b, 0) for b in range(x, y))
        return sum(n_val.get(b, 0) for b in range(x, y)) / n if n else 0.0

    if dim == "prompt":
        moves = sorted(
            (m for m in ctx.known if m.value == value and lo <= m.bucket < hi),
            key=lambda m: (abs(m.bucket - ctx.cp), m.bucket),
        )
        for m in moves:
            if share(m.bucket, m.bucket + 3) - share(m.bucket - 3, m.bucket) > 0:
                return m.bucket, m.label
    best, best_step = ctx.cp, -math.inf
    for b in sorted(range(lo + 1, hi), key=lambda b: abs(b - ctx.cp)):
        step = share(b, b + 3) - share(b - 3, b)
        if step > best_step + 1e-9:
            best, best_step = b, step
    return best, None


def _rollback(
    ctx: _Context, dim: Dimension, value: str, pred: str, segs: frozenset[tuple[str, str]]
) -> bool:
    """The value served these routes before its predecessor first did: a return, a rollback."""
    mine = [
        c.bucket for c in ctx.cells if c.value(dim) == value and (c.route, c.environment) in segs
    ]
    theirs = [
        c.bucket for c in ctx.cells if c.value(dim) == pred and (c.route, c.environment) in segs
    ]
    return bool(mine and theirs) and min(mine) < min(theirs) < ctx.cp - 1


# ---------------------------------------------------------------------------------------------
# effects


def _by(
    cells: Iterable[Cell], key: Callable[[Cell], Key], keep: Callable[[Cell], bool]
) -> dict[Key, Moments]:
    return sum_by((c for c in cells if keep(c)), key)


def _evaluate(ctx: _Context, cand: _Candidate) -> Evidence:
    """Effect of a candidate against its predecessor; concurrent if possible, else before/after."""
    dim = cand.dimension
    ev = Evidence(
        dimension=dim,
        value=cand.value,
        predecessor=cand.predecessor,
        status="no_data",
        share_before=cand.share_before,
        share_after=cand.share_after,
        arrival_index=cand.arrival,
        rollback=cand.rollback,
        arrival_label=cand.label,
    )

    def is_new(c: Cell) -> bool:
        return c.value(dim) == cand.value and (c.route, c.environment) in cand.segments

    def is_old(c: Cell) -> bool:
        return c.value(dim) == cand.predecessor and (c.route, c.environment) in cand.segments

    basis, est, by_scope, trend, control, note = _estimate(
        ctx, dim, is_new, is_old, cand.arrival, cand.segments
    )
    if est is None:
        # would the comparison exist if the other dimension were ignored?
        loose = _estimate(ctx, None, is_new, is_old, cand.arrival)[1]
        status: Status = "not_separable" if loose is not None else "no_data"
        why = (
            f"no traffic ran {cand.value} and {cand.predecessor} with the same "
            f"{'model' if dim == 'prompt' else 'prompt'}"
            if loose is not None
            else note or "no comparable traffic"
        )
        return replace(ev, status=status, note=why)
    ev = _with_estimate(ev, est, basis)
    ev = replace(
        ev,
        trend=trend.value if trend else None,
        trend_se=trend.se if trend and trend.agree else None,
        note=note,
    )
    # scope: a version that moves one route (or environment) only. Its effect there, tested
    # with Bonferroni over the routes, is what is reported when the rest of its traffic is
    # quiet: not significant the same way, or under a fifth of the effect.
    for attr, scoped in by_scope.items():
        if len(scoped) == 1:
            (only,) = scoped
            if len({c.route if attr == "route" else c.environment for c in ctx.cells}) > 1:
                ev = _scope(ev, attr, only)
            continue
        best: tuple[float, str, Estimate] | None = None
        for value, (inside, outside) in scoped.items():
            if inside is None:
                continue
            p_in = min(1.0, inside.p_value * len(scoped))
            if inside.effect * ctx.sign <= 0 or p_in >= ctx.alpha:
                continue
            quiet = (
                outside is None
                or outside.p_value >= ctx.alpha
                or outside.effect * ctx.sign <= 0
                or abs(outside.effect) < 0.2 * abs(inside.effect)
            ) and (outside is None or abs(outside.effect) < 0.5 * abs(inside.effect))
            if quiet and (best is None or p_in < best[0]):
                best = (p_in, value, inside)
        if best is not None:
            p_in, value, inside = best
            ev = _with_estimate(ev, inside, basis)
            ev = _scope(replace(ev, p_value=p_in), attr, value)

    # explained share: effect x rise of the value's share of all traffic / aggregate change
    def scoped_cell(c: Cell) -> bool:
        return (ev.scope_route is None or c.route == ev.scope_route) and (
            ev.scope_environment is None or c.environment == ev.scope_environment
        )

    explained = _explained(ctx, cand.arrival, lambda c: is_new(c) and scoped_cell(c), ev.effect)
    ev = replace(ev, explained_share=explained)
    if basis == "before_after" and (ev.scope_route or ev.scope_environment):
        # a step confined to one route is the step held against the trend: over all of the
        # version's routes it is diluted by the quiet ones (which is what made it scoped),
        # while the trend over all of them is the better-measured guard against a drift that
        # moves everything
        scoped_est = _estimate(
            ctx,
            dim,
            lambda c: is_new(c) and scoped_cell(c),
            lambda c: is_old(c) and scoped_cell(c),
            cand.arrival,
        )[1]
        est = scoped_est if scoped_est is not None else est
    if basis == "before_after":
        # without control traffic the trend is the only guard against drift: stricter then
        margin = 1.0 if control is not None else 1.5
        sharp = _sharp(est, trend, sign=ctx.sign, alpha=ctx.drift_alpha, margin=margin)
        beats = _beats(est, control, sign=ctx.sign, alpha=ctx.alpha)
        seg = _segment(ctx, dim, is_new, is_old, cand.arrival)
        level = _segment(ctx, dim, is_new, is_old, cand.arrival, trend=False)
        if level is not None:
            ev = replace(
                ev,
                level_effect=level.effect,
                level_se=level.se,
                level_n_new=level.n_new,
                level_n_old=level.n_old,
            )
        if seg is not None:
            ev = replace(
                ev,
                segment_effect=seg.effect,
                segment_ci_low=seg.ci_low,
                segment_ci_high=seg.ci_high,
                segment_p_value=seg.p_value,
                segment_start=seg.start,
                segment_end=seg.end,
            )
        ev = replace(
            ev,
            sharp=sharp and beats,
            control_effect=control.effect if control is not None else None,
            control_se=control.se if control is not None else None,
            beats_control=beats,
        )
    return ev


def _segment(
    ctx: _Context,
    dim: Dimension,
    is_new: Callable[[Cell], bool],
    is_old: Callable[[Cell], bool],
    arrival: int,
    *,
    trend: bool = True,
) -> SegmentStep | None:
    """The step over the stable segments around the arrival (`segments.segment_step`)."""
    breaks = [ctx.lo, ctx.hi, *ctx.breaks]
    if ctx.detector_drift:  # a ramp from cp to its end: the segments stay on it
        breaks.append(ctx.cp)
        if ctx.drift_end is not None:
            breaks.append(ctx.drift_end)
    start, end = window(
        arrival,
        breaks=breaks,
        first=ctx.first,
        last=ctx.last,
        longest=SEGMENT_PERIODS * max(ctx.period_buckets, 6),
    )
    return segment_step(
        ctx.cells,
        arrival=arrival,
        start=start,
        end=end,
        is_new=is_new,
        is_old=is_old,
        stratum=lambda c: (c.route, c.environment, c.other(dim)),
        tau2=ctx.tau2,
        alpha=ctx.alpha,
        bucket_seconds=ctx.bucket_seconds,
        period_seconds=ctx.period_seconds,
        trend=trend,
    )


SEGMENT_PERIODS = 3  # the stable segments are used up to this many periods a side


def _segment_holds(e: Evidence, ctx: _Context) -> bool:
    """The step is significant over the stable segments, net of a trend, the shift's way,
    and control traffic (other routes, same windows) was measured and did not move with it:
    a drift that bends inside the segments is not a line and can pass for a step there, but
    it would move the control traffic too (without control traffic this is not asked)."""
    return (
        e.control_effect is not None
        and e.beats_control is True
        and e.segment_p_value is not None
        and e.segment_effect is not None
        and e.segment_p_value < ctx.alpha
        and e.segment_effect * ctx.sign > 0
    )


def _paired(
    candidates: list[_Candidate], evidence: list[Evidence]
) -> list[tuple[_Candidate | None, Evidence]]:
    by_key: dict[tuple[str, str], _Candidate] = {(c.dimension, c.value): c for c in candidates}
    return [(by_key.get((e.dimension, e.value)), e) for e in evidence]


_Z_POWER = 0.8416  # one-sided normal quantile of 80 % power


def _excluded_or_not(
    ctx: _Context, cand: _Candidate | None, e: Evidence, min_share: float
) -> Evidence:
    """A version that was not blamed for lack of significance is only cleared when its CI
    excludes the effect that would explain `min_share` of the shift (effect x rise of its
    traffic share = min_share x aggregate change); otherwise it is `not_excluded`, with the
    responses per side that would decide it (CI half-width shrinking as 1 / sqrt(n), sized
    for 80 % power at that effect)."""
    if cand is None or e.status not in ("not_significant", "no_data", "not_excluded"):
        return e
    unit = _explained(ctx, cand.arrival, _is_new_of(cand), 1.0)  # rise / aggregate change
    if unit is None or unit * ctx.sign <= 0:
        return e
    need = ctx.sign * min_share / abs(unit)  # effect that explains min_share of the shift
    if e.ci_low is None or e.ci_high is None:
        if e.status == "no_data" and e.note.startswith("no traffic ran"):
            return e
        return replace(e, status="not_excluded", needed_effect=need)
    far = max(e.ci_low * ctx.sign, e.ci_high * ctx.sign)  # CI end on the shift's side
    if e.status == "not_excluded":  # significant, but not told from a possible trend
        return replace(e, needed_effect=need, n_needed=_n_to_tell_from_trend(e, ctx))
    if far < abs(need):
        return replace(e, needed_effect=need)  # tested and excluded
    z_drift = float(stats.norm.isf(ctx.drift_alpha))
    if e.trend is not None and e.trend_se and e.trend * ctx.sign / e.trend_se >= z_drift:
        # the metric was already moving the shift's way on both sides of the arrival, and
        # the version's own step is not significant: the trend explains it, with evidence
        return replace(
            e,
            status="drift",
            needed_effect=need,
            note=(
                f"the trend around it ({fmt_effect(e.trend, kind=ctx.kind)} per {ctx.L} "
                "buckets, significant on its own): the step at the arrival is not significant"
            ),
        )
    z = float(stats.norm.ppf(1 - ctx.alpha / 2))
    se = (e.ci_high - e.ci_low) / (2 * z)
    k = ((z + _Z_POWER) * se / abs(need)) ** 2
    n_side = max(e.n_new, e.n_old)
    needed = math.ceil(k * n_side) if k > 1 else n_to_decide(e, bound=abs(need), z=z)
    return replace(e, status="not_excluded", needed_effect=need, n_needed=needed)


def _n_to_tell_from_trend(e: Evidence, ctx: _Context) -> int | None:
    """Responses a side at which the step over the stable segments net of a trend (the test
    that tells a step from a drift, `_segment_holds`), if its estimate held, would be
    significant the shift's way; None when that fit points the other way or was not made."""
    lo, hi, effect = e.segment_ci_low, e.segment_ci_high, e.segment_effect
    if lo is None or hi is None or effect is None or effect * ctx.sign <= 0:
        return None
    z = float(stats.norm.isf(ctx.alpha / 2))
    se = (hi - lo) / (2 * z)
    n_side = max(e.level_n_new, e.level_n_old)  # the same segments as the level fit
    if se <= 0 or n_side <= 0:
        return None
    return max(math.ceil(n_side * (z * se / abs(effect)) ** 2), n_side + 1)


def n_to_decide(e: Evidence, *, bound: float, z: float) -> int | None:
    """Responses a side at which `e`'s CI (at the level `z` stands for), if its estimate
    held, would exclude an effect of `bound` either way or exclude zero, whichever comes
    first; at least one more than it has (it is undecided now). None without a CI."""
    if e.effect is None or e.ci_low is None or e.ci_high is None or bound <= 0:
        return None
    se = (e.ci_high - e.ci_low) / (2 * z)
    n_side = max(e.n_new, e.n_old)
    margin = max(bound - abs(e.effect), abs(e.effect))
    if se <= 0 or margin <= 0 or n_side <= 0:
        return None
    return max(math.ceil(n_side * (z * se / margin) ** 2), n_side + 1)


def _thin_drift(ctx: _Context, cand: _Candidate | None, e: Evidence, min_share: float) -> Evidence:
    """A version held back as `drift`, or left `not_significant` without being held against
    the effect the shift needs, whose own test cannot see a small effect (SMALL_EFFECT_SD
    per-response SDs at 80 % power) is `not_excluded` instead: on thin traffic a trend or a
    control change that is significant at the guard's one-sided level is evidence that the
    metric moved, not that this version did not move it by as much as the shift (on busy
    traffic the version's step is measured well enough for the guard to decide)."""
    if e.ci_low is None or e.ci_high is None:
        return e
    # not significant and never held against the effect the shift needs (its arrival did
    # not move the aggregate the shift's way): nothing cleared it either
    unexamined = e.status == "not_significant" and e.needed_effect is None
    if e.status != "drift" and not unexamined:
        return e
    m = total(ctx.cells)
    sd = math.sqrt(max(m.total_sq / m.n - m.mean**2, 0.0)) if m.n else 0.0
    small = SMALL_EFFECT_SD * sd
    z = float(stats.norm.isf(ctx.alpha / 2))
    mde = (z + _Z_POWER) * (e.ci_high - e.ci_low) / (2 * z)
    if sd <= 0 or mde <= small:
        return e
    if unexamined:
        # the effect that would explain min_share of the shift, from its share's rise around
        # the shift itself (around its own arrival the aggregate did not move the shift's way)
        unit = None if cand is None else _explained(ctx, ctx.cp, _is_new_of(cand), 1.0)
        if unit is None or unit * ctx.sign <= 0:
            return e
        need = min_share / abs(unit)
        if max(e.ci_low * ctx.sign, e.ci_high * ctx.sign) < need:
            return e  # its CI excludes what would explain the shift
        e = replace(e, needed_effect=ctx.sign * need)
    why = "held back by it" if e.status == "drift" else "not significant"
    needed_effect = e.needed_effect if e.needed_effect is not None else ctx.sign * small
    return replace(
        e,
        status="not_excluded",
        needed_effect=needed_effect,
        n_needed=e.n_needed or n_to_decide(e, bound=abs(needed_effect), z=z),
        note=(
            f"{e.note + '; ' if e.note else ''}{why}, but on this traffic its own test could "
            f"not see an effect of {fmt_effect(small, kind=ctx.kind)}, so it is not cleared"
        ),
    )


def _trend_not_shown(e: Evidence, ctx: _Context) -> bool:
    """Neither what a before/after step was held against is significant on its own: not the
    trend around the arrival, not the change on unchanged traffic elsewhere. Then the step
    is not told from noise in them, which is a lack of evidence, not evidence of drift."""
    z = float(stats.norm.isf(ctx.drift_alpha))
    if e.trend is not None and e.trend_se and e.trend * ctx.sign / e.trend_se >= z:
        return False  # the trend is there on its own
    if e.beats_control is False and (
        e.control_se is None
        or e.control_effect is None
        or e.control_effect * ctx.sign >= z * e.control_se
    ):
        return False  # unchanged traffic moved the same way, significantly
    return e.trend is not None or e.beats_control is False


def _is_new_of(cand: _Candidate) -> Callable[[Cell], bool]:
    def is_new(c: Cell) -> bool:
        return c.value(cand.dimension) == cand.value and (c.route, c.environment) in cand.segments

    return is_new


def _scope(ev: Evidence, attr: str, value: str) -> Evidence:
    if attr == "route":
        return replace(ev, scope_route=value)
    return replace(ev, scope_environment=value)


def _explained(
    ctx: _Context, arrival: int, is_new: Callable[[Cell], bool], effect: float | None
) -> float | None:
    """Share of the aggregate change at the arrival that the version explains.

    effect x (rise of its share of all traffic) / (aggregate mean after - before), over L
    buckets either side of the arrival (inside the neighbouring change points). Negative when
    it would have moved the metric the other way; None when the aggregate did not move.
    """
    w = min(ctx.L, arrival - ctx.lo, ctx.hi - arrival)
    if effect is None or w < 1:
        return None
    before, after = (
        in_range(ctx.cells, arrival - w, arrival),
        in_range(ctx.cells, arrival, arrival + w),
    )
    mb, ma = total(before), total(after)
    if mb.n == 0 or ma.n == 0 or ma.mean == mb.mean:
        return None
    rise = (
        sum(c.n for c in after if is_new(c)) / ma.n - sum(c.n for c in before if is_new(c)) / mb.n
    )
    return effect * rise / (ma.mean - mb.mean)


def _beats(est: Estimate, control: Estimate | None, *, sign: int, alpha: float) -> bool:
    """Did the candidate's traffic move more than control traffic over the same windows?

    Asked only when control traffic moved the shift's way noticeably (z >= 1, or a third of
    the step): otherwise its noise would only cost power. Then difference-in-differences,
    one-sided in the shift's direction at alpha; the variances add (conservative: the bucket
    shocks both share would cancel). True without control traffic.
    """
    if control is None:
        return True
    c = control.effect
    if c * sign <= 0 or (abs(c) < control.se and abs(c) < abs(est.effect) / 3):
        return True
    excess = (est.effect - c) * sign
    se = math.sqrt(est.se**2 + control.se**2)
    return se > 0 and 0.5 * math.erfc(excess / se / math.sqrt(2)) < alpha


def _sharp(
    est: Estimate, trend: _Trend | None, *, sign: int, alpha: float, margin: float = 1.0
) -> bool:
    """Is a before/after step significantly larger than `margin` x the trend around it?

    Only asked when a trend points the shift's way on both sides of the arrival (when both
    were measured) and is noticeable (z >= 1, or a third of the step): testing every step
    against a trend would cost power for nothing. Then a
    one-sided test of H0 "step <= margin x trend". Each side's trend shares one window with
    the step (Cov = -Var(step) / 2), so Var(step - c trend) = (1 + c) Var(step) + c^2 Var(trend).
    A margin above 1 leaves room for a drift that bends (it is steeper at the arrival than
    a window away). With no room for a trend window, True.
    """
    if trend is None:
        return True
    t = trend.value
    if not trend.agree or t * sign <= 0 or (abs(t) < trend.se and abs(t) < abs(est.effect) / 3):
        return True
    excess = (est.effect - margin * t) * sign
    se = math.sqrt((1 + margin) * est.se**2 + (margin * trend.se) ** 2)
    p_excess = 0.5 * math.erfc(excess / se / math.sqrt(2)) if se > 0 else 1.0
    return p_excess < alpha


def _aggregate_change(ctx: _Context) -> Estimate | None:
    """All traffic after vs before cp, matched on time of day only (mix included on purpose)."""
    use_phase = ctx.period_buckets > 1 and ctx.period_buckets <= ctx.L

    def key(c: Cell) -> Key:
        return (ctx.phase_of(c, use_phase),)

    after = sum_by(in_range(ctx.cells, ctx.cp, ctx.cp + ctx.L), key)
    before = sum_by(in_range(ctx.cells, ctx.cp - ctx.L, ctx.cp), key)
    days = max(1, ctx.L // ctx.period_buckets) if use_phase else ctx.L
    return stratified_difference(
        after, before, kind=ctx.kind, alpha=ctx.alpha, shock_var=2 * ctx.tau2 / days
    )


def _with_estimate(ev: Evidence, est: Estimate, basis: Basis) -> Evidence:
    return replace(
        ev,
        basis=basis,
        effect=est.effect,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        p_value=est.p_value,
        n_new=est.n_new,
        n_old=est.n_old,
        mean_new=est.mean_new,
        mean_old=est.mean_old,
        strata=est.strata,
        test=est.test,
    )


_Scoped = dict[str, dict[str, tuple[Estimate | None, Estimate | None]]]


def _estimate(
    ctx: _Context,
    dim: Dimension | None,
    is_new: Callable[[Cell], bool],
    is_old: Callable[[Cell], bool],
    arrival: int,
    segments: frozenset[tuple[str, str]] | None = None,
) -> tuple[Basis, Estimate | None, _Scoped, _Trend | None, Estimate | None, str]:
    """Concurrent estimate if enough overlap, else before/after around the arrival.

    dim None ignores the other dimension (used only to tell `not_separable` from no data).
    Returns basis, estimate, per route/environment (inside, outside) estimates, the trend
    around a before/after arrival, the same before/after change on control traffic (other
    routes, unchanged versions; needs `segments`, the candidate's), and a note.
    """

    def other(c: Cell) -> str:
        return c.other(dim) if dim is not None else ""

    # concurrent: same bucket, route, environment and other-dimension value, anywhere between
    # the neighbouring change points (time cannot bias a same-bucket comparison, so a small
    # holdout or a long canary gets all of its traffic counted)
    span = in_range(ctx.cells, ctx.lo, ctx.hi)

    def key_c(c: Cell) -> Key:
        return (c.bucket, c.route, c.environment, other(c))

    new_c, old_c = _by(span, key_c, is_new), _by(span, key_c, is_old)
    est = stratified_difference(new_c, old_c, kind=ctx.kind, alpha=ctx.alpha)
    if est is not None and est.weight >= ctx.min_overlap:
        scoped = _scoped(ctx, new_c, old_c, 0.0)
        return "concurrent", est, scoped, None, None, "same buckets (overlapping traffic)"
    # before/after: the same time of day, route, environment and other-dimension value
    a = arrival if ctx.cp - 2 * ctx.L <= arrival <= ctx.cp + 2 * ctx.L else ctx.cp
    w = min(ctx.L, a - ctx.lo, ctx.hi - a)
    if w < 1:
        return "before_after", None, {}, None, None, ""
    if ctx.period_buckets > 1 and w < ctx.period_buckets <= (ctx.last - ctx.first) // 2:
        # under a period either side (other change points close by), the windows cannot be
        # matched on time of day and a daily rhythm or a drift cut into steps passes for a step
        why = (
            f"only {w} buckets either side of the arrival before other change points: too "
            "short to compare the same hours of the day"
        )
        return "before_after", None, {}, None, None, why
    use_phase = ctx.period_buckets > 1 and w >= ctx.period_buckets

    def key_p(c: Cell) -> Key:
        return (ctx.phase_of(c, use_phase), c.route, c.environment, other(c))

    def window(x: int, y: int, keep: Callable[[Cell], bool]) -> dict[Key, Moments]:
        return _by(in_range(ctx.cells, x, y), key_p, keep)

    days = max(1, w // ctx.period_buckets) if use_phase else w
    shock = 2 * ctx.tau2 / days
    old1, new1 = window(a - w, a, is_old), window(a, a + w, is_new)
    est = stratified_difference(new1, old1, kind=ctx.kind, alpha=ctx.alpha, shock_var=shock)
    if est is None:
        return "before_after", None, {}, None, None, ""
    scoped = _scoped(ctx, new1, old1, shock)
    # Control: the same windows on traffic outside the candidate's routes whose versions did
    # not change (same route, environment, prompt and model on both sides). What moved it
    # (drift, a shared incident) would have moved the candidate's traffic too.
    control = None
    if segments is not None:

        def key_s(c: Cell) -> Key:
            return (ctx.phase_of(c, use_phase), c.route, c.environment, c.prompt, c.model)

        def outside(c: Cell) -> bool:
            return (c.route, c.environment) not in segments

        control = stratified_difference(
            _by(in_range(ctx.cells, a, a + w), key_s, outside),
            _by(in_range(ctx.cells, a - w, a), key_s, outside),
            kind=ctx.kind,
            alpha=ctx.alpha,
            shock_var=shock,
        )
    # The trend on each side: the old version's change from the window before to the window
    # next to the arrival, the new version's from the window next to it to the one after.
    # Trend windows may cross a neighbouring change point: a drift that the detector cut into
    # steps then still shows as a trend (conservative: it can only make a step look like drift).
    sides: list[Estimate] = []
    if a - 2 * w >= ctx.first:
        far = window(a - 2 * w, a - w, is_old)
        pre = stratified_difference(old1, far, kind=ctx.kind, alpha=ctx.alpha, shock_var=shock)
        sides += [pre] if pre is not None else []
    if a + 2 * w <= ctx.last:
        far = window(a + w, a + 2 * w, is_new)
        post = stratified_difference(far, new1, kind=ctx.kind, alpha=ctx.alpha, shock_var=shock)
        sides += [post] if post is not None else []
    trend = None
    if sides:
        k = len(sides)
        trend = _Trend(
            value=sum(t.effect for t in sides) / k,
            se=math.sqrt(sum(t.se**2 for t in sides)) / k,
            agree=len({t.effect > 0 for t in sides}) == 1,
        )
    at = at_time(next((c.start for c in ctx.cells if c.bucket == a), None), a)
    note = f"{w} buckets before vs after the arrival at {at}, matched on time of day"
    if not use_phase:
        note = f"{w} buckets before vs after the arrival at {at} (shorter than a period)"
    return "before_after", est, scoped, trend, control, note


def _scoped(
    ctx: _Context, new: dict[Key, Moments], old: dict[Key, Moments], shock: float
) -> _Scoped:
    """Per route and per environment: the estimate inside it and over all the others."""
    out: _Scoped = {}
    for attr, pos in (("route", 1), ("environment", 2)):
        values = sorted({str(k[pos]) for k in new if k in old})
        out[attr] = {}
        for v in values:

            def part(inside: bool, v: str = v, pos: int = pos) -> Estimate | None:
                n = {k: m for k, m in new.items() if (k[pos] == v) == inside}
                o = {k: m for k, m in old.items() if (k[pos] == v) == inside}
                return stratified_difference(n, o, kind=ctx.kind, alpha=ctx.alpha, shock_var=shock)

            out[attr][v] = (part(True), part(False) if len(values) > 1 else None)
    return out


# ---------------------------------------------------------------------------------------------
# decisions


def _decide(
    ctx: _Context, candidates: list[_Candidate], evidence: list[Evidence], *, min_share: float
) -> list[Evidence]:
    """Holm over the candidates with an estimate; statuses; the culprit is the largest share.

    When a prompt and a model that arrived together on the same traffic both pass, no culprit
    is named (both become contributors): which one matters is then exactly the question a
    confounded verdict answers with its evidence.
    """
    tested = [i for i, e in enumerate(evidence) if e.p_value is not None and e.status == "no_data"]
    # order of the gates: significance, direction, drift, share
    raw = [evidence[i].p_value for i in tested]
    adjusted = compare.adjust([1.0 if p is None else p for p in raw], method="holm")
    out = list(evidence)
    for i, p_adj in zip(tested, adjusted, strict=True):
        e = replace(out[i], p_adjusted=p_adj)
        status: Status
        if p_adj >= ctx.alpha:
            status = "not_significant"
        elif (e.effect or 0.0) * ctx.sign <= 0:
            status = "wrong_direction"
        elif e.sharp is False and _trend_not_shown(e, ctx) and _segment_holds(e, ctx):
            # not told from a noisy trend on one period a side, but over the stable segments
            # around the arrival, with the trend fitted, the step holds
            status = "small_share" if (e.explained_share or 0.0) < min_share else "blamed"
            e = replace(
                e,
                note=(
                    f"{e.note}; the step holds over the stable segments (buckets "
                    f"{e.segment_start}-{e.segment_end}) net of a trend: "
                    f"{fmt_effect(e.segment_effect, kind=ctx.kind)} "
                    f"[{fmt_effect(e.segment_ci_low, kind=ctx.kind)}, "
                    f"{fmt_effect(e.segment_ci_high, kind=ctx.kind)}]"
                ),
            )
        elif e.sharp is False and _trend_not_shown(e, ctx):
            # the step is significant but not clearly larger than a trend that is itself
            # not significant: thin data cannot tell a step from a drift, which is a lack of
            # evidence, not evidence of drift
            status = "not_excluded"
            e = replace(
                e,
                note=(
                    f"its step is significant but not clearly larger than the trend around it "
                    f"({fmt_effect(e.trend, kind=ctx.kind)} per {ctx.L} buckets), and that "
                    "trend is not significant either"
                ),
            )
        elif e.sharp is False:
            status = "drift"
            e = replace(
                e,
                note=(
                    f"the trend around it ({fmt_effect(e.trend, kind=ctx.kind)} per "
                    f"{ctx.L} buckets) or the change on unchanged traffic elsewhere "
                    f"({fmt_effect(e.control_effect, kind=ctx.kind)}): the step at the "
                    "arrival is not significantly larger"
                ),
            )
        elif (e.explained_share or 0.0) < min_share:
            status = "small_share"
        else:
            status = "blamed"
        out[i] = replace(e, status=status)
    blamed = sorted(
        (i for i, e in enumerate(out) if e.status == "blamed"),
        key=lambda i: -(out[i].explained_share or 0.0),
    )
    together = any(
        candidates[i].dimension != candidates[j].dimension
        and candidates[i].segments & candidates[j].segments
        and abs(candidates[i].arrival - candidates[j].arrival) <= 2
        for i in blamed
        for j in blamed
    )
    for i in blamed if together else blamed[1:]:
        out[i] = replace(out[i], status="contributor")
    if blamed and not together:  # the culprit first
        out.insert(0, out.pop(blamed[0]))
    return out


def _confounded(
    ctx: _Context, candidates: list[_Candidate], evidence: list[Evidence], *, min_share: float
) -> tuple[Evidence, list[str], str] | None:
    """A prompt and a model that arrived together and together explain the shift."""
    by_value = {(e.dimension, e.value): e for e in evidence}
    prompts = [c for c in candidates if c.dimension == "prompt"]
    models = [c for c in candidates if c.dimension == "model"]
    best: tuple[Evidence, list[str], str] | None = None
    for p in prompts:
        for m in models:
            segs = p.segments & m.segments
            if not segs or abs(p.arrival - m.arrival) > 2:
                continue
            ep, em = by_value[("prompt", p.value)], by_value[("model", m.value)]
            if "blamed" in (ep.status, em.status):
                continue

            def is_new(c: Cell, p: _Candidate = p, m: _Candidate = m) -> bool:
                return c.prompt == p.value and c.model == m.value

            def is_old(c: Cell, p: _Candidate = p, m: _Candidate = m) -> bool:
                return c.prompt == p.predecessor and c.model == m.predecessor

            def in_segs(c: Cell, segs: frozenset[tuple[str, str]] = segs) -> bool:
                return (c.route, c.environment) in segs

            basis, est, _, trend, control, note = _estimate(
                ctx,
                None,
                lambda c: is_new(c) and in_segs(c),
                lambda c: is_old(c) and in_segs(c),
                min(p.arrival, m.arrival),
                segs,
            )
            if est is None or est.p_value >= ctx.alpha or est.effect * ctx.sign <= 0:
                continue
            margin = 1.0 if control is not None else 1.5
            sharp = _sharp(est, trend, sign=ctx.sign, alpha=ctx.drift_alpha, margin=margin)
            if not sharp or not _beats(est, control, sign=ctx.sign, alpha=ctx.alpha):
                continue
            share = _explained(
                ctx, min(p.arrival, m.arrival), lambda c: is_new(c) and in_segs(c), est.effect
            )
            share = share or 0.0
            if share < min_share:
                continue
            joint = _with_estimate(
                Evidence(
                    dimension="prompt+model",
                    value=f"{p.value} + {m.value}",
                    predecessor=f"{p.predecessor} + {m.predecessor}",
                    status="not_separable",
                    share_before=min(p.share_before, m.share_before),
                    share_after=min(p.share_after, m.share_after),
                    arrival_index=min(p.arrival, m.arrival),
                    rollback=p.rollback and m.rollback,
                    note=note,
                ),
                est,
                basis,
            )
            joint = replace(joint, explained_share=share, trend=trend.value if trend else None)
            names = [
                f"prompt {p.value} (from {p.predecessor})",
                f"model {m.value} (from {m.predecessor})",
            ]
            sep = _to_separate(ctx, p, m, ep, em, est)
            if best is None or abs(est.effect) > abs(best[0].effect or 0.0):
                best = (joint, names, sep)
    return best


def _to_separate(
    ctx: _Context, p: _Candidate, m: _Candidate, ep: Evidence, em: Evidence, joint: Estimate
) -> str:
    """What data would tell the two apart: a holdout cell, or a bigger one."""
    routes = sorted({r for r, _ in p.segments & m.segments})
    var = pooled_variance([c.moments for c in ctx.cells if c.prompt in (p.value, p.predecessor)])
    need = math.ceil(7.85 * var / (joint.effect**2)) if joint.effect and var > 0 else None
    size = f" (about {need:,} responses in it would show an effect of this size)" if need else ""
    held = [e for e in (ep, em) if e.status != "not_separable" and e.effect is not None]
    if held and all(e.status == "contributor" for e in (ep, em)):
        parts = "; ".join(
            f"{e.dimension} {e.value} alone: {fmt_effect(e.effect, kind=ctx.kind)} "
            f"[{fmt_effect(e.ci_low, kind=ctx.kind)}, {fmt_effect(e.ci_high, kind=ctx.kind)}]"
            for e in held
        )
        return (
            f"where they ran apart both seem to matter ({parts}); a larger holdout of each "
            "alone, or one change at a time, would tell how much each contributes."
        )
    if held:
        parts = "; ".join(
            f"{e.dimension} {e.value} alone: {fmt_effect(e.effect, kind=ctx.kind)} "
            f"[{fmt_effect(e.ci_low, kind=ctx.kind)}, {fmt_effect(e.ci_high, kind=ctx.kind)}] "
            f"on {e.n_new if e.n_new < e.n_old else e.n_old:,} holdout responses"
            for e in held
        )
        return (
            f"the holdout that separates them is too small to tell ({parts}); grow it{size} "
            "or canary one change at a time."
        )
    return (
        f"no traffic on {', '.join(routes)} ran {p.value} with {m.predecessor} or "
        f"{p.predecessor} with {m.value}; to separate them, send a small holdout (e.g. 5%) to "
        f"{p.predecessor} with {m.value}{size}, or canary one change at a time."
    )
