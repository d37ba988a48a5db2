"""View models of the reports, built from the store; the templates only lay them out.

Numbers come from the same store methods and statistics the JSON API uses (`mean_ci`,
`version_score_sums`, `compare_groups`, `experiment_report`), so the page and the API agree.
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
from scipy import stats

from promptblame.analysis.attribution.verdict import fmt_effect
from promptblame.analysis.service import (
    CompareSpec,
    ExperimentSpec,
    compare_groups,
    experiment_report,
)
from promptblame.analysis.summary import mean_ci
from promptblame.errors import NotFound
from promptblame.reports import charts
from promptblame.store import ResponseFilter, Store

SEVERITIES = ("critical", "major", "minor", "info")
SAMPLE_PAIRS = 6
SAMPLE_CHARS = 1200
SAMPLE_ROWS = 200  # per side, the newest in its window
SAMPLE_BUCKETS = 2  # buckets each side of the shift the samples come from


# -- formatting helpers (also used by the templates) ---------------------------------------


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


def _prompt_key(pid: str, pv: str) -> str:
    return "" if not pid and not pv else f"{pid}@{pv}"


def _model_key(model: str, mv: str) -> str:
    return model if mv in ("", model) else f"{model}@{mv}"


def _api(path: str, **params: Any) -> str:
    q = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items() if v}
    return path + ("?" + urlencode(q) if q else "")


# -- the verdict in plain words -------------------------------------------------------------


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
class IncidentView:
    row: dict[str, Any]
    ev: dict[str, Any]
    severity: str
    headline: str
    explanation: list[str]
    chart_svg: str
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
    cells = [
        c
        for c in store.attribution_cells(
            project,
            app=row["app"],
            metric=row["metric"],
            source=row["source"],
            since=since,
            until=until,
            bucket_seconds=bs,
        )
        if not route or c["route"] == route
    ]
    # The rest of the reads run while the chart is drawn: the store's engine releases the GIL
    # and matplotlib holds it, so on two cores the page costs about the longer of the two.
    # Only that one thread uses the store meanwhile.
    with ThreadPoolExecutor(max_workers=1) as pool:
        reads = pool.submit(
            lambda: (
                _diffs(store, project, ev),
                _samples(store, project, row, ev, before, after),
                store.incident_revisions(project, incident_id),
                store.alerts(project, incident_id=incident_id, limit=20),
            )
        )
        chart = _incident_chart(cells, row, ev)
        versions = _version_rows(row, ev, cells, before, after)
        diffs, samples, revisions, alerts = reads.result()
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
    return IncidentView(
        row=row,
        ev=ev,
        severity=severity(row, ev),
        headline=headline(row, ev),
        explanation=explanation(row, ev),
        chart_svg=chart,
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
    )


def _series_points(cells: list[dict[str, Any]]) -> list[charts.Point]:
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
    var = np.maximum(sq - tot * tot / np.maximum(n, 1), 0) / np.maximum(n - 1, 1)
    half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * np.sqrt(var / np.maximum(n, 1))
    return [
        charts.Point(
            t,
            float(mean[i]) if n[i] else None,
            float(mean[i] - half[i]) if n[i] > 1 else None,
            float(mean[i] + half[i]) if n[i] > 1 else None,
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


def _incident_chart(cells: list[dict[str, Any]], row: dict[str, Any], ev: dict[str, Any]) -> str:
    start: datetime = row["shift_start"]
    markers = _rollouts(cells, "prompt", "prompt") + _rollouts(cells, "model", "model_label")
    detected = start
    if ev.get("detected_index") is not None and ev.get("index") is not None:
        detected = start + timedelta(
            seconds=int(row["bucket_seconds"]) * (ev["detected_index"] - ev["index"])
        )
    markers.append(charts.Marker(detected, "change point", "change"))
    per: dict[datetime, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    dim = "prompt"
    if len({c["prompt"] for c in cells}) < 2 and len({c["model_label"] for c in cells}) > 1:
        dim = "model_label"
    for c in cells:
        per[c["bucket"]][c[dim] or "(none)"] += c["n"]
    ts = sorted(per)
    labels = sorted(
        {v for t in ts for v in per[t]}, key=lambda v: min(t for t in ts if v in per[t])
    )
    shares = {v: [per[t].get(v, 0.0) / (sum(per[t].values()) or 1.0) for t in ts] for v in labels}
    return charts.incident_chart(
        _series_points(cells),
        markers,
        metric=row["metric"],
        levels=(start, ev.get("level_before"), ev.get("level_after")),
        times=ts,
        shares=shares,
        share_title="prompt" if dim == "prompt" else "model",
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
    route (responses with an output first)."""
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
    rows_b = store.list_responses(project, fb, limit=SAMPLE_ROWS)
    rows_a = store.list_responses(project, fa, limit=SAMPLE_ROWS)
    by_case = {r["case_id"]: r for r in rows_b if r["case_id"]}
    by_route: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(rows_b, key=lambda r: not r["output"]):
        by_route[r["route"]].append(r)
    # Eval cases scored on both sides: the most regressed first (the same test used by
    # /v1/compare's paired tests), so the sample shows what got worse.
    scored: dict[str, tuple[float, float]] = {}
    if any(r["case_id"] in by_case for r in rows_a if r["case_id"]):
        for x in store.paired_values(project, fb, fa, metric=row["metric"], source=row["source"]):
            scored[x["case_id"]] = (float(x["a"]), float(x["b"]))
    worse = -1.0 if row["direction"] == "regression" else 1.0

    def order(r: dict[str, Any]) -> tuple[bool, float, bool]:
        a_b = scored.get(r["case_id"])
        drop = worse * (a_b[1] - a_b[0]) if a_b else 0.0
        return (r["case_id"] not in by_case, -drop, not r["output"])

    pairs: list[SamplePair] = []
    used: set[str] = set()
    for r in sorted(rows_a, key=order):
        if len(pairs) >= SAMPLE_PAIRS:
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
        pairs.append(SamplePair(match, _clip(m), _clip(r)))
    return pairs


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


@dataclass
class OverviewView:
    project: str
    incidents: list[dict[str, Any]]
    counts: dict[str, int]
    trends: list[Trend]
    alerts: list[dict[str, Any]]
    rollouts: list[dict[str, Any]]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


TREND_BUCKET = 6 * 3600
TREND_DAYS = 14
MAX_TRENDS = 12


def overview_view(store: Store, project: str, *, now: datetime | None = None) -> OverviewView:
    now = now or datetime.now(UTC)
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
    )


def _trends(store: Store, project: str, now: datetime) -> list[Trend]:
    """The last TREND_DAYS with data of each scored series (its own end, not today's)."""
    out = []
    for s in store.detection_series(project, now - timedelta(days=90), 1)[:MAX_TRENDS]:
        rows = store.metric_series(
            project,
            ResponseFilter(app=s["app"], since=now - timedelta(days=90)),
            metric=s["metric"],
            source=s["source"],
            bucket_seconds=TREND_BUCKET,
        )
        if not rows:
            continue
        cut = rows[-1]["bucket"] - timedelta(days=TREND_DAYS)
        rows = [r for r in rows if r["bucket"] >= cut and r["n"]]
        marks = [
            i["shift_start"]
            for i in store.series_incidents(
                project, app=s["app"], metric=s["metric"], source=s["source"]
            )
            if i["shift_start"] >= cut
        ]
        out.append(
            Trend(
                app=s["app"],
                metric=s["metric"],
                source=s["source"],
                svg=charts.sparkline(
                    [r["bucket"] for r in rows], [r["total"] / r["n"] for r in rows], marks=marks
                ),
                last=rows[-1]["total"] / rows[-1]["n"],
                n=int(sum(r["n"] for r in rows)),
            )
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


def comparison_view(store: Store, project: str, spec: CompareSpec) -> ComparisonView:
    store.materialize_scores()
    answer = compare_groups(store, project, spec)

    res = {**asdict(answer.comparison), "significant": answer.comparison.significant}
    groups = {
        g: {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(f).items() if v}
        for g, f in (("A", spec.a), ("B", spec.b))
    }
    label = "B − A"
    return ComparisonView(
        title=f"{spec.metric}: B vs A",
        metric=spec.metric,
        source=answer.source,
        result=res,
        warnings=[*answer.comparison.warnings, *answer.warnings],
        sequential=answer.sequential,
        svg=charts.effect_chart([(label, res["effect"], res["ci_low"], res["ci_high"])]),
        groups=groups,
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


def experiment_view(store: Store, project: str, spec: ExperimentSpec) -> ExperimentView:
    store.materialize_scores()
    report = experiment_report(store, project, spec)
    by_metric: dict[str, list[tuple[str, float | None, float | None, float | None]]] = defaultdict(
        list
    )
    for r in report.get("results", []):
        by_metric[r["metric"]].append(
            (f"{r['arm']} vs {r['control']}", r["effect"], r["ci_low"], r["ci_high"])
        )
    params: list[tuple[str, str]] = [("metric", m) for m in spec.metrics]
    if spec.control:
        params.append(("control", spec.control))
    if spec.source:
        params.append(("source", spec.source))
    return ExperimentView(
        experiment=spec.experiment,
        report=report,
        charts={m: charts.effect_chart(rows) for m, rows in by_metric.items()},
        api=f"/v1/experiments/{quote(spec.experiment, safe='')}?{urlencode(params)}",
    )
