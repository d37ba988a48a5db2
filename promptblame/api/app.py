"""`create_app(settings, store)`: the FastAPI application. The lifespan owns store and writer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import FastAPI

from promptblame import __version__
from promptblame.analysis.jobs import add_jobs
from promptblame.api import errors
from promptblame.api.auth import KeyChecker
from promptblame.api.freshness import SharedJobRun
from promptblame.api.limits import BodyLimits
from promptblame.api.metrics import Metrics, ResolveTiming
from promptblame.api.openapi import install_openapi
from promptblame.api.ratelimit import TokenBuckets
from promptblame.api.routes import (
    analysis,
    gate,
    health,
    incidents,
    ingest,
    otlp,
    prompts,
    reads,
    reports,
    review,
    review_pages,
    rollouts,
    scoring,
)
from promptblame.api.state import AppState
from promptblame.api.urls import Utf8Urls
from promptblame.ingest.otlp_pool import OtlpPool
from promptblame.ingest.writer import GroupCommitWriter, WriterStats
from promptblame.releases.resolve import ResolveCache
from promptblame.settings import Settings
from promptblame.store import Store, open_store

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """A given `store` stays the caller's to close; otherwise the app opens and closes one."""
    settings = settings or Settings()
    if settings.auth_disabled and not settings.host_is_loopback():
        raise ValueError(
            "PROMPTBLAME_AUTH_DISABLED is only allowed with a loopback PROMPTBLAME_HOST;"
            f" got {settings.host!r}"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        s = store or open_store(settings)
        metrics = Metrics()
        stats = WriterStats()
        metrics.bind_writer(stats)
        writer = GroupCommitWriter(
            partial(s.insert, stamp=True),  # received_at = when written: the jobs follow it
            max_queue_rows=settings.write_queue_max_rows,
            max_batch_rows=settings.write_batch_max_rows,
            linger=settings.write_linger_ms / 1000,
            stats=stats,
        )
        scheduler = BackgroundScheduler(timezone="UTC")
        releases = ResolveCache(s, settings.resolve_cache_seconds)
        if s.kind == "embedded":  # with a server store, `promptblame worker` runs the jobs
            add_jobs(scheduler, s, settings, on_release=releases.invalidate)
            scheduler.start()
        limiter = TokenBuckets(rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst)
        keys = KeyChecker(s, cache_seconds=settings.key_cache_seconds, limiter=limiter)
        pool = OtlpPool(settings.otlp_processes)
        app.state.pb = AppState(settings, s, writer, keys, metrics, pool, releases)
        log.info("promptblame %s on the %s store", __version__, s.kind)
        try:
            yield
        finally:
            if scheduler.running:
                scheduler.shutdown(wait=True)
            pool.close()
            writer.close()
            if own_store:
                s.close()

    app = FastAPI(
        title="promptblame",
        version=__version__,
        summary="Which prompt or model version moved LLM answer quality.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(
        BodyLimits,
        max_bytes=settings.max_request_bytes,
        timeout=settings.body_read_timeout_seconds,
    )
    for module in (
        health,
        ingest,
        otlp,
        prompts,
        reads,
        analysis,
        gate,
        scoring,
        incidents,
        rollouts,
        reports,
        review,
        review_pages,
    ):
        app.include_router(module.router)
    app.add_middleware(SharedJobRun)
    app.add_middleware(Utf8Urls)
    app.add_middleware(ResolveTiming)  # added last: runs first
    install_openapi(app, settings)
    return app
