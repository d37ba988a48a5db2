"""Scheduled jobs: thin wrappers that read from the store, compute, and write back.

Each job is idempotent; a failure is logged and counted and never stops the other jobs. In
embedded mode the scheduler runs inside `promptblame serve`; with a server store, in
`promptblame worker`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from apscheduler.schedulers.base import BaseScheduler

from promptblame.settings import Settings
from promptblame.store import Store

log = logging.getLogger(__name__)

# Job name -> failures since start (read by /metrics).
failures: Counter[str] = Counter()


def _guarded(name: str, fn: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except Exception:
            failures[name] += 1
            log.exception("job %s failed", name)

    return run


def add_jobs(scheduler: BaseScheduler, store: Store, settings: Settings) -> None:
    scheduler.add_job(
        _guarded("materialize_scores", store.materialize_scores),
        "interval",
        seconds=settings.scored_refresh_seconds,
        id="materialize_scores",
        max_instances=1,
        coalesce=True,
    )
