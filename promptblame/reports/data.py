"""View models of the reports, built from the store; the templates only lay them out.

Numbers come from the same store methods and statistics the JSON API uses (`mean_ci`,
`version_score_sums`, `compare_groups`, `experiment_report`), so the page and the API agree.
"""

from __future__ import annotations

import contextvars
import difflib
import json
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from promptblame.analysis.detection import coverage
from promptblame.analysis.service import (
    CompareSpec,
    ExperimentSpec,
    compare_groups,
    experiment_report,
)
from promptblame.analysis.summary import mean_ci
from promptblame.errors import NotFound
from promptblame.releases import rollouts
from promptblame.releases.incident import release_info
from promptblame.reports import charts
from promptblame.reports.words import (
    SEVERITIES,
    explanation,
    fmt_delta,
    fmt_num,
    fmt_ts,
    fmt_value,
    headline,
    severity,
    unit_of,
)
from promptblame.review import calibration
from promptblame.settings import Settings
from promptblame.store import ResponseFilter, Store

SAMPLE_PAIRS = 6
SAMPLE_CHARS = 1200
SAMPLE_ROWS = 200  # per side, the newest in its window
_PAIRING = ("event_id", "ts", "route", "case_id", "status")  # what choosing the pairs reads
SAMPLE_BUCKETS = 2  # buckets each side of the shift the samples come from


def _prompt_key(pid: str, pv: str) -> str:
    return "" if not pid and not pv else f"{pid}@{pv}"


def _model_key(model: str, mv: str) -> str:
    return model if mv in ("", model) else f"{model}@{mv}"


def _api(path: str, **params: Any) -> str:
    q = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items() if v}
    return path + ("?" + urlencode(q) if q else "")


# -- incident ------------------------------------------------------------------------------


@dataclass
class VersionRow:
    prompt: str
    model: str
    n: int
    mean: float | None
    low: float | None
    high: float | None
    share_before: float
    share_after: float
    role: str  # culprit | predecessor | ""


@dataclass
class Diff:
    title: str
    lines: list[tuple[str, str]]  # (add | del | ctx | hunk, text)
    note: str = ""


@dataclass
class SamplePair:
    match: str  # "same eval case c12" / "same route billing"
    before: dict[str, Any]
    after: dict[str, Any]


@dataclass
class WhatNow:
    """The next step's facts: what serves the affected traffic now and how much of it, how
    many responses came from the blamed version since the shift, what to roll back to.
    (The releases' labels and a Rollback form go in this panel: `partials/what_now.html`.)"""

    dimension: str  # prompt | model (the culprit's, else prompt)
    serving: list[tuple[str, float]]  # version → share of the traffic in the last day of data
    window: tuple[datetime, datetime] | None  # that last day
    since_shift: int  # responses on the incident's app/route since the shift
    from_culprit: int  # of which from the blamed version
    culprit: str
    predecessor: str
    explore: str = ""  # the responses since the shift, in the explorer
    explore_worse: str = ""  # those of them that failed the metric (rates) — the regression
    release: dict[str, Any] | None = None  # labels serving the culprit, and the rollback


@dataclass
class IncidentView:
    row: dict[str, Any]
    ev: dict[str, Any]
    severity: str
    headline: str
    explanation: list[str]
    chart: IncidentChart
    versions: list[VersionRow]
    before: tuple[datetime, datetime]
    after: tuple[datetime, datetime]
    candidates: list[dict[str, Any]]
    decomposition: dict[str, Any] | None
    diffs: list[Diff]
    samples: list[SamplePair]
    revisions: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    links: list[tuple[str, str]]
    kind: str = "mean"
    what_now: WhatNow | None = None


def incident_view(
    store: Store, project: str, incident_id: str, *, now: datetime | None = None
) -> IncidentView:
    row = store.incident(project, incident_id)
    if row is None:
        raise NotFound(f"no incident {incident_id!r}")
    ev: dict[str, Any] = json.loads(row.pop("evidence") or "{}")
    bs = int(row["bucket_seconds"])
    start: datetime = row["shift_start"]
    window = timedelta(seconds=bs * max(int(ev.get("window") or 24), 1))
    before, after = (start - window, start), (start, start + window)
    now = now or datetime.now(UTC)
    since, until = start - timedelta(days=7), min(start + timedelta(days=7), now)
    until = max(until, after[1])
    route = row["route"]
    series = (row["app"], row["metric"], row["source"])
    # The reads the chart does not need run in a thread while this one reads the chart's cells
    # and draws it: the store's engine releases the GIL (and the embedded store reads on two
    # connections) while matplotlib holds it, so on two cores the page costs about the longer
    # of the two. The thread runs in a copy of this context, so its reads share the request's
    # run of the scored-table job (`reads_share_one_job_run`).
    with ThreadPoolExecutor(max_workers=1) as pool:
        reads = pool.submit(
            contextvars.copy_context().run,
            lambda: (
                _diffs(store, project, ev),
                _samples(store, project, row, ev, before, after),
                store.incident_revisions(project, incident_id),
                store.alerts(project, incident_id=incident_id, limit=20),
                _what_now(store, project, row, ev),
            ),
        )
        cells = [
            c
            for c in _cells(
                store, project, since=since, until=until, bucket_seconds=bs, only=series
            )
            if (not route or c["route"] == route)
            and (not row.get("environment") or c["environment"] == row["environment"])
        ]
        moves = _label_moves(store, project, cells, since, until)
        chart = _incident_chart(cells, row, ev)
        chart.svg = _draw_incident(chart, row, ev, cells, moves)
        versions = _version_rows(row, ev, cells, before, after)
        diffs, samples, revisions, alerts, what_now = reads.result()
    base = {"app": row["app"], "route": route}
    links = [
        ("This incident, its evidence and revisions", f"/v1/incidents/{quote(incident_id)}"),
        (
            "Per-version table (same window)",
            _api(
                "/v1/versions",
                **base,
                metric=row["metric"],
                source=row["source"],
                since=before[0],
                until=after[1],
            ),
        ),
        (
            "The metric per hour with change points",
            _api(
                "/v1/series",
                **base,
                metric=row["metric"],
                source=row["source"],
                bucket=f"{bs // 60}m",
                since=since,
                until=until,
            ),
        ),
        ("Responses after the shift", _api("/v1/responses", **base, since=start, until=after[1])),
    ]
    row["trust"] = calibration.flagger(store, project)(row["metric"], row["source"])
    return IncidentView(
        row=row,
        ev=ev,
        severity=severity(row, ev),
        headline=headline(row, ev),
        explanation=[*explanation(row, ev), *_level_words(chart, row, ev)],
        chart=chart,
        versions=versions,
        before=before,
        after=after,
        candidates=list(ev.get("candidates") or []),
        decomposition=ev.get("decomposition"),
        diffs=diffs,
        samples=samples,
        revisions=revisions,
        alerts=alerts,
        links=links,
        kind=str(ev.get("metric_kind") or "mean"),
        what_now=what_now,
    )


def _version_label(r: dict[str, Any], dim: str) -> str:
    if dim == "model":
        return _model_key(r["model"], r["model_version"])
    if dim == "prompt+model":
        p = _prompt_key(r["prompt_id"], r["prompt_version"])
        return f"{p} + {_model_key(r['model'], r['model_version'])}"
    return _prompt_key(r["prompt_id"], r["prompt_version"]) or "(none)"


def _what_now(store: Store, project: str, row: dict[str, Any], ev: dict[str, Any]) -> WhatNow:
    c = ev.get("culprit") or {}
    dim = str(c.get("dimension") or "prompt")
    where = {"app": row["app"], "route": row["route"], "environment": row.get("environment", "")}
    since_shift = store.version_counts(project, ResponseFilter(**where, since=row["shift_start"]))
    count: dict[str, int] = defaultdict(int)
    for r in since_shift:
        count[_version_label(r, dim)] += int(r["responses"])
    serving: list[tuple[str, float]] = []
    window = None
    if since_shift:
        last = max(r["last_seen"] for r in since_shift)
        window = (last - timedelta(days=1), last)
        recent: dict[str, int] = defaultdict(int)
        for r in store.version_counts(project, ResponseFilter(**where, since=window[0])):
            recent[_version_label(r, dim)] += int(r["responses"])
        total = sum(recent.values()) or 1
        serving = sorted(((v, n / total) for v, n in recent.items()), key=lambda x: -x[1])
    q = {k: v for k, v in where.items() if v}
    q["since"] = row["shift_start"].strftime("%Y-%m-%dT%H:%M")
    explore = "/reports/responses?" + urlencode(q)
    worse = ""
    if ev.get("metric_kind") == "proportion":
        bad = {"max": "0"} if row["direction"] == "regression" else {"min": "1"}
        worse = explore + "&" + urlencode({"metric": row["metric"], **bad})
    return WhatNow(
        release=release_info(store, project, {**row, "evidence": ev}),
        explore=explore,
        explore_worse=worse,
        dimension=dim,
        serving=serving[:5],
        window=window,
        since_shift=sum(count.values()),
        from_culprit=count.get(str(c.get("value") or ""), 0),
        culprit=str(c.get("value") or ""),
        predecessor=str(c.get("predecessor") or ""),
    )


def _series_points(cells: list[dict[str, Any]], *, rate: bool) -> list[charts.Point]:
    """Mean per bucket with its 95% interval: Wilson's for a rate (it stays inside [0, 1]),
    Student's t otherwise (as /v1/series)."""
    acc: dict[datetime, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for c in cells:
        a = acc[c["bucket"]]
        a[0] += c["n"]
        a[1] += c["total"]
        a[2] += c["total_sq"]
    ts = sorted(acc)
    if not ts:
        return []
    n, tot, sq = (np.array([acc[t][i] for t in ts]) for i in range(3))
    mean = tot / np.maximum(n, 1)
    if rate:
        low, high = proportion_confint(
            np.clip(tot, 0, n), np.maximum(n, 1), alpha=0.05, method="wilson"
        )
        low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
        ok = n > 0
    else:
        var = np.maximum(sq - tot * tot / np.maximum(n, 1), 0) / np.maximum(n - 1, 1)
        half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * np.sqrt(var / np.maximum(n, 1))
        low, high = mean - half, mean + half
        ok = n > 1
    return [
        charts.Point(
            t,
            float(mean[i]) if n[i] else None,
            float(low[i]) if ok[i] else None,
            float(high[i]) if ok[i] else None,
            int(n[i]),
        )
        for i, t in enumerate(ts)
    ]


def _rollouts(cells: list[dict[str, Any]], dim: str, field_: str) -> list[charts.Marker]:
    """First bucket where a value absent at the start carries at least 5% of the traffic."""
    per: dict[datetime, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c in cells:
        per[c["bucket"]][c[field_]] += c["n"]
    ts = sorted(per)
    seen = {v for t in ts[:3] for v in per[t]}
    out = []
    for t in ts[3:]:
        total = sum(per[t].values()) or 1.0
        for v, n in per[t].items():
            if v and v not in seen and n / total >= 0.05:
                seen.add(v)
                out.append(charts.Marker(t, f"{dim} {v}", dim))
    return out[-6:]


@dataclass
class Levels:
    """The plotted series' own mean on each side of the shift (response-weighted): the dashed
    lines, and the numbers the page states about them."""

    split: datetime
    start: datetime  # first plotted bucket
    end: datetime  # end of the last plotted bucket
    before: float | None
    after: float | None
    n_before: int
    n_after: int


@dataclass
class TrendFit:
    """A straight line through the plotted series (least squares, weighted by responses): how
    a drift is drawn, since a step would say something happened at one time."""

    start: datetime
    end: datetime
    at_start: float
    at_end: float
    per_day: float


@dataclass
class IncidentChart:
    """What the incident chart plots, as numbers (tests compare these with the SVG)."""

    series: str  # which series, in words
    points: list[charts.Point]
    levels: Levels | None
    trend: TrendFit | None
    within: dict[str, tuple[float | None, float | None]]  # traffic mix: route → levels
    share_dim: str  # prompt | model | route
    times: list[datetime]
    shares: dict[str, list[float]]
    rate: bool
    svg: str = ""


def _level_words(chart: IncidentChart, row: dict[str, Any], ev: dict[str, Any]) -> list[str]:
    """The chart's own numbers in words, so the text and the lines agree."""
    kind = str(ev.get("metric_kind") or "mean")

    def val(x: float | None) -> str:
        return fmt_value(x, metric=row["metric"], kind=kind)

    lv, t = chart.levels, chart.trend
    out = []
    if lv is not None and lv.before is not None and lv.after is not None:
        out.append(
            f"On the chart ({chart.series}) the level is {val(lv.before)} from"
            f" {fmt_ts(lv.start)} to the shift ({lv.n_before:,} scores) and {val(lv.after)} from"
            f" the shift to {fmt_ts(lv.end)} ({lv.n_after:,} scores): the dashed lines."
        )
    if t is not None:
        out.append(
            f"On the chart ({chart.series}) the metric moves by"
            f" {fmt_delta(t.per_day, metric=row['metric'], kind=kind)} a day, from"
            f" {val(t.at_start)} to {val(t.at_end)}: the dashed trend line."
        )
    if chart.within:
        parts = ", ".join(f"{k} {val(b)} → {val(a)}" for k, (b, a) in chart.within.items())
        out.append(f"Each {chart.share_dim}'s own level, before → after (coloured lines): {parts}.")
    return out


def _pooled(cells: list[dict[str, Any]]) -> tuple[float | None, int]:
    n = sum(c["n"] for c in cells)
    return (sum(c["total"] for c in cells) / n if n else None), int(n)


def _levels(cells: list[dict[str, Any]], split: datetime, bs: int) -> Levels | None:
    if not cells:
        return None
    before, n_b = _pooled([c for c in cells if c["bucket"] < split])
    after, n_a = _pooled([c for c in cells if c["bucket"] >= split])
    return Levels(
        split=split,
        start=min(c["bucket"] for c in cells),
        end=max(c["bucket"] for c in cells) + timedelta(seconds=bs),
        before=before,
        after=after,
        n_before=n_b,
        n_after=n_a,
    )


def _trend(points: list[charts.Point], bs: int) -> TrendFit | None:
    shown = [p for p in points if p.mean is not None and p.n]
    if len(shown) < 3:
        return None
    t0 = shown[0].t
    x = np.array([(p.t - t0).total_seconds() / 86400 for p in shown])
    y = np.array([p.mean for p in shown], dtype=float)
    slope, icept = np.polyfit(x, y, 1, w=np.sqrt([p.n for p in shown]))
    end = shown[-1].t + timedelta(seconds=bs)
    days = (end - t0).total_seconds() / 86400
    return TrendFit(t0, end, float(icept), float(icept + slope * days), float(slope))


def _shares_of(
    cells: list[dict[str, Any]], dim: str
) -> tuple[list[datetime], dict[str, list[float]]]:
    per: dict[datetime, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c in cells:
        per[c["bucket"]][c[dim] or "(none)"] += c["n"]
    ts = sorted(per)
    labels = sorted(
        {v for t in ts for v in per[t]}, key=lambda v: min(t for t in ts if v in per[t])
    )
    shares = {v: [per[t].get(v, 0.0) / (sum(per[t].values()) or 1.0) for t in ts] for v in labels}
    return ts, shares


MAX_WITHIN = 5  # routes drawn with their own levels on a traffic-mix chart


def _incident_chart(
    cells: list[dict[str, Any]], row: dict[str, Any], ev: dict[str, Any]
) -> IncidentChart:
    """The series the headline is about (the incident's app, and its route and environment
    when it has them) with that series' levels, or its trend for a drift; below it the driver:
    each route's share for a traffic-mix verdict, else each version's."""
    start: datetime = row["shift_start"]
    bs = int(row["bucket_seconds"])
    rate = ev.get("metric_kind") == "proportion"
    where = row["app"] + (f"/{row['route']}" if row["route"] else "")
    if row.get("environment"):
        where += f" in {row['environment']}"
    points = _series_points(cells, rate=rate)
    cause = ev.get("cause") if row["verdict"] == "no_version_cause" else None
    levels = None if cause == "drift" else _levels(cells, start, bs)
    trend = _trend(points, bs) if cause == "drift" else None
    within: dict[str, tuple[float | None, float | None]] = {}
    if cause == "traffic_mix":
        dim = "route"
        if len({c["route"] for c in cells}) < 2 and len({c["environment"] for c in cells}) > 1:
            dim = "environment"
        ranked = sorted(
            {c[dim] for c in cells}, key=lambda v: -sum(c["n"] for c in cells if c[dim] == v)
        )
        for v in ranked[:MAX_WITHIN]:
            mine = [c for c in cells if c[dim] == v]
            within[v or "(none)"] = (
                _pooled([c for c in mine if c["bucket"] < start])[0],
                _pooled([c for c in mine if c["bucket"] >= start])[0],
            )
    else:
        dim = "prompt"
        if len({c["prompt"] for c in cells}) < 2 and len({c["model_label"] for c in cells}) > 1:
            dim = "model_label"
    times, shares = _shares_of(cells, dim)
    return IncidentChart(
        series=f"{row['metric']} on {where}, {row['source']} scores",
        points=points,
        levels=levels,
        trend=trend,
        within=within,
        share_dim={"model_label": "model"}.get(dim, dim),
        times=times,
        shares=shares,
        rate=rate,
    )


def _label_moves(
    store: Store, project: str, cells: list[dict[str, Any]], since: datetime, until: datetime
) -> list[charts.Marker]:
    """Label moves and rollout decisions of the prompts on this chart: deploys the analysis
    knows the time of."""
    prompts = {str(c.get("prompt", "")).rpartition("@")[0] for c in cells}
    moves = [
        charts.Marker(
            e["claimed_at"],
            f"label {e['label']}{' (' + e['model'] + ')' if e['model'] else ''}"
            f" → {e['prompt_id']}@{e['to_version']}",
            "label",
        )
        for e in store.label_history(project)
        if e["prompt_id"] in prompts and since <= e["claimed_at"] <= until
    ]
    for st in store.rollout_states(project):
        if st["prompt_id"] not in prompts:
            continue
        log = store.rollout_log(project, st["rollout_id"])
        start = [charts.Marker(log[0]["claimed_at"], "start", "rollout")] if log else []
        for m in start + _decision_markers(st, log):
            if since <= m.t <= until and m.label != "completed":  # a label move shows that
                what = "experiment" if rollouts.is_experiment(st) else "rollout"
                moves.append(charts.Marker(m.t, f"{what} {st['rollout_id']}: {m.label}", m.kind))
    return sorted(moves, key=lambda m: m.t)[-6:]


# verdicts on a version's arrival that the change-point detector did not mark: no change point
_NOT_DETECTED = ("known_arrival", "arrival_underpowered")


def _draw_incident(
    chart: IncidentChart,
    row: dict[str, Any],
    ev: dict[str, Any],
    cells: list[dict[str, Any]],
    moves: Sequence[charts.Marker] = (),
) -> str:
    start: datetime = row["shift_start"]
    markers = _rollouts(cells, "prompt", "prompt") + _rollouts(cells, "model", "model_label")
    markers += list(moves)
    detected = start
    if ev.get("detected_index") is not None and ev.get("index") is not None:
        detected = start + timedelta(
            seconds=int(row["bucket_seconds"]) * (ev["detected_index"] - ev["index"])
        )
    if ev.get("reason") not in _NOT_DETECTED:
        markers.append(charts.Marker(detected, "change point", "change"))
    calm = [c for c in charts.PALETTE if c != charts.RED]
    colors = {v: calm[i % len(calm)] for i, v in enumerate(chart.shares)}
    culprit = ev.get("culprit") or {}
    if culprit.get("value") in colors and chart.share_dim == culprit.get("dimension"):
        colors[culprit["value"]] = charts.RED
    segments: list[charts.Segment] = []
    lv = chart.levels
    if lv is not None:
        if lv.before is not None:
            segments.append(
                charts.Segment(lv.start, lv.split, lv.before, label="level", gid="level-before")
            )
        if lv.after is not None:
            segments.append(charts.Segment(lv.split, lv.end, lv.after, gid="level-after"))
    if chart.trend is not None:
        t = chart.trend
        segments.append(
            charts.Segment(t.start, t.end, t.at_start, t.at_end, label="trend", gid="trend")
        )
    if lv is not None:
        for i, (v, (b, a)) in enumerate(chart.within.items()):
            color = colors.get(v, calm[i % len(calm)])
            if b is not None:
                segments.append(
                    charts.Segment(lv.start, lv.split, b, label=f"{v} level", color=color)
                )
            if a is not None:
                segments.append(charts.Segment(lv.split, lv.end, a, color=color))
    return charts.incident_chart(
        chart.points,
        markers,
        metric=row["metric"],
        segments=segments,
        times=chart.times,
        shares=chart.shares,
        share_title=chart.share_dim,
        colors=colors,
        rate=chart.rate,
    )


def _version_rows(
    row: dict[str, Any],
    ev: dict[str, Any],
    cells: list[dict[str, Any]],
    before: tuple[datetime, datetime],
    after: tuple[datetime, datetime],
) -> list[VersionRow]:
    """Per prompt × model version over both windows, summed from the cells: the same sums and
    CI as /v1/versions over that window (both windows start on bucket boundaries)."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    n_side: dict[str, dict[tuple[str, str], float]] = {
        "b": defaultdict(float),
        "a": defaultdict(float),
    }
    for c in cells:
        key = (c["prompt"], c["model_label"])
        side = "b" if before[0] <= c["bucket"] < before[1] else ""
        side = "a" if after[0] <= c["bucket"] < after[1] else side
        if side:
            n_side[side][key] += c["n"]
            acc = sums[key]
            acc[0] += c["n"]
            acc[1] += c["total"]
            acc[2] += c["total_sq"]
    tot_b, tot_a = sum(n_side["b"].values()) or 1.0, sum(n_side["a"].values()) or 1.0
    culprit = ev.get("culprit") or {}
    out = []
    for key, (n, total, total_sq) in sums.items():
        ci = mean_ci(n=int(n), total=total, total_sq=total_sq)
        out.append(
            VersionRow(
                prompt=key[0],
                model=key[1],
                n=ci.n,
                mean=ci.mean,
                low=ci.low,
                high=ci.high,
                share_before=n_side["b"].get(key, 0.0) / tot_b,
                share_after=n_side["a"].get(key, 0.0) / tot_a,
                role=_role(culprit, key),
            )
        )
    out.sort(key=lambda r: (-r.share_before, -r.share_after, r.prompt, r.model))
    return out


def _role(culprit: dict[str, Any], key: tuple[str, str]) -> str:
    if not culprit:
        return ""
    dim = culprit.get("dimension")
    label = {"prompt": key[0], "model": key[1], "prompt+model": f"{key[0]} + {key[1]}"}.get(
        str(dim), ""
    )
    if label == culprit.get("value"):
        return "culprit"
    if label == culprit.get("predecessor"):
        return "predecessor"
    return ""


def _prompt_part(value: str) -> tuple[str, str] | None:
    pid, sep, version = value.split(" + ")[0].rpartition("@")
    return (pid, version) if sep else None


def _diffs(store: Store, project: str, ev: dict[str, Any]) -> list[Diff]:
    """Template diffs of the blamed (or inseparable) prompt versions against their predecessors."""
    blamed = [ev["culprit"]] if ev.get("culprit") else []
    blamed += [c for c in ev.get("candidates") or [] if c.get("status") == "not_separable"]
    out: list[Diff] = []
    for e in blamed:
        if e["dimension"] not in ("prompt", "prompt+model"):
            continue
        new, old = _prompt_part(e["value"]), _prompt_part(e["predecessor"])
        if new is None or old is None:
            continue
        title = f"{old[0]}@{old[1]} → {new[0]}@{new[1]}"
        registry = {
            (r["prompt_id"], r["version"]): r
            for pid in {old[0], new[0]}
            for r in store.list_prompt_versions(project, pid)
        }
        a, b = registry.get(old), registry.get(new)
        if a is None or b is None:
            missing = " and ".join(f"{p[0]}@{p[1]}" for p, r in ((old, a), (new, b)) if r is None)
            note = (
                f"{missing} not in the prompt registry: register templates with"
                " PUT /v1/prompts/{prompt_id}/versions/{version} to see the diff here."
            )
            out.append(Diff(title, [], note))
            continue
        lines: list[tuple[str, str]] = []
        for line in list(
            difflib.unified_diff(
                a["template"].splitlines(), b["template"].splitlines(), lineterm="", n=3
            )
        )[2:]:
            kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "ctx")
            lines.append((kind, line))
        out.append(Diff(title, lines, "" if lines else "The templates are identical."))
    return out


def _split_version(value: str) -> tuple[str, str]:
    name, sep, version = value.rpartition("@")
    return (name, version) if sep else (value, "")


def _side_filter(
    dim: str, value: str, base: ResponseFilter, since: datetime, until: datetime
) -> ResponseFilter:
    p = _prompt_part(value) if dim in ("prompt", "prompt+model") else None
    m = value.split(" + ")[-1] if dim in ("model", "prompt+model") else ""
    model, mv = _split_version(m) if m else ("", "")
    return ResponseFilter(
        app=base.app,
        route=base.route,
        prompt_id=p[0] if p else "",
        prompt_version=p[1] if p else "",
        model=model,
        model_version=mv,
        since=since,
        until=until,
    )


def _samples(
    store: Store,
    project: str,
    row: dict[str, Any],
    ev: dict[str, Any],
    before: tuple[datetime, datetime],
    after: tuple[datetime, datetime],
) -> list[SamplePair]:
    """Responses just before and after, paired by eval case when both sides have one, else by
    route (answered responses first). Pairs are chosen from the rows' keys; only the chosen
    responses are read whole (the texts of 200 rows per side cost seconds on a large table)."""
    base = ResponseFilter(app=row["app"], route=row["route"])
    near = timedelta(seconds=int(row["bucket_seconds"]) * SAMPLE_BUCKETS)
    before = (max(before[0], before[1] - near), before[1])
    after = (after[0], min(after[1], after[0] + near))
    c = ev.get("culprit")
    if c:
        fb = _side_filter(c["dimension"], c["predecessor"], base, *before)
        fa = _side_filter(c["dimension"], c["value"], base, *after)
    else:
        fb = ResponseFilter(app=base.app, route=base.route, since=before[0], until=before[1])
        fa = ResponseFilter(app=base.app, route=base.route, since=after[0], until=after[1])
    rows_b = store.list_responses(project, fb, limit=SAMPLE_ROWS, columns=_PAIRING)
    # The after side shows the problem: responses that scored on the worse side of the level
    # before the shift (failed, for a rate) come first, then the rest.
    worse_range = _worse_range(row, ev)
    failing = (
        store.list_responses(
            project, fa, limit=SAMPLE_ROWS, columns=_PAIRING, score=(row["metric"], *worse_range)
        )
        if worse_range
        else []
    )
    bad_ids = {r["event_id"] for r in failing}
    rows_a = failing + [
        r
        for r in store.list_responses(project, fa, limit=SAMPLE_ROWS, columns=_PAIRING)
        if r["event_id"] not in bad_ids
    ]
    by_case = {r["case_id"]: r for r in rows_b if r["case_id"]}
    by_route: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(rows_b, key=lambda r: r["status"] != "ok"):
        by_route[r["route"]].append(r)
    # Eval cases scored on both sides: the most regressed first (the same test used by
    # /v1/compare's paired tests), so the sample shows what got worse.
    scored: dict[str, tuple[float, float]] = {}
    if any(r["case_id"] in by_case for r in rows_a if r["case_id"]):
        for x in store.paired_values(project, fb, fa, metric=row["metric"], source=row["source"]):
            scored[x["case_id"]] = (float(x["a"]), float(x["b"]))
    worse = -1.0 if row["direction"] == "regression" else 1.0

    def order(r: dict[str, Any]) -> tuple[bool, bool, float, bool]:
        a_b = scored.get(r["case_id"])
        drop = worse * (a_b[1] - a_b[0]) if a_b else 0.0
        return (
            r["event_id"] not in bad_ids,
            r["case_id"] not in by_case,
            -drop,
            r["status"] != "ok",
        )

    chosen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    used: set[str] = set()
    for r in sorted(rows_a, key=order):
        if len(chosen) >= SAMPLE_PAIRS:
            break
        m = by_case.get(r["case_id"]) if r["case_id"] else None
        match = f"same eval case {r['case_id']}" if m else ""
        if m is not None and r["case_id"] in scored:
            a, b = scored[r["case_id"]]
            match += f": {row['metric']} {fmt_num(a, 2)} → {fmt_num(b, 2)}"
        if m is None or m["event_id"] in used:
            m = next((x for x in by_route[r["route"]] if x["event_id"] not in used), None)
            match = f"same route {r['route'] or '(none)'}"
        if m is None:
            continue
        used.add(m["event_id"])
        chosen.append((match, m, r))
    ids = [x["event_id"] for _, m, r in chosen for x in (m, r)]
    whole = {x["event_id"]: x for x in store.responses_by_id(project, ids)}
    scores: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for x in store.scores_of(project, ids):
        scores[x["event_id"]].append(x)

    def side(event_id: str) -> dict[str, Any]:
        out = _clip(whole[event_id])
        # the incident's metric first: the score the sample is about
        out["scores"] = sorted(scores[event_id], key=lambda x: x["name"] != row["metric"])
        # outlined: on the side the shift moved toward (red for a regression, green else)
        out["mark"] = "" if event_id not in bad_ids else ("bad" if worse < 0 else "good")
        return out

    return [
        SamplePair(match, side(m["event_id"]), side(r["event_id"]))
        for match, m, r in chosen
        if m["event_id"] in whole and r["event_id"] in whole
    ]


def _worse_range(row: dict[str, Any], ev: dict[str, Any]) -> tuple[float, float] | None:
    """The score range of a response on the worse side of the shift: a failed (or, for an
    improvement, passed) rate, else beyond the level before it."""
    level = ev.get("level_before")
    higher_is_better = ev.get("higher_is_better", True)
    bad_low = higher_is_better == (row["direction"] == "regression")
    if ev.get("metric_kind") == "proportion":
        return (0.0, 0.0) if bad_low else (1.0, 1.0)
    if level is None:
        return None
    return (-1e300, float(level)) if bad_low else (float(level), 1e300)


def _clip(r: dict[str, Any]) -> dict[str, Any]:
    out = {
        k: r.get(k)
        for k in (
            "event_id",
            "ts",
            "route",
            "prompt_id",
            "prompt_version",
            "model",
            "model_version",
            "status",
            "case_id",
        )
    }
    for k in ("input", "output"):
        text = r.get(k) or ""
        out[k] = text[:SAMPLE_CHARS] + (" …" if len(text) > SAMPLE_CHARS else "")
    return out


# -- overview ------------------------------------------------------------------------------


@dataclass
class Trend:
    app: str
    metric: str
    source: str
    svg: str
    last: float | None
    n: int
    href: str = ""  # the responses behind it, in the explorer
    trust: dict[str, str] | None = None  # its evaluator is below a trust rule


@dataclass
class OverviewView:
    project: str
    incidents: list[dict[str, Any]]
    counts: dict[str, int]
    trends: list[Trend]
    alerts: list[dict[str, Any]]
    rollouts: list[dict[str, Any]]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # series the detection job cannot analyse over its window, with the reason (None: not
    # asked, e.g. without settings); analysed: how many it does analyse
    not_analysed: list[dict[str, Any]] | None = None
    analysed: int = 0


TREND_BUCKET = 6 * 3600
TREND_DAYS = 14
MAX_TRENDS = 12


def overview_view(
    store: Store, project: str, *, now: datetime | None = None, settings: Settings | None = None
) -> OverviewView:
    """With `settings`, also the series detection cannot analyse and why (`coverage`)."""
    now = now or datetime.now(UTC)
    cover = coverage(store, settings, project, now=now) if settings is not None else None
    incidents = []
    for status in ("open", "acknowledged"):
        for r in store.incidents(project, status=status, limit=200):
            ev = json.loads(r.pop("evidence") or "{}")
            r["severity"] = severity(r, ev)
            r["headline"] = headline(r, ev)
            r["kind"] = ev.get("metric_kind", "mean")
            incidents.append(r)
    incidents.sort(key=lambda r: (SEVERITIES.index(r["severity"]), -r["shift_start"].timestamp()))
    counts = {s: sum(1 for r in incidents if r["severity"] == s) for s in SEVERITIES}
    return OverviewView(
        project=project,
        incidents=incidents,
        counts=counts,
        trends=_trends(store, project, now),
        alerts=store.alerts(project, limit=10),
        rollouts=_rollout_rows(store, project),
        not_analysed=None if cover is None else cover["not_analysed"],
        analysed=0 if cover is None else len(cover["analysed"]),
    )


def _trends(store: Store, project: str, now: datetime) -> list[Trend]:
    """The last TREND_DAYS with data of each scored series (its own end, not today's)."""
    ends = store.series_ends(project, since=now - timedelta(days=90), until=now)
    if not ends:
        return []
    # every series' last TREND_DAYS (and the bucket its window starts in), not all 90 days
    since = min(ends) - timedelta(days=TREND_DAYS, seconds=TREND_BUCKET)
    sums: dict[tuple[str, str, str], dict[datetime, list[float]]] = defaultdict(
        lambda: defaultdict(lambda: [0.0, 0.0])
    )
    for c in store.attribution_cells(
        project, since=since, until=now, bucket_seconds=TREND_BUCKET, detail=False
    ):
        acc = sums[(c["app"], c["metric"], c["source"])][c["bucket"]]
        acc[0] += c["n"]
        acc[1] += c["total"]
    out = []
    flag = calibration.flagger(store, project)
    shifts: dict[tuple[str, str, str], list[datetime]] = defaultdict(list)  # in one read
    for i in store.incidents_since(project, since):
        shifts[(i["app"], i["metric"], i["source"])].append(i["shift_start"])
    for (app, metric, source), per in sorted(sums.items())[:MAX_TRENDS]:
        ts = sorted(t for t in per if per[t][0])
        if not ts:
            continue
        cut = ts[-1] - timedelta(days=TREND_DAYS)
        ts = [t for t in ts if t >= cut]
        means = [per[t][1] / per[t][0] for t in ts]
        marks = [t for t in shifts[(app, metric, source)] if t >= cut]
        out.append(
            Trend(
                app=app,
                metric=metric,
                source=source,
                svg=charts.sparkline(ts, means, marks=marks),
                trust=flag(metric, source),
                last=means[-1],
                n=int(sum(per[t][0] for t in ts)),
                href="/reports/responses?"
                + urlencode(
                    {"app": app, "metric": metric, "since": ts[0].strftime("%Y-%m-%dT%H:%M")}
                ),
            )
        )
    return out


def _cells(
    store: Store,
    project: str,
    *,
    since: datetime,
    until: datetime,
    bucket_seconds: int,
    only: tuple[str, str, str] | None = None,
) -> list[dict[str, Any]]:
    """Attribution cells of one series (app, metric, source) or, in one scan, of all."""
    app, metric, source = only or ("", "", "")
    return store.attribution_cells(
        project,
        since=since,
        until=until,
        bucket_seconds=bucket_seconds,
        app=app,
        metric=metric,
        source=source,
    )


_DECISION = {
    "advance": "→ {pct}",
    "complete": "completed",
    "rollback": "rolled back",
    "pause": "paused",
    "resume": "resumed",
    "abort": "aborted",
    "promote": "promoted",
}


def _decision_markers(st: dict[str, Any], log: list[dict[str, Any]]) -> list[charts.Marker]:
    steps = json.loads(st["config"]).get("steps") or [0]
    return [
        charts.Marker(
            e["claimed_at"],
            _DECISION[e["action"]].format(pct=f"{steps[min(e['step'], len(steps) - 1)]:g} %"),
            "rollout",
        )
        for e in log
        if e["action"] in _DECISION
    ]


def rollout_charts(store: Store, project: str, st: dict[str, Any]) -> list[dict[str, Any]]:
    """Per guardrail, the chart of its estimates over time, with the decisions marked."""
    plan = rollouts.plan_of(st)
    markers = _decision_markers(st, store.rollout_log(project, st["rollout_id"]))
    estimates = rollouts.guardrail_paths(store, project, st)
    flag = calibration.flagger(store, project)  # once per page
    out = []
    for g in plan.guardrails:
        per_arm = estimates.get(g.metric, {})
        checks = [c for path in per_arm.values() for _, c in path]
        seen = [c for c in checks if c.n_candidate and c.n_incumbent]
        rate = bool(seen) and all(c.rate for c in seen)
        threshold = checks[-1].threshold if checks else g.max_drop
        paths = {
            arm: [
                charts.Estimate(t, c.effect, c.low, c.high) for t, c in path if c.effect is not None
            ]
            for arm, path in per_arm.items()
        }
        svg = charts.guardrail_chart(
            paths, markers, metric=g.metric, threshold=threshold, rate=rate
        )
        out.append(
            {
                "metric": g.metric,
                "svg": svg,
                "looks": sum(map(len, paths.values())),
                "warnings": calibration.flags_for(store, project, [(g.metric, g.source)], flag),
            }
        )
    return out


def _rollout_rows(store: Store, project: str) -> list[dict[str, Any]]:
    rows = store.version_counts(project, ResponseFilter())
    rows.sort(key=lambda r: r["first_seen"], reverse=True)
    return rows[:10]


# -- comparisons and experiments -----------------------------------------------------------


@dataclass
class ComparisonView:
    title: str
    metric: str
    source: str
    result: dict[str, Any]
    warnings: list[str]
    sequential: dict[str, Any] | None
    svg: str
    groups: dict[str, dict[str, Any]]
    api: str
    kind: str = "mean"  # proportion: effects in points, estimates in %
    width: float | None = None  # the CI's width: how many digits the numbers deserve


PROPORTION_TESTS = {"two_proportion_z", "fisher_exact", "mcnemar_exact", "mantel_haenszel_z"}


def _ci_width(low: float | None, high: float | None) -> float | None:
    return None if low is None or high is None else high - low


def comparison_view(store: Store, project: str, spec: CompareSpec) -> ComparisonView:
    store.materialize_scores()
    answer = compare_groups(store, project, spec)

    res = {**asdict(answer.comparison), "significant": answer.comparison.significant}
    groups = {
        g: {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(f).items() if v}
        for g, f in (("A", spec.a), ("B", spec.b))
    }
    label = "B − A"
    kind = "proportion" if res.get("test") in PROPORTION_TESTS else "mean"
    return ComparisonView(
        title=f"{spec.metric}: B vs A",
        metric=spec.metric,
        source=answer.source,
        result=res,
        warnings=[
            *answer.comparison.warnings,
            *answer.warnings,
            *calibration.flag_words(store, project, spec.metric, answer.source),
        ],
        sequential=answer.sequential,
        svg=charts.effect_chart(
            [(label, res["effect"], res["ci_low"], res["ci_high"])],
            points=kind == "proportion",
            unit=unit_of(spec.metric),
        ),
        groups=groups,
        kind=kind,
        width=_ci_width(res.get("ci_low"), res.get("ci_high")),
        api=json.dumps(
            {
                "metric": spec.metric,
                "source": answer.source,
                "a": groups["A"],
                "b": groups["B"],
                "test": spec.test,
                "alpha": spec.alpha,
            },
            default=str,
            indent=2,
        ),
    )


@dataclass
class ExperimentView:
    experiment: str
    report: dict[str, Any]
    charts: dict[str, str]
    api: str
    sequential: bool = False  # watched while it runs: always-valid figures lead
    warnings: list[str] = field(default_factory=list)  # evaluators below a trust rule


def experiment_view(store: Store, project: str, spec: ExperimentSpec) -> ExperimentView:
    store.materialize_scores()
    report = experiment_report(store, project, spec)
    by_metric: dict[str, list[tuple[str, float | None, float | None, float | None]]] = defaultdict(
        list
    )
    rates = set()
    for r in report.get("results", []):
        if r["test"] in PROPORTION_TESTS:
            rates.add(r["metric"])
        seq = r.get("sequential") if spec.sequential else None
        low, high = (seq["low"], seq["high"]) if seq else (r["ci_low"], r["ci_high"])
        by_metric[r["metric"]].append((f"{r['arm']} vs {r['control']}", r["effect"], low, high))
    params: list[tuple[str, str]] = [("metric", m) for m in spec.metrics]
    if spec.control:
        params.append(("control", spec.control))
    if spec.source:
        params.append(("source", spec.source))
    return ExperimentView(
        experiment=spec.experiment,
        report=report,
        charts={
            m: charts.effect_chart(rows, points=m in rates, unit=unit_of(m))
            for m, rows in by_metric.items()
        },
        api=f"/v1/experiments/{quote(spec.experiment, safe='')}?{urlencode(params)}",
        sequential=spec.sequential,
        warnings=calibration.flags_for(
            store, project, [(r["metric"], r["source"]) for r in report.get("results", [])]
        ),
    )


# -- lists: incidents, experiments, jobs ---------------------------------------------------


@dataclass
class IncidentsView:
    status: str  # open | acknowledged | resolved | all
    incidents: list[dict[str, Any]]
    counts: dict[str, int]  # per status, over every incident listed
    now: datetime


INCIDENT_STATUSES = ("open", "acknowledged", "resolved", "all")


def incidents_view(
    store: Store, project: str, *, status: str = "open", now: datetime | None = None
) -> IncidentsView:
    """Every incident (newest shift first) with severity, headline and its timeline."""
    rows = store.incidents(project, status="", limit=1000)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in INCIDENT_STATUSES[:3]}
    counts["all"] = len(rows)
    shown = []
    for r in rows:
        if status != "all" and r["status"] != status:
            continue
        ev = json.loads(r.pop("evidence") or "{}")
        r["severity"] = severity(r, ev)
        r["headline"] = headline(r, ev)
        shown.append(r)
    return IncidentsView(status, shown, counts, now or datetime.now(UTC))


@dataclass
class ExperimentsView:
    experiments: list[dict[str, Any]]


def experiments_view(store: Store, project: str) -> ExperimentsView:
    rows = store.experiments(project)
    for r in rows:
        params = [("metric", m) for m in r["metrics"]]
        r["href"] = f"/reports/experiments/{quote(r['experiment'], safe='')}?{urlencode(params)}"
    return ExperimentsView(rows)


@dataclass
class JobsView:
    jobs: list[dict[str, Any]]
    evaluators: list[dict[str, Any]]


def jobs_view(store: Store, project: str, settings: Any) -> JobsView:
    """The scheduled jobs' last runs and the evaluators' health (scores and errors)."""
    from promptblame.analysis.scoring.catalog import listing

    evaluators = listing(store, project, settings)
    health = {h["source"]: h for h in store.source_health(project)}
    for e in evaluators:
        e["health"] = health.pop(e["source"], None)
    # sources that are not configured evaluators (the apps' own scores, people, removed ones)
    others = [{"name": "", "source": src, "health": h} for src, h in health.items()]
    return JobsView(store.last_job_runs(project), evaluators + others)


# -- responses explorer, one response, one prompt --------------------------------------------

RESPONSES_PAGE = 50
SNIPPET = 240
EXPLORER_FIELDS = (
    "app",
    "route",
    "environment",
    "prompt_id",
    "prompt_version",
    "model",
    "model_version",
    "experiment",
    "variant",
)


SUGGESTIONS_TTL = 60.0  # seconds: suggestions may lag new versions by a minute
_suggested: dict[tuple[int, str], tuple[float, dict[str, list[str]]]] = {}


def _suggestions(store: Store, project: str) -> dict[str, list[str]]:
    """Values for the explorer's filter inputs, cached a minute per store and project: the
    distinct scan costs ~0.5 s at 10M responses, and a suggestion a minute old is harmless."""
    import time

    key = (id(store), project)
    hit = _suggested.get(key)
    if hit is not None and time.monotonic() - hit[0] < SUGGESTIONS_TTL:
        return hit[1]
    values = store.dimension_values(project)
    options = {
        name: sorted({v[name] for v in values if v[name]})
        for name in ("app", "prompt_id", "prompt_version", "model")
    }
    _suggested[key] = (time.monotonic(), options)
    return options


@dataclass
class ResponsesView:
    query: dict[str, str]  # the filters as given (shown back in the form)
    rows: list[dict[str, Any]]
    next_href: str | None  # the next (older) page
    options: dict[str, list[str]]  # suggestions for the filter inputs
    metrics: list[str]


def responses_view(
    store: Store,
    project: str,
    *,
    f: ResponseFilter,
    query: dict[str, str],
    search: str = "",
    score: tuple[str, float, float] | None = None,
    before: tuple[datetime, str] | None = None,
) -> ResponsesView:
    """One page of responses, newest first, filtered; a cursor (ts, event_id) pages on."""
    # Keys first, whole rows of the page after: on a large table, reading the texts of every
    # row that passes the filter costs far more than finding the page's 50 keys.
    keys = store.list_responses(
        project,
        f,
        limit=RESPONSES_PAGE + 1,
        before=before,
        columns=("event_id", "ts"),
        search=search,
        score=score,
    )
    next_href = None
    if len(keys) > RESPONSES_PAGE:
        keys = keys[:RESPONSES_PAGE]
        last = keys[-1]
        q = {k: v for k, v in query.items() if v and k != "before"}
        q["before"] = f"{last['ts'].isoformat()}|{last['event_id']}"
        next_href = "/reports/responses?" + urlencode(q)
    whole = {
        r["event_id"]: r for r in store.responses_by_id(project, [k["event_id"] for k in keys])
    }
    rows = [whole[k["event_id"]] for k in keys if k["event_id"] in whole]
    for r in rows:
        text = r.pop("output") or ""
        r["snippet"] = text[:SNIPPET] + (" …" if len(text) > SNIPPET else "")
        r.pop("input", None)
    options = _suggestions(store, project)
    metrics = store.score_names(project)
    return ResponsesView(query, rows, next_href, options, metrics)


@dataclass
class ResponseView:
    response: dict[str, Any]
    scores: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    same_case: list[dict[str, Any]]  # the same eval case answered by other versions


MAX_SAME_CASE = 3


def response_view(store: Store, project: str, event_id: str) -> ResponseView:
    found = store.responses_by_id(project, [event_id])
    if not found:
        raise NotFound(f"no response {event_id!r}")
    r = found[0]
    r["tags"] = dict(r.get("tags") or {})  # a Map arrives as key/value pairs
    same_case: list[dict[str, Any]] = []
    if r.get("case_id"):
        # the same eval case answered by other versions: the newest answer of each
        mine = (r["prompt_id"], r["prompt_version"], r["model"], r["model_version"])
        seen = {mine}
        for x in store.case_responses(project, app=r["app"], case_id=r["case_id"]):
            key = (x["prompt_id"], x["prompt_version"], x["model"], x["model_version"])
            if key not in seen and len(same_case) < MAX_SAME_CASE:
                seen.add(key)
                same_case.append(_clip(x))
        scores: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in store.scores_of(project, [x["event_id"] for x in same_case]):
            scores[s["event_id"]].append(s)
        for x in same_case:
            x["scores"] = scores[x["event_id"]]
            x["mark"] = ""
    flag = calibration.flagger(store, project)  # evaluators below a trust rule, flagged
    return ResponseView(
        response=r,
        scores=[
            {**s, "trust": flag(s["name"], s["source"])}
            for s in store.response_scores(project, event_id)
        ],
        errors=store.response_errors(project, event_id),
        same_case=same_case,
    )


@dataclass
class PromptView:
    prompt_id: str
    versions: list[dict[str, Any]]  # registry rows with their traffic
    a: str
    b: str
    diff: Diff | None
    labels: list[dict[str, Any]] = field(default_factory=list)  # current pointers
    history: list[dict[str, Any]] = field(default_factory=list)  # every move, newest first
    rollouts: list[dict[str, Any]] = field(default_factory=list)  # this prompt's, newest first


def prompt_view(
    store: Store, project: str, prompt_id: str, *, a: str = "", b: str = ""
) -> PromptView:
    """A prompt's versions (registry and traffic) and the diff of any two (default: the last
    two registered)."""
    registry = store.list_prompt_versions(project, prompt_id)
    traffic: dict[str, dict[str, Any]] = {}
    for v in store.version_counts(project, ResponseFilter(prompt_id=prompt_id)):
        t = traffic.setdefault(
            v["prompt_version"],
            {"responses": 0, "first_seen": v["first_seen"], "last_seen": v["last_seen"]},
        )
        t["responses"] += int(v["responses"])
        t["first_seen"] = min(t["first_seen"], v["first_seen"])
        t["last_seen"] = max(t["last_seen"], v["last_seen"])
    if not registry and not traffic:
        raise NotFound(f"no prompt {prompt_id!r}: not registered and never logged")
    by_version = {r["version"]: r for r in registry}
    names = [r["version"] for r in registry] + sorted(set(traffic) - set(by_version))
    versions = [
        {
            "version": v,
            "registered": v in by_version,
            "author": "",
            "created_at": None,
            **(by_version.get(v) or {}),
            **traffic.get(v, {"responses": 0, "first_seen": None, "last_seen": None}),
        }
        for v in names
    ]
    known = [r["version"] for r in registry]
    if not (a and b) and len(known) >= 2:
        a, b = a or known[-2], b or known[-1]
    diff = None
    if a and b:
        old, new = by_version.get(a), by_version.get(b)
        title = f"{prompt_id}@{a} → {prompt_id}@{b}"
        if old is None or new is None:
            missing = " and ".join(x for x, r in ((a, old), (b, new)) if r is None)
            diff = Diff(title, [], f"{missing} not in the prompt registry: no template to compare.")
        else:
            lines = [
                ({"+": "add", "-": "del", "@": "hunk"}.get(x[:1], "ctx"), x)
                for x in list(
                    difflib.unified_diff(
                        old["template"].splitlines(), new["template"].splitlines(), lineterm="", n=3
                    )
                )[2:]
            ]
            diff = Diff(title, lines, "" if lines else "The templates are identical.")
    return PromptView(
        prompt_id,
        versions,
        a,
        b,
        diff,
        labels=store.label_pointers(project, prompt_id),
        history=sorted(
            store.label_history(project, prompt_id), key=lambda e: e["claimed_at"], reverse=True
        ),
        rollouts=sorted(
            (r for r in store.rollout_states(project) if r["prompt_id"] == prompt_id),
            key=lambda r: r["claimed_at"],
            reverse=True,
        ),
    )
