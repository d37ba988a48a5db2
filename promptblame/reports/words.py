"""The reports' words: numbers formatted for people, severities, and each verdict in plain
sentences with its evidence. Pure functions of an incident row and its evidence JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from promptblame.analysis.attribution.verdict import fmt_effect

SEVERITIES = ("critical", "major", "minor", "info")


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 1e-16" if p < 1e-16 else f"{p:.2g}"


def p_eq(p: float | None) -> str:
    """The p-value in a sentence: "p = 0.003", or "p < 1e-16" below what the tests resolve."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


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
    if row.get("direction") == "improvement":
        return "info"
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
    if row["verdict"] == "culprit" and ev.get("culprit"):
        c = ev["culprit"]
        who = f"{c['dimension'].capitalize()} {c['value']}"
        return f"{who} {moved} {row['metric']} on {where} by {eff}"
    if row["verdict"] == "confounded":
        return f"{row['metric']} {moved} on {where} by {eff}: confounded ({row['culprit']})"
    if row["verdict"] == "insufficient_evidence":
        who = row["culprit"] or "a version that arrived then"
        return (
            f"{row['metric']} {moved} on {where} by {eff}: not enough evidence ({who} not excluded)"
        )
    cause = {"traffic_mix": "a traffic-mix change", "drift": "gradual drift"}.get(
        ev.get("cause") or "", "no version"
    )
    return f"{row['metric']} {moved} on {where} by {eff}: no version caused it ({cause})"


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
            f"{row['metric']} by {f(c['effect'])} (95% CI {f(c['ci_low'])} to {f(c['ci_high'])}),"
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
                f"Together they changed it by {f(j['effect'])} (95% CI {f(j['ci_low'])} to"
                f" {f(j['ci_high'])}), {p_eq(j.get('p_value'))}."
            )
        if ev.get("to_separate"):
            out.append(f"To separate them: {ev['to_separate']}.")
    elif row["verdict"] == "insufficient_evidence":
        for x in ev.get("candidates", []):
            if x.get("status") != "not_excluded":
                continue
            measured = (
                f"changed it by {f(x['effect'])} (95% CI {f(x['ci_low'])} to {f(x['ci_high'])})"
                f" on {x.get('n_new', 0):,} new vs {x.get('n_old', 0):,} old responses"
                if x.get("ci_low") is not None
                else "could not be measured on comparable traffic"
            )
            out.append(
                f"Not excluded: {x['dimension']} {x['value']} (replacing {x['predecessor']})"
                f" {measured}; {f(x.get('needed_effect'))} would explain the shift, so the data"
                " can neither blame it nor clear it."
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
    if ev.get("level_before") is not None and ev.get("level_after") is not None:
        out.append(
            f"Level {fmt_num(ev['level_before'])} before, {fmt_num(ev['level_after'])} after"
            f" ({ev.get('window', 0)} buckets each side)."
        )
    return out
