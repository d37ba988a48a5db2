"""The detection job: for every scored series with enough data, find the shifts in a trailing
window, attribute each, and keep them as incidents (deduplicated across runs).

A series is one app's metric from one score source (mixing evaluator versions would fake a
shift). Change points are searched on the app's aggregate and on each route alone, so a
regression confined to a small route is not diluted away; a route-level shift already seen at
the app level is not reported twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from promptblame.analysis.attribution import Cell, MetricKind, Verdict, find_and_attribute
from promptblame.analysis.incidents import REPORTABLE, Series, merge
from promptblame.settings import Settings
from promptblame.store import Store

log = logging.getLogger(__name__)


@dataclass
class DetectionRun:
    series: int = 0
    opened: int = 0
    revised: int = 0
    resolved: int = 0


def run_detection(
    store: Store, settings: Settings, *, project_id: str | None = None, now: datetime | None = None
) -> DetectionRun:
    now = now or datetime.now(UTC)
    bs = settings.detection_bucket_seconds
    until = datetime.fromtimestamp(now.timestamp() // bs * bs, UTC)  # only whole buckets
    since = until - timedelta(days=settings.detection_window_days)
    run = DetectionRun()
    projects = [project_id] if project_id else store.projects_with_scores(since)
    for project in projects:
        rows = store.attribution_cells(project, since=since, until=until, bucket_seconds=bs)
        by_series: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for r in rows:
            by_series.setdefault((r["app"], r["metric"], r["source"]), []).append(r)
        known: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for i in store.incidents_since(project, since - timedelta(days=1)):
            known.setdefault((i["app"], i["metric"], i["source"]), []).append(i)
        for (app, metric, source), cells in by_series.items():
            if sum(c["n"] for c in cells) < settings.detection_min_scores:
                continue
            series = Series(project, app, metric, source, bs)
            writes = merge(
                series,
                known.get((app, metric, source), []),
                shifts(cells, since=since, bucket_seconds=bs),
                now=now,
            )
            if writes.incidents:
                store.insert_rows("incidents", writes.incidents)
            if writes.revisions:
                store.insert_rows("incident_revisions", writes.revisions)
            run.series += 1
            run.opened += writes.opened
            run.revised += writes.revised
            run.resolved += writes.resolved
    return run


def shifts(
    rows: list[dict[str, Any]], *, since: datetime, bucket_seconds: int
) -> list[tuple[str, Verdict]]:
    """(route or "" for the whole app, verdict) of every reportable shift in the cells."""
    if not rows:
        return []
    cells = [
        Cell(
            bucket=int((r["bucket"] - since).total_seconds()) // bucket_seconds,
            start=r["bucket"],
            route=r["route"],
            environment=r["environment"],
            prompt=r["prompt"],
            model=r["model_label"],
            n=r["n"],
            total=r["total"],
            total_sq=r["total_sq"],
        )
        for r in rows
    ]
    kind: MetricKind = "mean" if any(r["non_binary"] for r in rows) else "proportion"
    found = [("", v) for v in find_and_attribute(cells, bucket_seconds=bucket_seconds, kind=kind)]
    found = [(route, v) for route, v in found if v.kind in REPORTABLE]
    routes = sorted({c.route for c in cells})
    within = max(2, _ROUTE_DEDUP_SECONDS // bucket_seconds)
    if len(routes) > 1:
        for route in routes:
            mine = [c for c in cells if c.route == route]
            for v in find_and_attribute(mine, bucket_seconds=bucket_seconds, kind=kind):
                if v.kind in REPORTABLE and not _seen(found, v, within=within):
                    found.append((route, v))
    return found


# A route's share of an app-level shift is located less precisely (less data): the same
# direction within a day is the same shift, already reported at the app level.
_ROUTE_DEDUP_SECONDS = 86_400


def _seen(found: list[tuple[str, Verdict]], v: Verdict, *, within: int) -> bool:
    return any(
        f.direction == v.direction
        and f.index is not None
        and v.index is not None
        and abs(f.index - v.index) <= within
        for _, f in found
    )
