"""The scoring job: for each enabled evaluator version, score the responses it has not scored.

Select → evaluate → write, chunk by chunk over event_id ranges, so memory is bounded by the
chunk size. Which responses: those matching the evaluator's filter, in its sample (a hash of
event_id, so reruns and restarts choose the same ones), not already scored or failed by that
version. That anti-join makes every run idempotent and a killed run resumable; the per-version
cursor on received_at (minus an overlap for writes in flight) only keeps each run small.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute

from promptblame.analysis.scoring.base import Batch, Evaluator
from promptblame.analysis.scoring.registry import build, parse_params, source_of
from promptblame.settings import Settings
from promptblame.store import Store
from promptblame.store.filters import FAR_PAST, ScoringTarget
from promptblame.store.schema import SCORE_ERRORS_ARROW, SCORES_ARROW

log = logging.getLogger(__name__)

OVERLAP = timedelta(seconds=60)
Progress = Callable[[int, int], None]  # (responses done, responses to do)


@dataclass
class Active:
    name: str
    source: str
    evaluator: Evaluator[Any]
    target: ScoringTarget


@dataclass
class ScoringRun:
    scored: int = 0  # scores written
    errors: int = 0  # responses recorded as errors
    skipped: int = 0  # left for a later run (judge cost cap)
    failed: list[str] = field(default_factory=list)  # evaluators that could not run


def run_scoring(
    store: Store,
    settings: Settings,
    *,
    project_id: str | None = None,
    evaluator: str | None = None,
    backfill_since: datetime | None = None,
    progress: Progress | None = None,
) -> ScoringRun:
    """One pass over every project with evaluators (or one project / one evaluator).

    `backfill_since`: score history from that time on, retrying responses that failed before;
    the scheduled run's cursors are left as they are.
    """
    total = ScoringRun()
    for project in [project_id] if project_id else store.projects_with_evaluators():
        started, t0 = datetime.now(UTC), time.perf_counter()
        run = ScoringRun()
        try:
            _score_project(store, settings, project, evaluator, backfill_since, progress, run)
            status, error = ("failed", "; ".join(run.failed)) if run.failed else ("ok", "")
        except Exception as exc:
            log.exception("scoring project %s failed", project)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        store.record_job_run(
            "scoring",
            project_id=project,
            started_at=started,
            duration_s=time.perf_counter() - t0,
            status=status,
            rows=run.scored + run.errors,
            error=error,
        )
        total.scored += run.scored
        total.errors += run.errors
        total.skipped += run.skipped
        total.failed += [f"{project}: {f}" for f in run.failed]
        if status == "failed" and not run.failed:
            total.failed.append(f"{project}: {error}")
    return total


def _score_project(
    store: Store,
    settings: Settings,
    project: str,
    only: str | None,
    backfill_since: datetime | None,
    progress: Progress | None,
    run: ScoringRun,
) -> None:
    high = store.max_received_at(project)
    actives = _actives(store, settings, project, only, backfill_since, run)
    if not actives or high is None:
        return
    try:
        keys = store.scoring_candidates(project, [a.target for a in actives])
        held: dict[str, datetime] = {}  # source -> earliest received_at left for later
        step = settings.scoring_batch_rows
        chunks = [keys.slice(i, step) for i in range(0, keys.num_rows, step)]

        def fetch(chunk: pa.Table) -> pa.Table:
            return store.scoring_rows(project, chunk.column("event_id").to_pylist())

        # the next chunk is read while this one is scored (the engine releases the GIL)
        with ThreadPoolExecutor(1) as reader:
            pending = reader.submit(fetch, chunks[0]) if chunks else None
            done = 0
            for k, chunk in enumerate(chunks):
                assert pending is not None
                table = pending.result()
                pending = reader.submit(fetch, chunks[k + 1]) if k + 1 < len(chunks) else None
                _score_chunk(store, project, actives, _aligned(chunk, table), run, held)
                done += chunk.num_rows
                if progress:
                    progress(done, keys.num_rows)
    finally:
        for a in actives:
            a.evaluator.close()
    if backfill_since is None:
        for a in actives:
            store.set_job_cursor("score", _cursor_key(project, a.source), held.get(a.source, high))


def _actives(
    store: Store,
    settings: Settings,
    project: str,
    only: str | None,
    backfill_since: datetime | None,
    run: ScoringRun,
) -> list[Active]:
    now = datetime.now(UTC)
    out = []
    for r in store.evaluators(project):
        if r["removed"] or not r["enabled"] or (only and r["name"] != only):
            continue
        try:
            params = parse_params(r["kind"], json.loads(r["params"]))
            evaluator = build(r["kind"], params, settings)
        except ValueError as exc:  # e.g. the judge endpoint is no longer configured
            run.failed.append(f"{r['name']}: {exc}")
            log.error("evaluator %s of %s cannot run: %s", r["name"], project, exc)
            continue
        source = source_of(r["name"], r["version"], params, settings)
        flt = json.loads(r["filter"])
        if backfill_since is not None:
            since, received_from = backfill_since, FAR_PAST
        else:
            since = now - timedelta(days=settings.scoring_lookback_days)
            cursor = store.job_cursor("score", _cursor_key(project, source))
            received_from = cursor - OVERLAP if cursor else FAR_PAST
        target = ScoringTarget(
            name=r["name"],
            source=source,
            apps=tuple(flt["app"]),
            routes=tuple(flt["route"]),
            environments=tuple(flt["environment"]),
            sample_rate=r["sample_rate"],
            since=since,
            received_from=received_from,
            retry_errors=backfill_since is not None,
        )
        out.append(Active(r["name"], source, evaluator, target))
    return out


def _aligned(keys: pa.Table, rows: pa.Table) -> pa.Table:
    """The chunk's rows with their want_<i> flags (both are sorted by event_id)."""
    if rows.num_rows != keys.num_rows:  # cannot happen without deletes; align by id anyway
        keep = pa.compute.is_in(keys.column("event_id"), value_set=rows.column("event_id"))
        keys = keys.filter(keep)
    for name in keys.column_names:
        if name.startswith("want_"):
            rows = rows.append_column(name, keys.column(name))
    return rows


def _score_chunk(
    store: Store,
    project: str,
    actives: list[Active],
    table: pa.Table,
    run: ScoringRun,
    held: dict[str, datetime],
) -> None:
    batch = Batch(table)
    ids, received = batch.column("event_id"), batch.column("received_at")
    scores: dict[str, list[Any]] = {
        k: [] for k in ("event_id", "name", "source", "value", "comment")
    }
    errors: dict[str, list[Any]] = {k: [] for k in ("event_id", "source", "error")}
    for j, a in enumerate(actives):
        chosen = [i for i, want in enumerate(batch.column(f"want_{j}")) if want]
        outcomes = a.evaluator.score(batch.take(chosen))
        values = [o[0] for o in outcomes]
        if None not in values:  # the usual case, in bulk
            scores["event_id"] += [ids[i] for i in chosen]
            scores["value"] += values
            scores["comment"] += [o[1] for o in outcomes]
        else:
            for i, (value, explanation, error) in zip(chosen, outcomes, strict=True):
                if value is not None:
                    scores["event_id"].append(ids[i])
                    scores["value"].append(value)
                    scores["comment"].append(explanation)
                elif error:
                    errors["event_id"].append(ids[i])
                    errors["error"].append(error)
                else:
                    run.skipped += 1
                    if a.source not in held or received[i] < held[a.source]:
                        held[a.source] = received[i]
        scores["name"] += [a.name] * (len(scores["event_id"]) - len(scores["name"]))
        scores["source"] += [a.source] * (len(scores["event_id"]) - len(scores["source"]))
        errors["source"] += [a.source] * (len(errors["event_id"]) - len(errors["source"]))
    now = datetime.now(UTC)
    n, m = len(scores["event_id"]), len(errors["event_id"])
    if n:
        store.insert(
            "scores",
            pa.Table.from_pydict(
                {"project_id": [project] * n, **scores, "ts": [now] * n, "received_at": [now] * n},
                schema=SCORES_ARROW,
            ),
        )
    if m:
        store.insert(
            "score_errors",
            pa.Table.from_pydict(
                {"project_id": [project] * m, **errors, "ts": [now] * m}, schema=SCORE_ERRORS_ARROW
            ),
        )
    run.scored += n
    run.errors += m


def _cursor_key(project: str, source: str) -> str:
    return f"{project}/{source}"
