"""The detection job: for every scored series, find the shifts in a trailing window,
attribute each, and keep them as incidents (deduplicated across runs).

A series is one app's metric from one score source (mixing evaluator versions would fake a
shift). Change points are searched on the app's aggregate and on each route alone, so a
regression confined to a small route is not diluted away; a route-level shift already seen at
the app level is not reported twice.

Thin series are not skipped: each series gets the narrowest bucket (hourly by default, up to a
day) that holds enough responses on average (`plan_series`), so a small app with 200 scores in
two weeks is analysed on daily buckets. A series that still cannot be analysed is listed with
the reason (`DetectionRun.not_analysed`, and `coverage` for the API), never silently dropped.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import operator
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from promptblame.analysis.attribution import (
    Cell,
    KnownArrival,
    MetricKind,
    Verdict,
    find_and_attribute,
)
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
    not_analysed: list[dict[str, Any]] = field(default_factory=list)


# Bucket widths a thin series may be analysed on, in multiples of the configured bucket.
WIDTHS = (1, 2, 3, 4, 6, 8, 12, 24)
MIN_PER_BUCKET = 8.0  # responses per bucket on average the width is chosen to reach
MIN_BUCKETS = 12  # non-empty buckets a series needs at that width


@dataclass(frozen=True)
class SeriesPlan:
    """How one series is analysed: its bucket width, or why it is not analysed."""

    n: int  # scores in the window
    bucket_seconds: int | None  # None: not analysed
    buckets: int  # non-empty buckets at that width (at the widest tried when not analysed)
    reason: Literal["too_few_scores", "too_few_buckets"] | None = None
    detail: str = ""


def plan_series(
    bucket_starts: list[datetime],
    counts: list[int],
    *,
    since: datetime,
    until: datetime,
    bucket_seconds: int,
    min_scores: int,
) -> SeriesPlan:
    """The narrowest width (a multiple of `bucket_seconds` from WIDTHS) whose buckets hold
    MIN_PER_BUCKET responses on average over the window and of which at least MIN_BUCKETS
    are non-empty; hourly when there is enough traffic, coarser when not. Pure."""
    n = int(sum(counts))
    window = max((until - since).total_seconds(), 1.0)
    if n < min_scores:
        return SeriesPlan(
            n, None, 0, "too_few_scores", f"{n} scores in the window, {min_scores} needed"
        )
    # one offset per distinct start (a start has a row per route, environment and version)
    offsets = [
        int((b - since).total_seconds())
        for b in {b: None for b, c in zip(bucket_starts, counts, strict=True) if c}
    ]
    used = 0
    for k in WIDTHS:
        width = bucket_seconds * k
        used = len({o // width for o in offsets})
        if n / (window / width) >= MIN_PER_BUCKET and used >= MIN_BUCKETS:
            return SeriesPlan(n, width, used)
    # the widest width that still has enough buckets, even under the average wanted
    for k in reversed(WIDTHS):
        width = bucket_seconds * k
        used = len({o // width for o in offsets})
        if used >= MIN_BUCKETS:
            return SeriesPlan(n, width, used)
    return SeriesPlan(
        n,
        None,
        used,
        "too_few_buckets",
        f"{used} non-empty buckets of {bucket_seconds * WIDTHS[-1] // 3600} h, "
        f"{MIN_BUCKETS} needed",
    )


def coarsen(
    rows: list[dict[str, Any]], *, since: datetime, width: int, base: int
) -> list[dict[str, Any]]:
    """Cells re-bucketed to `width` seconds (a multiple of the base width): moments summed."""
    if width == base:
        return rows
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        k = int((r["bucket"] - since).total_seconds()) // width
        start = since + timedelta(seconds=k * width)
        key = (start, r["route"], r["environment"], r["prompt"], r["model_label"])
        cur = out.get(key)
        if cur is None:
            out[key] = {**r, "bucket": start}
        else:
            cur["n"] += r["n"]
            cur["total"] += r["total"]
            cur["total_sq"] += r["total_sq"]
            cur["non_binary"] += r["non_binary"]
    return sorted(out.values(), key=lambda r: r["bucket"])


def run_detection(
    store: Store, settings: Settings, *, project_id: str | None = None, now: datetime | None = None
) -> DetectionRun:
    now = now or datetime.now(UTC)
    bs = settings.detection_bucket_seconds
    until = datetime.fromtimestamp(now.timestamp() // bs * bs, UTC)  # only whole buckets
    since = until - timedelta(days=settings.detection_window_days)
    run = DetectionRun()
    if project_id:
        projects = [project_id]
    else:
        projects = store.projects_with_scores(since)
        if settings.detection_builtin_metrics or settings.detection_builtin_metrics_by_project:
            projects = sorted({*projects, *store.projects_with_responses(since)})
    for project in projects:
        by_series = _series_rows(store, settings, project, since=since, until=until)
        moves = store.label_history(project)
        known: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for i in store.incidents_since(project, since - timedelta(days=1)):
            known.setdefault((i["app"], i["metric"], i["source"]), []).append(i)
        # every series' cells first, then their shifts together (in worker processes when the
        # project is big: `_run_shifts`), then the incidents in the series' order
        todo: list[tuple[Series, list[dict[str, Any]], dict[str, Any]]] = []
        for (app, metric, source), cells in by_series.items():
            plan = plan_series(
                [c["bucket"] for c in cells],
                [c["n"] for c in cells],
                since=since,
                until=until,
                bucket_seconds=bs,
                min_scores=settings.detection_min_scores,
            )
            if plan.bucket_seconds is None:
                run.not_analysed.append(
                    {
                        "project_id": project,
                        "app": app,
                        "metric": metric,
                        "source": source,
                        "n": plan.n,
                        "reason": plan.reason,
                        "detail": plan.detail,
                    }
                )
                continue
            width = plan.bucket_seconds
            inputs = {
                "since": since,
                "bucket_seconds": width,
                "higher_is_better": source != BUILTIN,
                "label_moves": moves,
            }
            todo.append(
                (
                    Series(project, app, metric, source, width),
                    coarsen(cells, since=since, width=width, base=bs),
                    inputs,
                )
            )
        found_all = _shifts_unless_unchanged(
            [((project, s.app, s.metric, s.source), rows, inputs) for s, rows, inputs in todo],
            processes=settings.detection_processes,
        )
        for (series, _, _), found in zip(todo, found_all, strict=True):
            writes = merge(
                series,
                known.get((series.app, series.metric, series.source), []),
                found,
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


# The verdicts of the last run per series, with a digest of everything `shifts` read to find
# them: `shifts` is pure, so a series whose cells, window, bucket width and label moves are
# byte for byte those of the last run gets the same verdicts without the change points and
# attribution (most of a pass's time). The job runs every few minutes on hourly buckets, so
# most runs within an hour see unchanged series; any changed value (a late score, a new
# hour, a label move) changes the digest and the series is analysed again.
_SHIFTS_KEPT = 4096  # series remembered (least recently used dropped)
_shifts_lock = threading.Lock()
_last_shifts: OrderedDict[tuple[str, ...], tuple[bytes, list[tuple[str, Verdict]]]] = OrderedDict()

_SHIFT_FIELDS = (  # the row fields `shifts` reads
    "bucket",
    "route",
    "environment",
    "prompt",
    "model_label",
    "n",
    "total",
    "total_sq",
    "non_binary",
)

_shift_fields = operator.itemgetter(*_SHIFT_FIELDS)


def _shifts_digest(
    rows: list[dict[str, Any]],
    *,
    since: datetime,
    bucket_seconds: int,
    higher_is_better: bool,
    label_moves: Sequence[Mapping[str, Any]],
) -> bytes:
    fields = list(map(_shift_fields, rows))
    moves = [sorted(m.items()) for m in label_moves]
    payload = (since, bucket_seconds, higher_is_better, moves, fields)
    return hashlib.blake2b(pickle.dumps(payload, protocol=5), digest_size=32).digest()


def _shifts_unless_unchanged(
    jobs: Sequence[tuple[tuple[str, ...], list[dict[str, Any]], dict[str, Any]]],
    *,
    processes: int,
) -> list[list[tuple[str, Verdict]]]:
    """`shifts` of each (series, rows, inputs), in order: the last run's verdicts of a series
    whose inputs are unchanged, the others found afresh (`_run_shifts`) and remembered."""
    digests = [_shifts_digest(rows, **inputs) for _, rows, inputs in jobs]
    out: list[list[tuple[str, Verdict]] | None] = []
    with _shifts_lock:
        for (series, _, _), digest in zip(jobs, digests, strict=True):
            kept = _last_shifts.get(series)
            if kept is not None and kept[0] == digest:
                _last_shifts.move_to_end(series)
                out.append(list(kept[1]))
            else:
                out.append(None)
    missing = [i for i, found in enumerate(out) if found is None]
    computed = _run_shifts([(jobs[i][1], jobs[i][2]) for i in missing], processes=processes)
    with _shifts_lock:
        for i, found in zip(missing, computed, strict=True):
            out[i] = found
            _last_shifts[jobs[i][0]] = (digests[i], list(found))
            _last_shifts.move_to_end(jobs[i][0])
        while len(_last_shifts) > _SHIFTS_KEPT:
            _last_shifts.popitem(last=False)
    return [found for found in out if found is not None]


# `shifts` is pure CPU work on plain rows, most of a pass on a big project (1.5 s of 1.9 s on
# 60 series at 10M responses), and independent per series: with several cores it runs in
# worker processes. Below this many rows the work (about 25 us a row) is too small to pay for
# shipping the rows and verdicts, so small projects and the tests stay in-process.
_PARALLEL_MIN_ROWS = 20_000
_pool_lock = threading.Lock()
_pool: tuple[int, ProcessPoolExecutor] | None = None  # (workers, pool), made on first use
_pool_failed = threading.Event()  # set once the workers failed: in-process from then on


def _run_shifts(
    work: Sequence[tuple[list[dict[str, Any]], dict[str, Any]]], *, processes: int
) -> list[list[tuple[str, Verdict]]]:
    """`shifts(rows, **inputs)` of each item, in order; in `processes` worker processes (0: one
    per core) when there are at least `_PARALLEL_MIN_ROWS` rows, else in this process."""
    workers = processes or _cores()
    if (
        workers < 2
        or len(work) < 2
        or sum(len(r) for r, _ in work) < _PARALLEL_MIN_ROWS
        or _pool_failed.is_set()
    ):
        return [shifts(rows, **inputs) for rows, inputs in work]
    pool = _pool_of(workers)
    # One task per worker, the series dealt biggest first to the lightest task so far: with a
    # task per series the pool's feeder thread had to wake up between series to hand out the
    # next one, and on a busy machine the workers sat waiting for it (no faster than one
    # process at a load of 4-5 on 2 cores).
    tasks: list[list[int]] = [[] for _ in range(min(workers, len(work)))]
    rows = [0] * len(tasks)
    for i in sorted(range(len(work)), key=lambda i: -len(work[i][0])):
        k = rows.index(min(rows))
        tasks[k].append(i)
        rows[k] += len(work[i][0])
    try:
        futures = [pool.submit(_shifts_task, [work[i] for i in task]) for task in tasks]
        out: list[list[tuple[str, Verdict]]] = [[] for _ in work]
        for task, future in zip(tasks, futures, strict=True):
            for i, found in zip(task, future.result(), strict=True):
                out[i] = found
        return out
    except BrokenProcessPool:
        # a worker died (killed, out of memory, or could not start: a main script without an
        # `if __name__ == "__main__"` guard runs again in every worker): this pass and the
        # following ones run in-process rather than paying for a failing start every pass
        log.exception("detection worker processes failed; shifts found in-process from now on")
        _pool_failed.set()
        with _pool_lock:
            global _pool
            if _pool is not None and _pool[1] is pool:
                _pool = None
        pool.shutdown(wait=False, cancel_futures=True)
        return [shifts(rows, **inputs) for rows, inputs in work]


def _shifts_task(
    work: Sequence[tuple[list[dict[str, Any]], dict[str, Any]]],
) -> list[list[tuple[str, Verdict]]]:
    return [shifts(rows, **inputs) for rows, inputs in work]


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _pool_of(workers: int) -> ProcessPoolExecutor:
    """The worker processes, made once and kept for the following passes (the first pass that
    uses them takes 2-3 s longer: the forkserver imports numpy, scipy, statsmodels). They are
    forked from a forkserver that imported this module, never from this process itself: it
    runs chDB's threads, and a fork copies their locks in whatever state they are in."""
    global _pool
    with _pool_lock:
        if _pool is not None and _pool[0] != workers:
            _pool[1].shutdown(wait=False)
            _pool = None
        if _pool is None:
            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            context = mp.get_context(method)
            if method == "forkserver":
                context.set_forkserver_preload([__name__])
            _pool = (workers, ProcessPoolExecutor(workers, mp_context=context))
        return _pool[1]


def coverage(
    store: Store, settings: Settings, project_id: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """Which series the detection job analyses over its current window, on which bucket
    width, and which it cannot analyse and why (the same `plan_series` the job uses)."""
    now = now or datetime.now(UTC)
    bs = settings.detection_bucket_seconds
    until = datetime.fromtimestamp(now.timestamp() // bs * bs, UTC)
    since = until - timedelta(days=settings.detection_window_days)
    by_series = _series_rows(store, settings, project_id, since=since, until=until, detail=False)
    analysed, not_analysed = [], []
    for (app, metric, source), cells in sorted(by_series.items()):
        plan = plan_series(
            [c["bucket"] for c in cells],
            [c["n"] for c in cells],
            since=since,
            until=until,
            bucket_seconds=bs,
            min_scores=settings.detection_min_scores,
        )
        row = {"app": app, "metric": metric, "source": source, "n": plan.n}
        if plan.bucket_seconds is None:
            not_analysed.append({**row, "reason": plan.reason, "detail": plan.detail})
        else:
            analysed.append({**row, "bucket_seconds": plan.bucket_seconds, "buckets": plan.buckets})
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "analysed": analysed,
        "not_analysed": not_analysed,
    }


BUILTIN = "builtin"  # the source of the built-in metrics' series
_BUILTIN_COLUMNS = {  # metric: (n, total, total_sq) columns of `Store.builtin_cells`
    "error_rate": ("n", "errors", "errors"),
    "latency_ms": ("latency_n", "latency_total", "latency_total_sq"),
    "cost_usd": ("cost_n", "cost_total", "cost_total_sq"),
}


def _series_rows(
    store: Store,
    settings: Settings,
    project: str,
    *,
    since: datetime,
    until: datetime,
    detail: bool = True,
) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Cells per series (app, metric, source): every score series, and the built-in
    metrics the project watches (error rate, latency, cost: source `builtin`) where its
    responses carry them. Score series without `detail`: one row a bucket, no dimensions."""
    bs = settings.detection_bucket_seconds
    rows = store.attribution_cells(
        project, since=since, until=until, bucket_seconds=bs, detail=detail
    )
    by_series: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_series.setdefault((r["app"], r["metric"], r["source"]), []).append(r)
    watched = settings.detection_builtin_metrics_by_project.get(
        project, settings.detection_builtin_metrics
    )
    if not watched:
        return by_series
    for r in store.builtin_cells(project, since=since, until=until, bucket_seconds=bs):
        for metric in watched:
            cn, ct, cq = _BUILTIN_COLUMNS[metric]
            if not r[cn]:
                continue
            by_series.setdefault((r["app"], metric, BUILTIN), []).append(
                {
                    "app": r["app"],
                    "metric": metric,
                    "source": BUILTIN,
                    "bucket": r["bucket"],
                    "route": r["route"],
                    "environment": r["environment"],
                    "prompt": r["prompt"],
                    "model_label": r["model_label"],
                    "n": int(r[cn]),
                    "total": float(r[ct]),
                    "total_sq": float(r[cq]),
                    "non_binary": 0 if metric == "error_rate" else int(r[cn]),
                }
            )
    # an error rate that never left zero has nothing to watch
    for key in [k for k in by_series if k[1] == "error_rate" and k[2] == BUILTIN]:
        if not any(c["total"] for c in by_series[key]):
            del by_series[key]
    return by_series


def shifts(
    rows: list[dict[str, Any]],
    *,
    since: datetime,
    bucket_seconds: int,
    higher_is_better: bool = True,
    label_moves: Sequence[Mapping[str, Any]] = (),
) -> list[tuple[str, Verdict]]:
    """(route or "" for the whole app, verdict) of every reportable shift in the cells.

    label_moves: rows of the label history (`Store.label_history`); each move to a version
    is a known arrival of that prompt version for attribution.
    A version arrival that the detector did not mark and whose best-measured test cannot
    exclude a small effect either way is reported on every series (`insufficient_evidence`,
    reason `arrival_underpowered`): the test uses the stable segments either side of the
    arrival, so a harmless deploy on busy traffic is cleared by it, not by a filter on the
    bucket width. The default alert rules do not send these (`Rule.unverified_arrivals`)."""
    if not rows:
        return []
    arrivals = known_arrivals(label_moves, since=since, bucket_seconds=bucket_seconds)
    index: dict[datetime, int] = {}  # bucket start -> bucket number (few starts, many rows)
    for r in rows:
        if r["bucket"] not in index:
            index[r["bucket"]] = int((r["bucket"] - since).total_seconds()) // bucket_seconds
    # positionally, in Cell's field order after `bucket`: a third of the time of keywords
    cells = [Cell(index[f[0]], *f) for f in map(_cell_fields, rows)]
    kind: MetricKind = "mean" if any(r["non_binary"] for r in rows) else "proportion"
    found = [
        ("", v)
        for v in find_and_attribute(
            cells,
            bucket_seconds=bucket_seconds,
            kind=kind,
            higher_is_better=higher_is_better,
            arrivals=arrivals,
        )
    ]
    found = [(route, v) for route, v in found if v.kind in REPORTABLE]
    routes = sorted({c.route for c in cells})
    within = max(2, _ROUTE_DEDUP_SECONDS // bucket_seconds)
    if len(routes) > 1:
        for route in routes:
            mine = [c for c in cells if c.route == route]
            for v in find_and_attribute(
                mine,
                bucket_seconds=bucket_seconds,
                kind=kind,
                higher_is_better=higher_is_better,
                arrivals=arrivals,
            ):
                if v.kind in REPORTABLE and not _seen(found, v, within=within):
                    found.append((route, v))
    return found


_cell_fields = operator.itemgetter(  # Cell's fields from `start` on, from a row
    "bucket", "route", "environment", "prompt", "model_label", "n", "total", "total_sq"
)


def known_arrivals(
    label_moves: Sequence[Mapping[str, Any]], *, since: datetime, bucket_seconds: int
) -> list[KnownArrival]:
    """Label moves as known arrivals: "prompt_id@to_version" at the bucket the move fell in
    (moves before the window are left out; a move is a deploy time, not a verdict)."""
    out = []
    for m in label_moves:
        at = m.get("claimed_at")
        if not m.get("to_version") or not isinstance(at, datetime):
            continue
        at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        offset = (at - since).total_seconds()
        if offset < 0:
            continue
        out.append(
            KnownArrival(
                value=f"{m['prompt_id']}@{m['to_version']}",
                bucket=int(offset // bucket_seconds),
                label=str(m.get("label", "")),
            )
        )
    return out


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
