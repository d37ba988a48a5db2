"""A guarded rollout's decision at one look: wait, advance, complete, roll back or pause. Pure.

The candidate and the incumbent serve side by side to units split by hash, so comparing them
over the same window is a clean experiment. At each look (the job runs every minute):

1. Sample ratio: this step's responses per arm against the step's split, with the anytime-valid
   Dirichlet-multinomial test (`sequential.always_valid_srm`, alpha 0.001: a chi-square test
   repeated every minute would pause healthy rollouts). A mismatch means logs are missing or
   the split is broken: every comparison is then untrustworthy and it is not the candidate's
   fault, so the rollout pauses.
2. Guardrails: per metric, candidate − incumbent with the always-valid mSPRT interval of
   `analysis.sequential` (oriented so that negative = worse). Looking every minute costs no
   false alarms: by Ville's inequality the chance that an identical candidate's interval ever
   falls below −max_drop is at most alpha. A guardrail regresses when the whole interval is
   below −max_drop (points, or relative to the incumbent's mean): → `on_regression`.
3. Otherwise, when the step has its minimum candidate responses and minutes: the next step;
   reaching 100 % completes the rollout (the label moves to the candidate).

A live experiment (`decide_experiment`) is the same watch without a ramp: a fixed split of
several variants, each compared with the control; SRM pauses, a regressed variant ends the
experiment (or pauses it), and nothing is ever promoted automatically.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from promptblame.analysis.moments import Moments
from promptblame.analysis.sequential import SequentialRatio, always_valid, always_valid_srm

Action = Literal["wait", "advance", "complete", "rollback", "pause"]
SRM_ALPHA = 0.001
SRM_MIN_RESPONSES = 20  # per step, before the split is judged
_NONE = Moments(0, 0.0, 0.0)


@dataclass(frozen=True, kw_only=True)
class Guardrail:
    metric: str
    source: str = ""
    higher_is_better: bool = True
    max_drop: float = 0.0
    relative: bool = False  # max_drop as a share of the incumbent's mean
    alpha: float = 0.05


@dataclass(frozen=True, kw_only=True)
class Plan:
    steps: tuple[float, ...]  # percent of traffic to the candidate, increasing, last 100
    min_responses_per_step: int
    min_minutes_per_step: float
    guardrails: tuple[Guardrail, ...]
    on_regression: Literal["rollback", "pause"] = "rollback"


@dataclass(frozen=True, kw_only=True)
class Look:
    step: int  # index into Plan.steps
    step_minutes: float  # since this step started
    step_counts: Mapping[str, int]  # responses this step: {"candidate": n, "incumbent": n}
    metrics: Mapping[str, tuple[Moments, Moments]]  # guardrail metric → (incumbent, candidate)


@dataclass(frozen=True, kw_only=True)
class Check:
    """One guardrail at this look; effect and bounds oriented (negative = candidate worse)."""

    metric: str
    n_incumbent: int
    n_candidate: int
    effect: float | None
    low: float | None
    high: float | None
    p_value: float | None
    threshold: float  # the drop that counts, in the metric's units
    regressed: bool
    rate: bool = False  # a pass/fail metric (every value 0 or 1): shown in points
    reason: str | None = None
    arm: str = "candidate"  # the variant compared with the control (experiments name it)


@dataclass(frozen=True, kw_only=True)
class Decision:
    action: Action
    reason: str
    checks: tuple[Check, ...]
    srm: SequentialRatio | None


def check(g: Guardrail, incumbent: Moments, candidate: Moments) -> Check:
    r = always_valid(a=incumbent, b=candidate, alpha=g.alpha)
    rate = all(m.n and m.total == m.total_sq for m in (incumbent, candidate))
    sign = 1.0 if g.higher_is_better else -1.0
    threshold = g.max_drop * abs(incumbent.mean) if g.relative and incumbent.n else g.max_drop
    if r.effect is None or r.low is None or r.high is None:
        effect = None if r.effect is None else sign * r.effect
        return Check(
            metric=g.metric,
            n_incumbent=incumbent.n,
            n_candidate=candidate.n,
            effect=effect,
            low=None,
            high=None,
            p_value=None,
            threshold=threshold,
            regressed=False,
            rate=rate,
            reason=r.reason,
        )
    low, high = sorted((sign * r.low, sign * r.high))
    return Check(
        metric=g.metric,
        n_incumbent=incumbent.n,
        n_candidate=candidate.n,
        effect=sign * r.effect,
        low=low,
        high=high,
        p_value=r.p_value,
        threshold=threshold,
        regressed=high < -threshold,
        rate=rate,
    )


def decide(plan: Plan, look: Look) -> Decision:
    percent = plan.steps[look.step]
    ratio = None
    if 0 < percent < 100 and sum(look.step_counts.values()) >= SRM_MIN_RESPONSES:
        ratio = always_valid_srm(
            observed=[look.step_counts.get(k, 0) for k in ("candidate", "incumbent")],
            expected=[percent, 100 - percent],
            alpha=SRM_ALPHA,
        )
    checks = tuple(check(g, *look.metrics.get(g.metric, (_NONE, _NONE))) for g in plan.guardrails)
    got = look.step_counts.get("candidate", 0) / max(1, sum(look.step_counts.values()))
    stop = _stop(
        plan,
        checks,
        ratio,
        f" at {_pct(percent)}: the candidate got {got:.1%} of this step's logged responses",
        lambda c: "",
    )
    if stop:
        return stop
    enough = look.step_counts.get("candidate", 0) >= plan.min_responses_per_step
    if enough and look.step_minutes >= plan.min_minutes_per_step:
        last = look.step + 1 >= len(plan.steps) or plan.steps[look.step + 1] >= 100
        return Decision(
            action="complete" if last else "advance",
            reason=f"guardrails hold at {_pct(percent)} after"
            f" {look.step_counts.get('candidate', 0):,} candidate responses",
            checks=checks,
            srm=ratio,
        )
    return Decision(action="wait", reason="step minimums not reached", checks=checks, srm=ratio)


def decide_experiment(
    plan: Plan,
    *,
    control: str,
    weights: Sequence[tuple[str, float]],
    counts: Mapping[str, int],
    metrics: Mapping[str, Mapping[str, Moments]],
) -> Decision:
    """One look at a fixed-split experiment: `weights` are (variant, percent) with the
    control among them, `metrics` each guardrail's moments per variant. Each guardrail's alpha
    is split over the variants compared with the control (Bonferroni), so the chance that any
    harmless variant ever ends the experiment stays within it."""
    others = max(1, len(weights) - 1)
    ratio = None
    if sum(counts.values()) >= SRM_MIN_RESPONSES:
        ratio = always_valid_srm(
            observed=[counts.get(v, 0) for v, _ in weights],
            expected=[w for _, w in weights],
            alpha=SRM_ALPHA,
        )
    checks = tuple(
        replace(check(replace(g, alpha=g.alpha / others), by_arm.get(control, _NONE), m), arm=v)
        for g in plan.guardrails
        for by_arm in [metrics.get(g.metric, {})]
        for v, _ in weights
        if v != control
        for m in [by_arm.get(v, _NONE)]
    )
    total = max(1, sum(counts.values()))
    got = ", ".join(
        f"{v} {100 * counts.get(v, 0) / total:.1f} % (of {_pct(w)})" for v, w in weights
    )
    stop = _stop(plan, checks, ratio, f": logged shares {got}", lambda c: f"variant {c.arm}: ")
    if stop:
        return stop
    return Decision(
        action="wait",
        reason="a fixed split: no automatic promotion (end it and move the label to the winner)",
        checks=checks,
        srm=ratio,
    )


def guardrail_path(
    g: Guardrail,
    incumbent: Mapping[datetime, Moments],
    candidate: Mapping[datetime, Moments],
) -> list[tuple[datetime, Check]]:
    """The guardrail's check after each time bucket, on everything up to its end: what a look
    at that moment saw (the always-valid interval may be read at every one of them)."""
    out = []
    inc = cand = _NONE
    for t in sorted(set(incumbent) | set(candidate)):
        inc, cand = inc + incumbent.get(t, _NONE), cand + candidate.get(t, _NONE)
        out.append((t, check(g, inc, cand)))
    return out


def validate_split(split: Mapping[str, float]) -> str | None:
    """Why an experiment's split is unusable, or None."""
    if len(split) < 2:
        return "give at least two variants"
    if any(not 0 < w < 100 for w in split.values()):
        return "each variant's share is a percent in (0, 100)"
    if abs(sum(split.values()) - 100) > 1e-6:
        return f"the shares must sum to 100 (they sum to {sum(split.values()):g})"
    return None


def _stop(
    plan: Plan,
    checks: tuple[Check, ...],
    ratio: SequentialRatio | None,
    shares: str,
    who: Callable[[Check], str],
) -> Decision | None:
    """Pause on a sample-ratio mismatch (`shares` says what was logged), else apply
    `on_regression` to regressed guardrails (each named by `who`), else None."""
    if ratio is not None and ratio.mismatch:
        return Decision(
            action="pause",
            reason=f"sample ratio mismatch{shares} (p = {ratio.p_value:.1g}); logs are missing"
            " or the split is broken, so no comparison can be trusted",
            checks=checks,
            srm=ratio,
        )
    bad = [c for c in checks if c.regressed]
    if bad:
        return Decision(
            action=plan.on_regression,
            reason="; ".join(who(c) + _regressed(c) for c in bad),
            checks=checks,
            srm=ratio,
        )
    return None


def guard_num(x: float | None, rate: bool) -> str:
    """A guardrail figure as people read it (pages, reasons)."""
    return "–" if x is None else _num(x, rate)


def _regressed(c: Check) -> str:
    assert c.effect is not None and c.low is not None and c.high is not None
    p = f"{c.p_value:.2g}" if c.p_value is not None else "-"
    return (
        f"{c.metric} {_num(c.effect, c.rate)} [{_num(c.low, c.rate)}, {_num(c.high, c.rate)}],"
        f" always-valid p = {p} (allowed drop {_num(-c.threshold, c.rate).lstrip('+')})"
    )


def _num(x: float, rate: bool) -> str:
    """Rates in points (−15.4 pt), other metrics in their units; never −0."""
    if not math.isfinite(x):
        return str(x)
    text = f"{x * 100:+.1f} pt" if rate else f"{x:+.3g}"
    return text.replace("-0.0 pt", "0.0 pt").replace("+0.0 pt", "0.0 pt").replace("-", "−")


def _pct(p: float) -> str:
    return f"{p:g} %"


def validate_steps(steps: Sequence[float]) -> str | None:
    """Why a step list is unusable, or None."""
    if not steps:
        return "give at least one step"
    if any(not 0 < s <= 100 for s in steps):
        return "each step is a percent in (0, 100]"
    if any(b <= a for a, b in itertools.pairwise(steps)):
        return "steps must increase"
    if steps[-1] != 100:
        return "the last step must be 100 (the candidate takes all traffic)"
    return None
