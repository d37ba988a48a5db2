"""Scheduled jobs: thin wrappers that read from the store, compute, and write back.

Each job is idempotent; a failure is logged, counted and recorded in `job_runs` (GET /v1/jobs)
and never stops the other jobs. APScheduler's max_instances=1 keeps runs of one job from
overlapping. In embedded mode the scheduler runs inside `promptblame serve`; with a server
store, in `promptblame worker`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.base import BaseScheduler

from promptblame.analysis.alerting.job import run_alerts
from promptblame.analysis.detection import run_detection
from promptblame.analysis.scoring.job import run_scoring
from promptblame.releases.rollouts import run_rollouts
from promptblame.settings import Settings
from promptblame.store import Store

log = logging.getLogger(__name__)

# Job name -> failures since start (read by /metrics).
failures: Counter[str] = Counter()


def guarded(
    store: Store, name: str, fn: Callable[[], object], *, record: bool = True
) -> Callable[[], None]:
    """`fn` as a job: its exception is logged, counted and (with `record`) recorded, never
    raised. Jobs that record their own runs per project pass record=False.

    These runs are store-wide (project ''), and GET /v1/jobs shows them to every project, while
    an exception may quote one project's data (a validation error shows the offending value,
    e.g. a webhook URL with its token): the run records only the exception's type; the log
    has the whole of it."""

    def run() -> None:
        started, t0 = datetime.now(UTC), time.perf_counter()
        status, error = "ok", ""
        try:
            fn()
        except Exception as exc:
            failures[name] += 1
            status, error = "failed", f"{type(exc).__name__} (details in the server log)"
            log.exception("job %s failed", name)
        if not record:
            return
        try:
            store.record_job_run(
                name,
                started_at=started,
                duration_s=time.perf_counter() - t0,
                status=status,
                error=error,
            )
        except Exception:
            log.exception("could not record the run of job %s", name)

    return run


def add_jobs(
    scheduler: BaseScheduler,
    store: Store,
    settings: Settings,
    on_release: Callable[[str, str], None] | None = None,
) -> None:
    """`on_release(project, prompt)`: a rollout changed what a prompt's labels serve (the
    serving process invalidates its resolve cache; other processes wait out its TTL)."""
    jobs: dict[str, tuple[Callable[[], object], float, bool]] = {
        "materialize_scores": (store.materialize_scores, settings.scored_refresh_seconds, True),
        # run_scoring records one run per project itself
        "scoring": (lambda: run_scoring(store, settings), settings.scoring_interval_seconds, False),
        "detection": (
            lambda: run_detection(store, settings),
            settings.detection_interval_seconds,
            True,
        ),
        "rollouts": (
            lambda: run_rollouts(store, on_change=on_release),
            settings.rollout_interval_seconds,
            True,
        ),
        # also retries deliveries that failed and sends "resolved" soon after a manual resolve
        "alerts": (lambda: run_alerts(store, settings), settings.alert_interval_seconds, True),
    }
    for name, (fn, seconds, record) in jobs.items():
        scheduler.add_job(
            guarded(store, name, fn, record=record),
            "interval",
            seconds=seconds,
            id=name,
            max_instances=1,
            coalesce=True,
        )
