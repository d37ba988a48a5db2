"""The reports' words: numbers formatted for people, severities, and each verdict in plain
sentences with its evidence. Pure functions of an incident row and its evidence JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from promptblame.analysis.attribution.verdict import fmt_effect

SEVERITIES = ("critical", "major", "minor", "info")

# What the tests' internal names mean to a reader (names as analysis records them).
TEST_NAMES = {
    "mantel_haenszel_z": "Mantel–Haenszel test, stratified by route and environment",
    "welch_t": "Welch's t-test",
    "mann_whitney_u": "Mann–Whitney U test",
    "fisher_exact": "Fisher's exact test",
    "two_proportion_z": "two-proportion z-test",
    "paired_t": "paired t-test",
    "wilcoxon_signed_rank": "Wilcoxon signed-rank test",
    "mcnemar_exact": "McNemar's exact test",
    "bootstrap": "bootstrap",
    "none": "no test",
}


def ci_label(e: Mapping[str, Any], *, long: bool = False) -> str:
    """ "95% CI", or the level an evidence's interval was computed at (an untested arrival's
    test is stricter, ~99.8%); incidents stored before the level was recorded are at 95%."""
    level = f"{100 * (e.get('ci_level') or 0.95):.3g}%"
    return f"{level} confidence interval" if long else f"{level} CI"


def test_name(name: str | None) -> str:
    """A test's name for people: "Welch's t-test", never "welch_t"."""
    if not name:
        return "n/a"
    return TEST_NAMES.get(name, name.replace("_", " "))


def words(text: str | None) -> str:
    """snake_case identifiers (verdicts, reasons, bases) as words."""
    return "" if text is None else str(text).replace("_", " ")


def unit_of(metric: str) -> str:
    """The unit a metric is measured in, from its name (response.latency_ms, cost_usd, ...)."""
    name = metric.rsplit(".", 1)[-1].lower()
    if name.endswith("_ms") or name == "latency":
        return "ms"
    if name.endswith("_usd") or name.startswith("cost"):
        return "$"
    if "tokens" in name:
        return "tokens"
    return ""


def _digits(width: float | None, default: int = 3) -> int:
    """Decimals that fit an interval this wide: two significant digits of its width."""
    if width is None or not math.isfinite(width) or width <= 0:
        return default
    return max(0, min(6, 1 - math.floor(math.log10(width))))


def _unzero(text: str) -> str:
    """No "-0.0": a number that rounds to zero has no sign."""
    if text[:1] in "+-" and float(text[1:]) == 0:
        return text[1:]
    return text


def fmt_value(
    x: float | None, *, metric: str = "", kind: str = "mean", width: float | None = None
) -> str:
    """A level of a metric: a rate as a percentage, else the value with its unit."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if kind == "proportion":
        return _unzero(f"{x * 100:.{min(_digits(width and width * 100, 1), 2)}f}") + "%"
    unit = unit_of(metric)
    text = _unzero(f"{x:.{_digits(width, 3 if abs(x) < 100 else 0)}f}")
    if unit == "$":
        return "$" + text if not text.startswith("-") else "-$" + text[1:]
    return f"{text} {unit}" if unit else text


def fmt_delta(
    x: float | None, *, metric: str = "", kind: str = "mean", width: float | None = None
) -> str:
    """A difference: points for rates (and 0..1 scores), the metric's unit otherwise; signed,
    never "-0.0"; decimals that fit the confidence interval when its width is given."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    unit = unit_of(metric)
    if not unit and (kind == "proportion" or abs(x) <= 1):
        d = min(_digits(width and width * 100, 1), 2)
        return _unzero(f"{x * 100:+.{d}f}") + " pt"
    text = _unzero(f"{x:+.{_digits(width, 3 if abs(x) < 100 else 0)}f}")
    if unit == "$":
        return text[0] + "$" + text[1:] if text[:1] in "+-" else "$" + text
    return f"{text} {unit}" if unit else text


def fmt_age(t: datetime | None, now: datetime | None = None) -> str:
    """How long ago: "3 h", "2 d"."""
    if t is None:
        return "–"
    secs = max(((now or datetime.now(UTC)) - t).total_seconds(), 0)
    if secs < 3600:
        return f"{int(secs // 60)} min"
    if secs < 2 * 86400:
        return f"{int(secs // 3600)} h"
    return f"{int(secs // 86400)} d"


def fmt_span(seconds: float) -> str:
    """A duration in the largest whole unit: "24 hours", "7 days"."""
    td = timedelta(seconds=seconds)
    if td.total_seconds() % 86400 == 0 and td.days >= 2:
        return f"{td.days} days"
    hours = td.total_seconds() / 3600
    return f"{hours:g} hours" if hours != 1 else "1 hour"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 1e-16" if p < 1e-16 else f"{p:.2g}"


def p_eq(p: float | None) -> str:
    """The p-value in a sentence: "p = 0.003", or "p < 1e-16" below what the tests resolve."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else _unzero(f"{x:.{digits}f}")


def fmt_pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def fmt_ts(t: datetime | str | None) -> str:
    if t is None:
        return "–"
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def severity(row: dict[str, Any], evidence: dict[str, Any]) -> str:
    """critical / major / minor for regressions by size, info for improvements.

    Points on 0..1 metrics (pass rates, judge scores); relative to the level before otherwise.
    """
    if row.get("direction") == "improvement" or evidence.get("reason") == "arrival_underpowered":
        return "info"  # an improvement, or a version not verified where nothing shifted
    effect = abs(float(row.get("effect") or 0.0))
    level = evidence.get("level_before")
    if evidence.get("metric_kind") != "proportion" and level and abs(level) > 1:
        effect = effect / abs(level)
    return "critical" if effect >= 0.10 else "major" if effect >= 0.03 else "minor"


def headline(row: dict[str, Any], ev: dict[str, Any]) -> str:
    """One line for lists and the page title."""
    where = row["app"] + (f"/{row['route']}" if row["route"] else "")
    kind = ev.get("metric_kind", "mean")
    eff = fmt_effect(row.get("effect"), kind=kind)
    moved = "regressed" if row["direction"] == "regression" else "improved"
    if row["verdict"] == "culprit" and (ev.get("culprit") or row.get("culprit")):
        c = ev.get("culprit")
        # lists carry no evidence: the row's own "dimension value" then
        who = f"{c['dimension'].capitalize()} {c['value']}" if c else row["culprit"].capitalize()
        return f"{who} {moved} {row['metric']} on {where} by {eff}"
    if row["verdict"] == "confounded":
        return f"{row['metric']} {moved} on {where} by {eff}: confounded ({row['culprit']})"
    if row["verdict"] == "insufficient_evidence" and ev.get("reason") == "arrival_underpowered":
        x: dict[str, Any] = next(
            (c for c in ev.get("candidates", []) if c.get("status") == "not_excluded"), {}
        )
        n = (
            f" ({x.get('n_new', 0):,} new vs {x.get('n_old', 0):,} old responses;"
            f" about {x['n_needed']:,} a side would decide it)"
            if x.get("n_needed")
            else ""
        )
        who = (row["culprit"] or "a version").capitalize()
        return (
            f"{who} not verified on {row['metric']} on {where}: too little traffic to tell"
            f" whether it changed it{n}; no shift detected"
        )
    if row["verdict"] == "insufficient_evidence":
        who = row["culprit"] or "a version that arrived then"
        return (
            f"{row['metric']} {moved} on {where} by {eff}: not enough evidence ({who} not excluded)"
        )
    cause = {"traffic_mix": "a traffic-mix change", "drift": "gradual drift"}.get(
        ev.get("cause") or "", ""
    )
    why = f" ({cause})" if cause else ""
    return f"{row['metric']} {moved} on {where} by {eff}: no version caused it{why}"


def explanation(row: dict[str, Any], ev: dict[str, Any]) -> list[str]:
    """The verdict's reasoning as short sentences, numbers included."""
    kind = ev.get("metric_kind", "mean")

    def f(x: float | None) -> str:
        return fmt_effect(x, kind=kind)

    out: list[str] = []
    c = ev.get("culprit")
    if row["verdict"] == "culprit" and c:
        verb = "The rollback to" if c.get("rollback") else "The arrival of"
        out.append(
            f"{verb} {c['dimension']} {c['value']} (replacing {c['predecessor']}) changed "
            f"{row['metric']} by {f(c['effect'])} ({ci_label(c)} {f(c['ci_low'])} to"
            f" {f(c['ci_high'])}),"
            f" {p_eq(c.get('p_adjusted') or c.get('p_value'))}."
        )
        if c.get("explained_share") is not None:
            out.append(f"It explains {c['explained_share']:.0%} of the shift in the aggregate.")
        if c.get("basis") == "concurrent":
            out.append(
                f"Compared with {c['predecessor']} on the same hours while both served traffic,"
                f" stratified by route and environment ({c.get('strata', 0)} strata)."
            )
        elif c.get("basis") == "before_after":
            out.append(
                "The versions never served side by side, so this compares the hours before and"
                " after the arrival at the same time of day"
                + ("; the step is sharper than the trend around it." if c.get("sharp") else ".")
            )
        if c.get("scope_route"):
            out.append(f"The effect is confined to route {c['scope_route']}.")
    elif row["verdict"] == "confounded":
        tied = [x for x in ev.get("candidates", []) if x.get("status") == "not_separable"]
        names = ", ".join(f"{x['dimension']} {x['value']}" for x in tied) or row["culprit"]
        out.append(
            f"Confounded: {names} changed together, so the data cannot say which one moved "
            f"{row['metric']}."
        )
        j = ev.get("joint")
        if j and j.get("effect") is not None:
            out.append(
                f"Together they changed it by {f(j['effect'])} ({ci_label(j)} {f(j['ci_low'])} to"
                f" {f(j['ci_high'])}), {p_eq(j.get('p_value'))}."
            )
        if ev.get("to_separate"):
            out.append(f"To separate them: {ev['to_separate']}.")
    elif row["verdict"] == "insufficient_evidence":
        for x in ev.get("candidates", []):
            if x.get("status") != "not_excluded":
                continue
            measured = (
                f"changed it by {f(x['effect'])} ({ci_label(x)} {f(x['ci_low'])} to"
                f" {f(x['ci_high'])})"
                f" on {x.get('n_new', 0):,} new vs {x.get('n_old', 0):,} old responses"
                if x.get("ci_low") is not None
                else "could not be measured on comparable traffic"
            )
            if ev.get("reason") == "arrival_underpowered":  # no shift: the bound is a small effect
                bound = abs(x.get("needed_effect") or 0.0)
                out.append(
                    f"Not excluded: {x['dimension']} {x['value']} (replacing {x['predecessor']})"
                    f" {measured}, which does not exclude an effect of {f(-bound)} or {f(bound)}"
                    " (0.2 per-response SD), so the data can neither blame it nor clear it. The"
                    " change-point detector found no shift here."
                )
            else:
                out.append(
                    f"Not excluded: {x['dimension']} {x['value']} (replacing {x['predecessor']})"
                    f" {measured}; {f(x.get('needed_effect'))} would explain the shift, so the"
                    " data can neither blame it nor clear it."
                )
            if x.get("n_needed"):
                out.append(f"About {x['n_needed']:,} responses on each side would decide it.")
    else:
        d = ev.get("decomposition")
        if ev.get("cause") == "traffic_mix" and d:
            out.append(
                f"No version explains it: traffic moved between routes/environments. Of the"
                f" {f(d['total'])} change, {f(d['mix'])} is mix and {f(d['within'])} is within"
                " segments (see the decomposition)."
            )
        elif ev.get("cause") == "drift":
            out.append(
                "No version explains it: the metric drifted gradually; no arrival of a version"
                " stands out from the trend around it."
            )
        else:
            out.append("No prompt or model version explains this shift.")
    return out
