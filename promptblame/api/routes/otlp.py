"""POST /v1/traces: OTLP/HTTP trace export (protobuf or JSON), LLM spans stored as responses.

Answers as the OTLP spec asks: 200 with an `ExportTraceServiceResponse` in the request's
encoding, carrying `partial_success {rejected_spans, error_message}` when some LLM spans were
invalid. Spans that are not LLM calls are not rejections (the exporter must not log them as
failures); their count is in the `X-Promptblame-Skipped-Spans` header. Like /v1/responses, the
answer is sent only after the stored rows are in ClickHouse. Whole-request errors
(400/401/403/413/415/429/503) are protobuf `google.rpc.Status` messages to a protobuf export,
as the spec asks (`api.errors`), and the usual JSON to an OTLP/JSON one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Request, Response
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from promptblame.api.errors import ErrorBody
from promptblame.api.json_body import json_router
from promptblame.api.routes.ingest import read_body
from promptblame.api.state import IngestKey, State
from promptblame.errors import PromptblameError
from promptblame.ingest import otlp

router = json_router(prefix="/v1", tags=["ingest"])

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SKIPPED_HEADER = "X-Promptblame-Skipped-Spans"


_SKIPPED = {
    SKIPPED_HEADER: {
        "description": "spans that are not LLM calls (not stored, not rejections)",
        "schema": {"type": "string"},
    }
}
_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "An OTLP ExportTraceServiceRequest, optionally with"
        " `Content-Encoding: gzip`.",
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {
                "schema": {
                    "type": "object",
                    "properties": {"resourceSpans": {"type": "array", "items": {"type": "object"}}},
                }
            },
        },
    }
}
_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "ExportTraceServiceResponse (partial_success names rejected spans)",
        "headers": _SKIPPED,
        "content": {PROTOBUF: {"schema": {"type": "string", "format": "binary"}}, JSON: {}},
    },
    400: {"description": "not an OTLP export request, or broken gzip", "model": ErrorBody},
    415: {
        "description": "not protobuf or JSON, or an encoding other than gzip",
        "model": ErrorBody,
    },
}


@router.post(
    "/traces",
    summary="OTLP/HTTP trace export; LLM spans become response events",
    response_class=Response,
    responses=_ANSWERS,
    openapi_extra=_OPENAPI,
)
async def post_traces(request: Request, state: State, key: IngestKey) -> Response:
    m = state.metrics
    try:
        with state.writer.incoming():
            body = await read_body(request, state.settings.max_request_bytes, (PROTOBUF, JSON))
            is_json = request.headers["content-type"].split(";")[0].strip().lower() == JSON
            started = time.perf_counter()
            rows = await state.otlp.rows(
                body, is_json, key.project_id, state.settings.ingest_limits()
            )
            written = state.writer.submit("responses", rows.table)
        await asyncio.wrap_future(written)
    except PromptblameError as exc:
        m.requests_refused.labels(type(exc).__name__).inc()
        raise
    m.ack_seconds.labels("traces").observe(time.perf_counter() - started)
    m.accepted.labels("responses").inc(rows.table.num_rows)
    m.rejected.labels("responses").inc(len(rows.rejected))
    m.spans_skipped.inc(rows.skipped)

    answer = ExportTraceServiceResponse()
    if rows.rejected:
        answer.partial_success.rejected_spans = len(rows.rejected)
        answer.partial_success.error_message = otlp.rejection_message(rows.rejected)
    headers = {SKIPPED_HEADER: str(rows.skipped)}
    if is_json:
        content = json_format.MessageToJson(answer, indent=None).encode()
        return Response(content, media_type=JSON, headers=headers)
    return Response(answer.SerializeToString(), media_type=PROTOBUF, headers=headers)
