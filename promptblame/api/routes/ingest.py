"""POST /v1/responses and /v1/scores: thin HTTP around `ingest.service.accept`.

200: every event stored. 207: some stored, the rest listed in `rejected` by index with the field
and reason. 422: none valid. A 2xx is sent only after the accepted rows are in ClickHouse.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from promptblame.api.errors import ErrorBody
from promptblame.api.json_body import json_router
from promptblame.api.limits import body_too_large
from promptblame.api.openapi import IngestResult, ref
from promptblame.api.state import IngestKey, State
from promptblame.errors import MalformedBody, PromptblameError, TooLarge, UnsupportedMedia
from promptblame.ingest.decode import gunzip
from promptblame.ingest.service import accept

router = json_router(prefix="/v1", tags=["ingest"])

_STATUS_OF = {"stored": 200, "partial": 207, "none": 422}


async def read_body(
    request: Request, limit: int, content_types: tuple[str, ...] = ("application/json",)
) -> bytes:
    """The body, gunzipped, never more than `limit` bytes held (413 past it). A client that
    hangs up before the body is complete is a refused request (400, counted), not an
    unhandled exception: its network failed, nothing was queued."""
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() not in content_types:
        allowed = " or ".join(content_types)
        raise UnsupportedMedia(f"Content-Type must be {allowed}, not {ctype!r}")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMedia(f"Content-Encoding must be gzip or absent, not {encoding!r}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(body_too_large(limit, declared))
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(body_too_large(limit))
            chunks.append(chunk)
    except ClientDisconnect:
        raise MalformedBody(
            f"client disconnected after {size} bytes, before the body was complete"
        ) from None
    body = b"".join(chunks)
    return gunzip(body, limit=limit) if encoding == "gzip" else body


async def _ingest(kind: str, request: Request, state: State, project_id: str) -> JSONResponse:
    m = state.metrics
    try:
        with state.writer.incoming():
            body = await read_body(request, state.settings.max_request_bytes)
            started = time.perf_counter()
            result = accept(
                kind,
                body,
                project_id=project_id,
                writer=state.writer,
                limits=state.settings.ingest_limits(),
            )
        await asyncio.wrap_future(result.written)
    except PromptblameError as exc:
        m.requests_refused.labels(type(exc).__name__).inc()
        raise
    m.ack_seconds.labels(kind).observe(time.perf_counter() - started)
    m.accepted.labels(kind).inc(result.accepted)
    m.rejected.labels(kind).inc(len(result.rejected))
    outcome = "stored" if not result.rejected else "partial" if result.accepted else "none"
    payload: dict[str, Any] = {"accepted": result.accepted, "rejected": result.rejected}
    if outcome == "none":
        first = result.rejected[0]["errors"][0]
        payload["detail"] = (
            f"none of the {len(result.rejected)} {kind} is valid (each listed in `rejected`);"
            f" the first: {first['field']}: {first['message']}"
        )
    return JSONResponse(payload, status_code=_STATUS_OF[outcome])


def _openapi(batch: str) -> dict[str, Any]:
    """The raw body as FastAPI cannot see it (api.openapi adds the schemas)."""
    return {
        "requestBody": {
            "required": True,
            "description": "JSON, optionally with `Content-Encoding: gzip`.",
            "content": {"application/json": {"schema": ref(batch)}},
        }
    }


_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "every event stored", "model": IngestResult},
    207: {
        "description": "the valid events stored, the others in `rejected`",
        "model": IngestResult,
    },
    400: {"description": "not JSON, or broken gzip", "model": ErrorBody},
    415: {
        "description": "not application/json, or an encoding other than gzip",
        "model": ErrorBody,
    },
    422: {
        "description": "no valid event (each in `rejected`), or not the expected object",
        "content": {
            "application/json": {"schema": {"anyOf": [ref("IngestRefused"), ref("ErrorBody")]}}
        },
    },
}


@router.post(
    "/responses",
    summary='Ingest response events: {"responses": [...]}',
    responses=_ANSWERS,
    openapi_extra=_openapi("ResponsesBatch"),
)
async def post_responses(request: Request, state: State, key: IngestKey) -> JSONResponse:
    return await _ingest("responses", request, state, key.project_id)


@router.post(
    "/scores",
    summary='Ingest scores of responses: {"scores": [...]}',
    responses=_ANSWERS,
    openapi_extra=_openapi("ScoresBatch"),
)
async def post_scores(request: Request, state: State, key: IngestKey) -> JSONResponse:
    return await _ingest("scores", request, state, key.project_id)
