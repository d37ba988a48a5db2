"""POST /v1/traces: OTLP/HTTP trace export (protobuf or JSON), LLM spans stored as responses.

Answers as the OTLP spec asks: 200 with an `ExportTraceServiceResponse` in the request's
encoding, carrying `partial_success {rejected_spans, error_message}` when some LLM spans were
invalid. Spans that are not LLM calls are not rejections (the exporter must not log them as
failures); their count is in the `X-Promptblame-Skipped-Spans` header. Like /v1/responses, the
answer is sent only after the stored rows are in ClickHouse; whole-request errors are the same
JSON errors (400/401/403/413/415/503).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from promptblame.api.routes.ingest import read_body
from promptblame.api.state import IngestKey, State
from promptblame.errors import PromptblameError
from promptblame.ingest import otlp
from promptblame.ingest.rows import responses_table

router = APIRouter(prefix="/v1", tags=["ingest"])

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SKIPPED_HEADER = "X-Promptblame-Skipped-Spans"


@router.post("/traces", summary="OTLP/HTTP trace export; LLM spans become response events")
async def post_traces(request: Request, state: State, key: IngestKey) -> Response:
    m = state.metrics
    try:
        body = await read_body(request, state.settings.max_request_bytes, (PROTOBUF, JSON))
        is_json = request.headers["content-type"].split(";")[0].strip().lower() == JSON
        started = time.perf_counter()
        req = otlp.decode_json(body) if is_json else otlp.decode_protobuf(body)
        mapped = otlp.map_request(req, max_events=state.settings.max_events_per_request)
        if mapped.events:
            table = responses_table(key.project_id, mapped.events, datetime.now(UTC))
            await asyncio.wrap_future(state.writer.submit("responses", table))
    except PromptblameError as exc:
        m.requests_refused.labels(type(exc).__name__).inc()
        raise
    m.ack_seconds.labels("traces").observe(time.perf_counter() - started)
    m.accepted.labels("responses").inc(len(mapped.events))
    m.rejected.labels("responses").inc(len(mapped.rejected))
    m.spans_skipped.inc(mapped.skipped)

    answer = ExportTraceServiceResponse()
    if mapped.rejected:
        answer.partial_success.rejected_spans = len(mapped.rejected)
        answer.partial_success.error_message = mapped.error_message()
    headers = {SKIPPED_HEADER: str(mapped.skipped)}
    if is_json:
        content = json_format.MessageToJson(answer, indent=None).encode()
        return Response(content, media_type=JSON, headers=headers)
    return Response(answer.SerializeToString(), media_type=PROTOBUF, headers=headers)
