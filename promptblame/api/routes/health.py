"""Liveness and Prometheus metrics."""

from __future__ import annotations

from fastapi import Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from promptblame.analysis import jobs
from promptblame.api.errors import ErrorBody
from promptblame.api.json_body import json_router
from promptblame.api.state import State
from promptblame.errors import StoreUnavailable

router = json_router(tags=["ops"])


@router.get(
    "/healthz", responses={503: {"description": "the store does not answer", "model": ErrorBody}}
)
def healthz(state: State) -> dict[str, object]:
    """200 when the store answers a query; 503 (with the reason) when it does not."""
    try:
        migrations = state.store.applied_migrations()
    except Exception as exc:
        raise StoreUnavailable(f"store does not answer: {exc}") from exc
    return {
        "status": "ok",
        "store": state.store.kind,
        "schema_version": max(migrations, default=0),
        "write_queue_rows": state.writer.stats.queued_rows,
    }


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(state: State) -> Response:
    for job, n in jobs.failures.items():
        state.metrics.job_failures.labels(job).set(n)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
