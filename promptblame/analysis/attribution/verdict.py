"""Output of attribution: the verdict and the evidence behind it, JSON-ready.

A verdict is stored as incident evidence and rendered in reports, so every number that led to
it is kept: each version considered (blamed or not, and why not), the aggregate change and its
mix/within decomposition.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Literal

from promptblame.analysis.attribution.decompose import Decomposition

VerdictKind = Literal[
    "culprit",
    "confounded",
    "insufficient_evidence",  # a version arrived that the data can neither blame nor exclude
    "no_version_cause",
    "no_shift",
    "insufficient_data",
]
Direction = Literal["regression", "improvement"]
Basis = Literal["concurrent", "before_after"]
Status = Literal[
    "blamed",  # the culprit
    "contributor",  # also significant, explains less than the culprit
    "not_significant",
    "not_excluded",  # not significant, but its CI still holds an effect that explains the shift
    "wrong_direction",  # significant, but against the shift
    "small_share",  # real but explains too little of the shift
    "drift",  # before/after step no larger than the trend around it
    "not_separable",  # changed together with another candidate, no traffic separates them
    "no_data",
]


@dataclass(frozen=True)
class Evidence:
    """One version considered: its arrival and its effect against its predecessor."""

    dimension: Literal["prompt", "model", "prompt+model"]
    value: str  # e.g. "summarize@v7", or "summarize@v7 + gpt-4o-2024-08-06" for prompt+model
    predecessor: str
    status: Status
    share_before: float  # the value's share of its routes' traffic before / after the shift
    share_after: float
    arrival_index: int | None  # first bucket where it carried half its later share
    rollback: bool  # the value had served this traffic before its predecessor
    basis: Basis | None = None  # concurrent (same buckets) or before_after (same time of day)
    effect: float | None = None  # new - predecessor on comparable traffic
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float = 0.95  # of ci_low..ci_high: an untested arrival's test is stricter
    p_value: float | None = None
    p_adjusted: float | None = None  # Holm over the candidates (and routes, when scoped)
    n_new: int = 0
    n_old: int = 0
    mean_new: float | None = None
    mean_old: float | None = None
    strata: int = 0
    test: str | None = None
    explained_share: float | None = None  # effect x change in traffic share / aggregate change
    scope_route: str | None = None  # set when the effect is confined to one route
    scope_environment: str | None = None
    trend: float | None = None  # before/after: mean per-window trend around the arrival
    trend_se: float | None = None
    sharp: bool | None = None  # before/after: the step beats that trend and control traffic
    control_effect: float | None = None  # before/after: same windows, other routes, no change
    control_se: float | None = None  # its standard error
    beats_control: bool | None = None  # before/after: moved more than that control traffic
    needed_effect: float | None = None  # effect that would explain min_share of the shift
    n_needed: int | None = None  # not_excluded: responses per side that would decide it
    note: str = ""
    # the label whose move put it into service at arrival_index (a known deploy time), when
    # the arrival came from the label history rather than from its traffic share
    arrival_label: str | None = None
    # before/after: the step over the stable segments either side of the arrival (bounded by
    # change points and other arrivals), net of a linear trend and time of day (`segments`)
    segment_effect: float | None = None
    segment_ci_low: float | None = None
    segment_ci_high: float | None = None
    segment_p_value: float | None = None
    segment_start: int | None = None
    segment_end: int | None = None
    # before/after: the step over the same segments without a trend (level + step + time of
    # day): the test of an arrival the detector found no change around (`_underpowered`)
    level_effect: float | None = None
    level_se: float | None = None
    level_n_new: int = 0  # responses of the new version / its predecessor in the segments
    level_n_old: int = 0


@dataclass(frozen=True)
class Verdict:
    """What moved the metric at one shift, with the evidence.

    kind: culprit | confounded | insufficient_evidence | no_version_cause | no_shift |
    insufficient_data. insufficient_evidence: a version arrived with the shift and its test
    could neither blame it nor exclude it (the candidate is `not_excluded`, with n each side
    and the n that would decide); "no version cause" is only said when every version that
    arrived was tested and excluded, or the shift is explained by traffic mix or a trend.
    culprit: the blamed Evidence (kind culprit). candidates: every version considered.
    joint: for confounded, the effect of the combination against the old combination.
    cause: for no_version_cause, "traffic_mix" or "drift"; decomposition always when computable.
    """

    kind: VerdictKind
    direction: Direction | None
    index: int | None  # first bucket of the new level (a culprit's arrival when there is one)
    start: datetime | int | None
    metric_kind: str
    higher_is_better: bool
    aggregate_effect: float | None  # mean after - before over the comparison windows
    level_before: float | None
    level_after: float | None
    window: int  # buckets per side in the comparison windows
    culprit: Evidence | None = None
    candidates: tuple[Evidence, ...] = ()
    joint: Evidence | None = None
    to_separate: str | None = None
    cause: Literal["traffic_mix", "drift"] | None = None
    decomposition: Decomposition | None = None
    reason: str | None = None  # machine-readable, for no_shift / insufficient_data
    detected_index: int | None = None  # where the change-point detector put the shift
    detector_p_value: float | None = None  # the change point's p-value, when detected
    # other change points that were steps of the same version's rollout (staged rollouts,
    # repeated steps): one verdict per (version, direction), these buckets as its evidence
    steps: tuple[int, ...] = ()
    # the detector saw a drift (a ramp) rather than a step: its end bucket (None: still
    # moving) and slope per bucket
    drift_end_index: int | None = None
    drift_slope: float | None = None
    summary: str = ""

    @property
    def blamed(self) -> tuple[str, str] | None:
        """(dimension, value) of the culprit, if any."""
        return (self.culprit.dimension, self.culprit.value) if self.culprit else None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types: datetimes as ISO 8601, NaN/inf as None."""
        clean: dict[str, Any] = _clean(asdict(self))
        return clean


def at_level(v: Verdict, level: float) -> Verdict:
    """The verdict with its evidence's intervals labelled as computed: at `level`."""

    def lv(e: Evidence | None) -> Evidence | None:
        return None if e is None else replace(e, ci_level=level)

    return replace(
        v,
        culprit=lv(v.culprit),
        joint=lv(v.joint),
        candidates=tuple(replace(e, ci_level=level) for e in v.candidates),
    )


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def fmt_effect(e: float | None, *, kind: str) -> str:
    """Points on a 0..1 metric (pass/fail or score), plain number otherwise."""
    if e is None:
        return "n/a"
    text = f"{e * 100:+.1f} pt" if kind == "proportion" or abs(e) <= 1 else f"{e:+.3g}"
    return text[1:] if float(text.split()[0]) == 0 else text  # never "-0.0 pt"


def at_time(start: datetime | int | None, index: int | None) -> str:
    """Where a shift is, for people: its bucket's start time, the index only without one."""
    if isinstance(start, datetime):
        return f"{start:%Y-%m-%d %H:%M} UTC"
    return f"bucket {index}"


def culprit_summary(v: Verdict, e: Evidence) -> str:
    where = " on route " + e.scope_route if e.scope_route else ""
    if e.scope_environment:
        where += f" in {e.scope_environment}"
    verb = "rollback to" if e.rollback else "arrival of"
    if e.arrival_label:
        where += f" (label {e.arrival_label} moved to it)"
    ci = (
        f"[{fmt_effect(e.ci_low, kind=v.metric_kind)}, {fmt_effect(e.ci_high, kind=v.metric_kind)}]"
    )
    share = f", explains {e.explained_share:.0%} of the shift" if e.explained_share else ""
    return (
        f"{(v.direction or 'shift').capitalize()} at {at_time(v.start, v.index)}: "
        f"{verb} {e.dimension} "
        f"{e.value} (from {e.predecessor}){where}, "
        f"{fmt_effect(e.effect, kind=v.metric_kind)} {ci} p={_p(e.p_value)} "
        f"({e.basis.replace('_', '/') if e.basis else 'n/a'}){share}."
    )


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"
