"""Prometheus metrics of one app instance (own registry, so several apps can live in a test)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Receive, Scope, Send

from promptblame.ingest.writer import WriterStats

RESOLVE_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.1, 1.0)


class ResolveTiming:
    """Times each resolve inside the server (the benchmark reads it from /metrics: a client on
    the same two cores would add its own scheduling delays); other requests pass straight on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/resolve"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            state = getattr(scope["app"].state, "pb", None)
            if state is not None:
                state.metrics.resolve_seconds.observe(time.perf_counter() - started)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "promptblame_events_accepted",
            "Events stored, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "promptblame_events_rejected",
            "Events refused by validation, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.spans_skipped = Counter(
            "promptblame_otlp_spans_skipped",
            "OTLP spans that are not LLM calls (HTTP, DB, tools, embeddings...), not stored",
            registry=self.registry,
        )
        self.requests_refused = Counter(
            "promptblame_ingest_requests_refused",
            "Whole ingest requests refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.write_seconds = Histogram(
            "promptblame_write_seconds",
            "Duration of one INSERT by the group-commit writer",
            ["table"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "promptblame_write_batch_rows",
            "Rows in one INSERT by the group-commit writer",
            ["table"],
            buckets=(1, 10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000),
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "promptblame_ingest_ack_seconds",
            "From request body read to durable acknowledgement",
            ["kind"],
            registry=self.registry,
        )
        self.queue_rows = Gauge(
            "promptblame_write_queue_rows", "Rows waiting for the writer", registry=self.registry
        )
        self.write_failures = Gauge(
            "promptblame_write_failures", "INSERTs that failed since start", registry=self.registry
        )

        self.job_failures = Gauge(
            "promptblame_job_failures",
            "Scheduled job runs that failed since start",
            ["job"],
            registry=self.registry,
        )

        self.resolve_seconds = Histogram(
            "promptblame_resolve_seconds",
            "Server-side time of GET /v1/prompts/{id}/resolve, from the app to the last byte",
            buckets=RESOLVE_BUCKETS,
            registry=self.registry,
        )

    def bind_writer(self, stats: WriterStats) -> None:
        self.queue_rows.set_function(lambda: stats.queued_rows)
        self.write_failures.set_function(lambda: stats.failures)

        def observe(table: str, rows: int, seconds: float) -> None:
            self.write_seconds.labels(table).observe(seconds)
            self.batch_rows.labels(table).observe(rows)

        stats.observe = observe
