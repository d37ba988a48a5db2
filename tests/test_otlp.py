"""OTLP trace ingest: the attribute mapping of each convention, both encodings over HTTP,
partial success, skipped spans, idempotent retries, gzip, auth, and a real SDK exporter
against a live server.

Spans are produced by the real opentelemetry-sdk and encoded by the exporter's own protobuf
encoder, with attribute names as OpenLLMetry, OpenInference and the GenAI semantic conventions
document and emit them.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from promptblame.ingest import otlp
from promptblame.ingest.contracts import IngestLimits
from promptblame.ingest.otlp_pool import OtlpPool
from tests.server_process import cli, free_port, start_server

RESOURCE = {"service.name": "support-bot", "deployment.environment.name": "prod"}

OPENLLMETRY = {  # traceloop-sdk + opentelemetry-instrumentation-openai, chat completion
    "llm.request.type": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "llm.is_streaming": False,
    "gen_ai.prompt.0.role": "system",
    "gen_ai.prompt.0.content": "You are a support agent.",
    "gen_ai.prompt.1.role": "user",
    "gen_ai.prompt.1.content": "Where is my refund?",
    "gen_ai.completion.0.role": "assistant",
    "gen_ai.completion.0.content": "It was sent on Monday.",
    "gen_ai.completion.0.finish_reason": "stop",
    "gen_ai.usage.prompt_tokens": 21,
    "gen_ai.usage.completion_tokens": 7,
    "llm.usage.total_tokens": 28,
    "traceloop.workflow.name": "refunds",
    "traceloop.association.properties.user_id": "u-42",
    "traceloop.association.properties.tier": "pro",
    "traceloop.prompt.key": "refund.answer",
    "traceloop.prompt.version": 3,
    "traceloop.prompt.version_name": "shorter",
}

OPENINFERENCE = {  # openinference-instrumentation-openai, chat completion
    "openinference.span.kind": "LLM",
    "llm.model_name": "gpt-4o-mini-2024-07-18",
    "llm.provider": "openai",
    "llm.system": "openai",
    "llm.token_count.prompt": 12,
    "llm.token_count.completion": 5,
    "llm.token_count.total": 17,
    "input.value": '{"messages": [{"role": "user", "content": "Summarize: cats sleep."}]}',
    "input.mime_type": "application/json",
    "output.value": '{"choices": [{"message": {"content": "Cats nap."}}]}',
    "output.mime_type": "application/json",
    "llm.input_messages.0.message.role": "user",
    "llm.input_messages.0.message.content": "Summarize: cats sleep.",
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.content": "Cats nap.",
    "llm.invocation_parameters": '{"temperature": 0}',
    "llm.prompt_template.template": "Summarize: {text}",
    "llm.prompt_template.version": "v2",
    "llm.prompt_template.variables": '{"text": "cats sleep."}',
    "session.id": "s-1",
    "user.id": "u-1",
}

GENAI = {  # OpenTelemetry GenAI semantic conventions (content on attributes)
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4",
    "gen_ai.response.model": "claude-sonnet-4-20250514",
    "gen_ai.response.id": "msg_01",
    "gen_ai.response.finish_reasons": ("end_turn",),
    "gen_ai.usage.input_tokens": 30,
    "gen_ai.usage.output_tokens": 9,
    "gen_ai.conversation.id": "conv-7",
    "gen_ai.input.messages": json.dumps(
        [
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": "Capital of France?"}]},
        ]
    ),
    "gen_ai.output.messages": json.dumps(
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": "Paris."}],
                "finish_reason": "stop",
            }
        ]
    ),
    "server.address": "api.anthropic.com",
}


def spans(
    *specs: dict[str, Any], resource: dict[str, Any] | None = None
) -> ExportTraceServiceRequest:
    """Each spec: attributes, plus optional `_name`, `_events` [(name, attrs)], `_error` (msg)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource or RESOURCE))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for spec in specs:
        attrs = {k: v for k, v in spec.items() if not k.startswith("_")}
        with tracer.start_as_current_span(
            spec.get("_name", "chat"), attributes=attrs, record_exception=False
        ) as span:
            for name, event_attrs in spec.get("_events", ()):
                span.add_event(name, event_attrs)
            if "_error" in spec:
                span.set_status(Status(StatusCode.ERROR, spec["_error"]))
            time.sleep(0.002)
    provider.shutdown()
    return encode_spans(exporter.get_finished_spans())


def one(req: ExportTraceServiceRequest) -> dict[str, Any]:
    mapped = otlp.map_request(req)
    assert mapped.rejected == [] and len(mapped.events) == 1, mapped
    return mapped.events[0].model_dump()


def to_otlp_json(req: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as exporters write it: protobuf JSON mapping with hex trace/span ids."""
    doc = json_format.MessageToDict(req)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in s:
                        s[k] = base64.b64decode(s[k]).hex()
    return json.dumps(doc).encode()


# ---------------------------------------------------------------------------------------------
# Mapping, per convention
# ---------------------------------------------------------------------------------------------


def test_an_openllmetry_chat_span_becomes_a_response_with_prompt_version_tokens_and_text():
    e = one(spans(OPENLLMETRY))
    assert e["app"] == "support-bot" and e["environment"] == "prod"
    assert (e["model"], e["model_version"], e["provider"]) == (
        "gpt-4o",  # what was requested
        "gpt-4o-2024-08-06",  # what answered
        "openai",
    )
    assert (e["prompt_id"], e["prompt_version"]) == ("refund.answer", "3")
    assert (e["input_tokens"], e["output_tokens"]) == (21, 7)
    assert e["input"] == "system: You are a support agent.\nuser: Where is my refund?"
    assert e["output"] == "It was sent on Monday."
    assert e["user_id"] == "u-42"
    assert e["tags"]["tier"] == "pro" and e["tags"]["workflow"] == "refunds"
    assert e["tags"]["total_tokens"] == "28"
    assert e["status"] == "ok" and e["latency_ms"] >= 2
    assert e["event_id"] == f"otel:{e['trace_id']}:{e['span_id']}"
    assert len(e["trace_id"]) == 32 and len(e["span_id"]) == 16


def test_an_openinference_llm_span_uses_the_message_lists_and_the_template_version():
    e = one(spans({**OPENINFERENCE, "promptblame.prompt.id": "summarize"}))
    assert e["model"] == "gpt-4o-mini-2024-07-18" and e["provider"] == "openai"
    assert (e["prompt_id"], e["prompt_version"]) == ("summarize", "v2")
    assert (e["input_tokens"], e["output_tokens"]) == (12, 5)
    assert e["input"] == "Summarize: cats sleep."  # not the raw JSON of input.value
    assert e["output"] == "Cats nap."
    assert (e["session_id"], e["user_id"]) == ("s-1", "u-1")


def test_openinference_input_and_output_values_are_used_when_there_are_no_messages():
    attrs = {
        k: v for k, v in OPENINFERENCE.items() if not k.startswith(("llm.input", "llm.output"))
    }
    e = one(spans({**attrs, "input.value": "plain question", "output.value": "plain answer"}))
    assert (e["input"], e["output"]) == ("plain question", "plain answer")


def test_a_genai_semconv_span_keeps_the_dated_snapshot_and_reads_the_message_attributes():
    e = one(spans(GENAI, resource={**RESOURCE, "promptblame.prompt.version": "r5"}))
    assert e["model"] == "claude-sonnet-4"
    assert e["model_version"] == "claude-sonnet-4-20250514"
    assert e["provider"] == "anthropic" and e["prompt_version"] == "r5"  # from the resource
    assert (e["input_tokens"], e["output_tokens"]) == (30, 9)
    assert e["input"] == "system: Be brief.\nuser: Capital of France?"
    assert e["output"] == "Paris."
    assert e["session_id"] == "conv-7"
    assert e["tags"]["finish_reasons"] == "end_turn" and e["tags"]["operation"] == "chat"


def test_without_a_response_model_the_request_model_is_model_and_model_version():
    attrs = {k: v for k, v in GENAI.items() if k != "gen_ai.response.model"}
    e = one(spans(attrs))
    assert (e["model"], e["model_version"]) == ("claude-sonnet-4", "claude-sonnet-4")


def test_text_is_read_from_genai_span_events_old_and_new():
    base = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.prompt_tokens": 3,
    }
    old = {
        **base,
        "_events": [
            ("gen_ai.content.prompt", {"gen_ai.prompt": '[{"role": "user", "content": "hi"}]'}),
            ("gen_ai.content.completion", {"gen_ai.completion": '[{"content": "hello"}]'}),
        ],
    }
    new = {
        **base,
        "_events": [
            ("gen_ai.system.message", {"gen_ai.event.content": '{"content": "Be nice."}'}),
            ("gen_ai.user.message", {"gen_ai.event.content": '{"content": "hey"}'}),
            (
                "gen_ai.choice",
                {"gen_ai.event.content": '{"index": 0, "message": {"content": "hey you"}}'},
            ),
        ],
    }
    a, b = otlp.map_request(spans(old, new)).events
    assert (a.input, a.output, a.input_tokens) == ("hi", "hello", 3)
    assert (b.input, b.output) == ("system: Be nice.\nuser: hey", "hey you")


def test_a_failed_llm_call_is_status_error_with_its_error_type():
    e = one(spans({**GENAI, "error.type": "RateLimitError", "_error": "429 Too Many Requests"}))
    assert (e["status"], e["error_type"]) == ("error", "RateLimitError")
    attrs = {k: v for k, v in GENAI.items() if k != "gen_ai.output.messages"}
    e = one(spans({**attrs, "_error": "upstream timed out"}))
    assert (e["status"], e["error_type"]) == ("error", "upstream timed out")


def test_promptblame_attributes_win_over_conventions_and_may_sit_on_the_resource():
    resource = {
        "service.name": "checkout",
        "promptblame.app": "checkout-assistant",
        "deployment.environment": "staging",
        "promptblame.experiment": "exp-9",
    }
    attrs = {
        **OPENLLMETRY,
        "promptblame.prompt.id": "refund.v2",
        "promptblame.prompt.version": "7",
        "promptblame.route": "/refunds",
        "promptblame.variant": "b",
        "promptblame.case_id": "case-3",
    }
    e = one(spans(attrs, resource=resource))
    assert e["app"] == "checkout-assistant" and e["environment"] == "staging"
    assert (e["prompt_id"], e["prompt_version"]) == ("refund.v2", "7")
    assert (e["route"], e["experiment"], e["variant"], e["case_id"]) == (
        "/refunds",
        "exp-9",
        "b",
        "case-3",
    )


def test_langfuse_prompt_link_gives_prompt_id_and_version():
    e = one(
        spans(
            {
                **GENAI,
                "langfuse.observation.prompt.name": "movie-critic",
                "langfuse.observation.prompt.version": 4,
            }
        )
    )
    assert (e["prompt_id"], e["prompt_version"]) == ("movie-critic", "4")


def test_the_genai_conventions_prompt_name_and_version_give_prompt_id_and_version():
    e = one(spans({**GENAI, "gen_ai.prompt.name": "analyze-code", "gen_ai.prompt.version": "v2"}))
    assert (e["prompt_id"], e["prompt_version"]) == ("analyze-code", "v2")
    both = {**GENAI, "gen_ai.prompt.name": "semconv", "promptblame.prompt.id": "ours"}
    assert one(spans(both))["prompt_id"] == "ours"  # ours still win


def test_spans_that_are_not_llm_calls_are_skipped_and_counted():
    req = spans(
        {"_name": "GET /refunds", "http.request.method": "GET", "http.route": "/refunds"},
        {"_name": "retrieve", "openinference.span.kind": "RETRIEVER", "llm.model_name": "x"},
        {"_name": "embed", "gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e3"},
        {"_name": "agent", "gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "m"},
        {"_name": "workflow", "traceloop.span.kind": "workflow", "traceloop.workflow.name": "w"},
        OPENLLMETRY,
    )
    mapped = otlp.map_request(req)
    assert (len(mapped.events), mapped.rejected, mapped.skipped) == (1, [], 5)


def test_a_malformed_llm_span_is_rejected_naming_the_field_and_the_rest_are_kept():
    no_model = {k: v for k, v in GENAI.items() if not k.endswith("model")}
    bad_tokens = {**GENAI, "gen_ai.usage.input_tokens": -3}
    bad_text_tokens = {**OPENINFERENCE, "llm.token_count.completion": "many"}
    mapped = otlp.map_request(spans(GENAI, no_model, bad_tokens, bad_text_tokens, OPENLLMETRY))
    assert len(mapped.events) == 2 and len(mapped.rejected) == 3
    model_msg, tokens_msg, text_msg = mapped.rejected
    assert "model:" in model_msg and "gen_ai.request.model" in model_msg
    assert "input_tokens (from gen_ai.usage.input_tokens)" in tokens_msg
    assert "output_tokens (from llm.token_count.completion)" in text_msg
    assert otlp.rejection_message(mapped.rejected).startswith("3 LLM span(s) rejected: span ")


def test_bad_ids_and_timestamps_are_rejected_per_span():
    req = spans(GENAI, GENAI, GENAI)
    s0, s1, s2 = req.resource_spans[0].scope_spans[0].spans
    s0.trace_id = b"\x00" * 16
    s1.end_time_unix_nano = s1.start_time_unix_nano - 1_000_000  # ends before it starts
    s2.start_time_unix_nano = 5  # 1970
    mapped = otlp.map_request(req)
    assert mapped.events == []
    assert [m.split(": ", 1)[1].split(" ")[0] for m in mapped.rejected] == [
        "trace_id:",
        "latency_ms:",
        "ts:",
    ]


def test_otlp_json_with_hex_ids_decodes_to_the_same_spans_as_protobuf():
    req = spans(GENAI)
    decoded = otlp.decode_json(to_otlp_json(req))
    assert decoded == req
    doc = json.loads(to_otlp_json(req))
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["traceId"] = base64.b64encode(bytes.fromhex(span["traceId"])).decode()
    assert otlp.decode_json(json.dumps(doc).encode()) == req  # base64 ids are tolerated
    span["traceId"] = "not-hex"
    mapped = otlp.map_request(otlp.decode_json(json.dumps(doc).encode()))
    assert mapped.events == [] and "trace_id:" in mapped.rejected[0]


# ---------------------------------------------------------------------------------------------
# POST /v1/traces through the app
# ---------------------------------------------------------------------------------------------

PB = {"Content-Type": "application/x-protobuf"}


def post(client: TestClient, key: str | None, content: bytes, **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post("/v1/traces", content=content, headers={**PB, **auth, **headers})


def stored(client: TestClient, key: str) -> list[dict[str, Any]]:
    r = client.get(
        "/v1/responses", params={"limit": 1000}, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["responses"]
    return rows


def test_a_protobuf_export_is_stored_and_answered_in_protobuf(client, key):
    req = spans(OPENLLMETRY, GENAI, {"_name": "db query", "db.system": "postgresql"})
    r = post(client, key, req.SerializeToString())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(r.content)
    assert not answer.HasField("partial_success")
    assert r.headers["X-Promptblame-Skipped-Spans"] == "1"
    assert "promptblame_otlp_spans_skipped_total 1.0" in client.get("/metrics").text
    rows = {x["model_version"]: x for x in stored(client, key)}
    assert set(rows) == {"gpt-4o-2024-08-06", "claude-sonnet-4-20250514"}
    assert rows["gpt-4o-2024-08-06"]["prompt_version"] == "3"
    assert rows["claude-sonnet-4-20250514"]["output"] == "Paris."


def test_an_otlp_json_export_is_stored_with_hex_ids_and_answered_in_json(client, key):
    req = spans(GENAI)
    r = post(client, key, to_otlp_json(req), **{"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {}
    (row,) = stored(client, key)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    assert (row["trace_id"], row["span_id"]) == (span.trace_id.hex(), span.span_id.hex())


def test_a_batch_with_broken_spans_stores_the_good_ones_and_reports_partial_success(client, key):
    no_model = {k: v for k, v in GENAI.items() if not k.endswith("model")}
    req = spans(GENAI, no_model, OPENINFERENCE, {**GENAI, "gen_ai.usage.output_tokens": -1})
    r = post(client, key, req.SerializeToString())
    assert r.status_code == 200, r.text
    partial = ExportTraceServiceResponse.FromString(r.content).partial_success
    assert partial.rejected_spans == 2
    assert "model:" in partial.error_message and "output_tokens" in partial.error_message
    assert len(stored(client, key)) == 2

    r = post(client, key, to_otlp_json(req), **{"Content-Type": "application/json"})
    assert r.json()["partialSuccess"]["rejectedSpans"] == "2"


def test_the_same_export_sent_twice_is_stored_once(client, key, embedded_store):
    body = spans(GENAI, OPENLLMETRY, OPENINFERENCE).SerializeToString()
    assert post(client, key, body).status_code == 200
    assert post(client, key, body).status_code == 200
    assert embedded_store.count("responses", "acme") == 3
    assert len(stored(client, key)) == 3


def test_a_gzipped_export_is_accepted_and_broken_gzip_is_400(client, key):
    body = spans(GENAI).SerializeToString()
    r = post(client, key, gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert len(stored(client, key)) == 1
    r = post(client, key, b"not gzip", **{"Content-Encoding": "gzip"})
    assert r.status_code == 400


def test_whole_request_errors_401_415_400_413(client, key):
    body = spans(GENAI).SerializeToString()
    assert post(client, None, body).status_code == 401
    assert post(client, "pb_nope_nope", body).status_code == 401
    assert post(client, key, body, **{"Content-Type": "text/plain"}).status_code == 415
    assert post(client, key, b"\xff\xff\xff garbage").status_code == 400
    r = post(client, key, b"{not json", **{"Content-Type": "application/json"})
    assert r.status_code == 400
    huge = b"\x00" * (10 * 1024 * 1024 + 1)
    assert post(client, key, huge).status_code == 413
    assert stored(client, key) == []


def test_errors_to_a_protobuf_export_are_protobuf_status_messages_as_otlp_asks(client, key):
    """An OTLP exporter decodes a failed export's body as google.rpc.Status and logs its
    message; JSON there would be logged as undecodable."""
    body = spans(GENAI).SerializeToString()
    for r, status, code, words in (
        (post(client, None, body), 401, 16, "api key"),
        (post(client, key, b"\xff\xff\xff garbage"), 400, 3, "OTLP"),
        (post(client, key, b"\x00" * (10 * 1024 * 1024 + 1)), 413, 8, "bytes"),
    ):
        assert r.status_code == status
        assert r.headers["content-type"] == "application/x-protobuf"
        answer = RpcStatus.FromString(r.content)
        assert answer.code == code and words in answer.message, answer.message
    r = post(client, None, b"{}", **{"Content-Type": "application/json"})
    assert r.status_code == 401 and "api key" in r.json()["detail"]  # OTLP/JSON: JSON errors


# ---------------------------------------------------------------------------------------------
# The real OTLP exporter against a live server
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    made = cli(tmp_path, "keys", "create", "--project", "otel")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    port = free_port()
    proc = start_server(tmp_path, port)
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_opentelemetry_sdk_exporter_ships_llm_spans_to_a_live_server(live_server, monkeypatch):
    """Configured only through the OTEL_* variables, as the README says."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    url, key = live_server
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{url}/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"Authorization=Bearer%20{key}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "docs-qa")
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES",
        "deployment.environment.name=prod,promptblame.prompt.id=docs.answer",
    )
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("handle request"):  # a parent that is not an LLM call
        for i in range(20):
            attrs: dict[str, Any] = {
                **GENAI,
                "promptblame.prompt.version": "v4",
                "gen_ai.usage.input_tokens": 100 + i,
            }
            with tracer.start_as_current_span("chat claude-sonnet-4", attributes=attrs):
                time.sleep(0.01)
    assert provider.force_flush(30_000)
    provider.shutdown()

    r = httpx.get(
        f"{url}/v1/responses",
        params={"limit": 100, "prompt_version": "v4"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    rows = r.json()["responses"]
    assert len(rows) == 20
    assert {(x["app"], x["environment"], x["prompt_id"]) for x in rows} == {
        ("docs-qa", "prod", "docs.answer")
    }
    assert {x["model_version"] for x in rows} == {"claude-sonnet-4-20250514"}
    assert sorted(x["input_tokens"] for x in rows) == list(range(100, 120))
    assert all(x["output_tokens"] == 9 for x in rows)
    assert all(10 <= x["latency_ms"] < 5_000 for x in rows)
    assert {x["output"] for x in rows} == {"Paris."}
    assert {x["input"] for x in rows} == {"system: Be brief.\nuser: Capital of France?"}


# ---------------------------------------------------------------------------------------------
# Worker processes (ingest.otlp_pool)
# ---------------------------------------------------------------------------------------------
def test_exports_mapped_in_worker_processes_give_the_rows_of_the_event_loop():
    bad_tokens = {**GENAI, "gen_ai.usage.output_tokens": -1}
    req = spans(OPENLLMETRY, GENAI, OPENINFERENCE, {"_name": "db", "db.system": "pg"}, bad_tokens)
    body, limits = req.SerializeToString(), IngestLimits()

    async def through(processes: int) -> otlp.Rows:
        pool = OtlpPool(processes)
        try:
            return await pool.rows(body, False, "acme", limits)
        finally:
            pool.close()

    workers, inline = asyncio.run(through(2)), asyncio.run(through(0))
    assert workers.table.num_rows == 3 and workers.skipped == 1 and len(workers.rejected) == 1
    assert (workers.rejected, workers.skipped) == (inline.rejected, inline.skipped)
    same = [workers.table.drop_columns("received_at"), inline.table.drop_columns("received_at")]
    assert same[0].equals(same[1])


def test_a_worker_that_dies_fails_its_export_with_a_retryable_503_and_the_next_is_stored(
    client, key
):
    assert post(client, key, spans(GENAI).SerializeToString()).status_code == 200
    pool = client.app.state.pb.otlp
    assert pool.processes > 0 and pool._executor is not None  # the export ran in a worker
    for proc in list(pool._executor._processes.values()):
        proc.kill()
        proc.join(10)
    lost = post(client, key, spans(OPENLLMETRY).SerializeToString())
    assert lost.status_code == 503 and lost.headers["Retry-After"] == "1"
    assert "worker process" in RpcStatus.FromString(lost.content).message
    retried = post(client, key, spans(OPENLLMETRY).SerializeToString())
    assert retried.status_code == 200, retried.text
    assert len(stored(client, key)) == 2


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def test_worker_processes_exit_when_the_server_is_killed(tmp_path):
    made = cli(tmp_path, "keys", "create", "--project", "otel")
    key, port = made.stdout.strip(), free_port()
    proc = start_server(tmp_path, port)
    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/traces",
            content=spans(GENAI).SerializeToString(),
            headers={**PB, "Authorization": f"Bearer {key}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        workers = _children(proc.pid)
        assert workers  # the export was mapped in a worker process
    finally:
        proc.kill()  # kill -9: no shutdown code runs in the server
        proc.wait(30)
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{w}").exists() for w in workers)
