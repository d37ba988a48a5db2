"""OTLP trace export → response events: decoding and the attribute mapping (no HTTP here).

Apps that already trace their LLM calls with OpenTelemetry should not need a second logging
path, so `POST /v1/traces` takes the spans that GenAI instrumentations emit and keeps the LLM
calls among them. Three attribute conventions are read, first match wins (the table in the
README lists every attribute):

- OpenTelemetry GenAI semantic conventions (`gen_ai.*`, incl. the older `prompt_tokens` names,
  `gen_ai.input.messages` / `gen_ai.output.messages` and the message span events);
- OpenInference (`openinference.span.kind` = LLM, `llm.*`, `input.value` / `output.value`);
- OpenLLMetry / Traceloop (`gen_ai.prompt.N.*`, `gen_ai.completion.N.*`, `llm.request.type`,
  `traceloop.*`); plus Langfuse's prompt link (`langfuse.observation.prompt.name/version`).
  The prompt's name is the conventions' `gen_ai.prompt.name`; they define no version attribute
  yet, so `gen_ai.prompt.version` (what SDKs that tag one use) is read next to the others.

Our own `promptblame.*` attributes (span or resource) win over all of them, because they are
what attribution groups by. The event id is `otel:<trace id>:<span id>`, so an exporter retry
of the same spans replaces rather than adds rows.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from promptblame.errors import MalformedBody, TooLarge
from promptblame.ingest import strict_json
from promptblame.ingest.contracts import MAX_FUTURE, IngestLimits, ResponseEvent, contracts_for
from promptblame.ingest.decode import error_list
from promptblame.ingest.rows import responses_table

# Operations that carry gen_ai.* attributes but are not one model response: embeddings and
# tools have no answer to score, and agent spans wrap the chat spans that are logged anyway.
NON_LLM_OPERATIONS = frozenset(
    {"embeddings", "embedding", "execute_tool", "create_agent", "invoke_agent", "rerank"}
)
# Any of these on a span marks it as an LLM call (unless its operation/kind says otherwise).
LLM_MARKERS = (
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.system",
    "gen_ai.provider.name",
    "gen_ai.operation.name",
    "llm.request.type",
    "llm.model_name",
    "gen_ai.prompt.0.content",
)
_LLM_MARKER_SET = frozenset(LLM_MARKERS)

_PROMPT_ID = (
    "promptblame.prompt.id",
    "gen_ai.prompt.name",  # GenAI semconv registry (development status)
    "traceloop.prompt.key",
    "langfuse.observation.prompt.name",
    "langfuse.prompt.name",
)
_PROMPT_VERSION = (
    "promptblame.prompt.version",
    "gen_ai.prompt.version",  # not in the semconv registry (which names only the prompt); in use
    "llm.prompt_template.version",
    "traceloop.prompt.version",
    "langfuse.observation.prompt.version",
    "langfuse.prompt.version",
)
_PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
_INPUT_TOKENS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "llm.usage.prompt_tokens",
)
_OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "llm.usage.completion_tokens",
)
_ENVIRONMENT = (
    "promptblame.environment",
    "deployment.environment.name",
    "deployment.environment",
    "langfuse.environment",
)
_USER = ("promptblame.user_id", "user.id", "enduser.id", "langfuse.user.id")
_SESSION = (
    "promptblame.session_id",
    "session.id",
    "gen_ai.conversation.id",
    "langfuse.session.id",
)
_REQUEST_MODEL = ("gen_ai.request.model", "llm.request.model")
_RESPONSE_MODEL = ("gen_ai.response.model", "llm.model_name", "llm.response.model")
# (field, attributes in priority order, span attributes only?, cut to a short string?)
_FIELDS: tuple[tuple[str, tuple[str, ...], bool, bool], ...] = (
    ("prompt_id", _PROMPT_ID, False, True),
    ("prompt_version", _PROMPT_VERSION, False, True),
    ("provider", _PROVIDER, False, True),
    ("environment", _ENVIRONMENT, False, True),
    ("user_id", (*_USER, "traceloop.association.properties.user_id"), False, True),
    ("session_id", (*_SESSION, "traceloop.association.properties.session_id"), False, True),
    ("route", ("promptblame.route",), False, True),
    ("experiment", ("promptblame.experiment",), False, True),
    ("variant", ("promptblame.variant",), False, True),
    ("case_id", ("promptblame.case_id",), False, True),
    ("cost_usd", ("promptblame.cost_usd", "gen_ai.usage.cost"), False, False),
    ("input_tokens", _INPUT_TOKENS, True, False),
    ("output_tokens", _OUTPUT_TOKENS, True, False),
)
# Small attributes worth keeping as tags (tag name ← attribute).
_TAG_ATTRS = {
    "gen_ai.operation.name": "operation",
    "gen_ai.response.id": "response_id",
    "gen_ai.response.finish_reasons": "finish_reasons",
    "gen_ai.agent.name": "agent",
    "llm.request.type": "request_type",
    "llm.usage.total_tokens": "total_tokens",
    "llm.token_count.total": "total_tokens",
    "traceloop.workflow.name": "workflow",
    "traceloop.entity.name": "entity",
    "traceloop.prompt.version_name": "prompt_version_name",
    "service.version": "service_version",
}
_TAG_PREFIXES = ("promptblame.tags.", "traceloop.association.properties.")
DEFAULT_LIMITS = IngestLimits()


@functools.cache
def _adapters(limits: IngestLimits) -> tuple[TypeAdapter[Any], type[ResponseEvent]]:
    model = contracts_for(limits).response
    return TypeAdapter(list[model]), model  # type: ignore[valid-type]


@dataclass
class Mapped:
    """What one export request yields: valid events, per-span rejections, skipped spans."""

    events: list[ResponseEvent] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    skipped: int = 0


@dataclass
class Rows:
    """An export request as the writer takes it: the stored rows, per-span rejections, skips."""

    table: pa.Table
    rejected: list[str]
    skipped: int


def rejection_message(rejected: list[str], limit: int = 5) -> str:
    """OTLP partial_success.error_message: the count and the first few reasons."""
    if not rejected:
        return ""
    shown = "; ".join(rejected[:limit])
    more = len(rejected) - limit
    return f"{len(rejected)} LLM span(s) rejected: {shown}" + (
        f"; and {more} more" if more > 0 else ""
    )


def export_rows(body: bytes, is_json: bool, project_id: str, limits: IngestLimits) -> Rows:
    """All the CPU work of one export, from body to rows, in one call with picklable arguments
    and result, so it can run in a worker process (`ingest.otlp_pool`)."""
    req = decode_json(body) if is_json else decode_protobuf(body)
    mapped = map_request(req, limits=limits)
    table = responses_table(project_id, mapped.events, datetime.now(UTC))
    return Rows(table, mapped.rejected, mapped.skipped)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except DecodeError as exc:
        raise MalformedBody(f"not an OTLP ExportTraceServiceRequest (protobuf): {exc}") from None
    return req


_ID_KEYS = frozenset({"traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"})


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON: like protobuf's JSON mapping except that trace/span ids are hex, not base64.

    Read strictly (`strict_json`): a key repeated in any object, or text that is not Unicode,
    refuses the whole request (400 naming where); OTLP exporters never send either."""
    try:
        doc = strict_json.loads(body)
    except RecursionError:
        raise MalformedBody("body is not JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedBody("OTLP/JSON body must be an object with resourceSpans")
    req = ExportTraceServiceRequest()
    try:
        _hex_ids_to_base64(doc)
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    except RecursionError:
        raise MalformedBody("OTLP/JSON body is nested too deeply") from None
    except json_format.ParseError as exc:
        raise MalformedBody(f"not an OTLP ExportTraceServiceRequest (JSON): {exc}") from None
    return req


def _id_bytes(v: str) -> bytes:
    """Hex per the OTLP/JSON spec; base64 (what a plain protobuf JSON encoder writes) is
    accepted too when the text is not hex."""
    try:
        return bytes.fromhex(v)
    except ValueError:
        pass
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _hex_ids_to_base64(node: Any) -> None:
    """Rewrite hex ids in place. Ids that are not hex become empty: that span is then
    rejected by the mapping (with the field named) instead of failing the whole request."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in _ID_KEYS and isinstance(v, str):
                node[k] = base64.b64encode(_id_bytes(v)).decode()
            elif isinstance(v, dict | list):
                _hex_ids_to_base64(v)
    elif isinstance(node, list):
        for v in node:
            _hex_ids_to_base64(v)


# ---------------------------------------------------------------------------------------------
# Mapping
# ---------------------------------------------------------------------------------------------


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _attrs(v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def _attrs(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        v = kv.value
        text = v.string_value  # "" unless a non-empty string: the common case, inlined
        out[kv.key] = text if text else _value(v)
    return out


def is_llm_span(attrs: dict[str, Any]) -> bool:
    kind = attrs.get("openinference.span.kind")
    if kind is not None:
        return str(kind).upper() == "LLM"
    op = attrs.get("gen_ai.operation.name") or attrs.get("llm.request.type")
    if op is not None and str(op).lower() in NON_LLM_OPERATIONS:
        return False
    return not _LLM_MARKER_SET.isdisjoint(attrs)


def iter_spans(
    req: ExportTraceServiceRequest,
) -> Iterator[tuple[dict[str, Any], Span]]:
    for rs in req.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield resource, span


def map_request(
    req: ExportTraceServiceRequest,
    *,
    max_events: int | None = None,
    limits: IngestLimits = DEFAULT_LIMITS,
) -> Mapped:
    """Every span of the request: LLM spans → validated events, the rest counted as skipped.

    Over-long names, texts and tag values are cut to `limits` (as OpenTelemetry SDKs cut
    attributes); `max_events` (default `limits.events`) bounds the LLM spans of one request."""
    max_events = limits.events if max_events is None else max_events
    events_adapter, event_model = _adapters(limits)
    out = Mapped()
    candidates: list[dict[str, Any]] = []
    origins: list[tuple[Span, dict[str, Any], dict[str, Any]]] = []
    for resource, span in iter_spans(req):
        attrs = _attrs(span.attributes)
        if not is_llm_span(attrs):
            out.skipped += 1
            continue
        try:
            candidates.append(span_to_event(span, attrs, resource, limits=limits))
        except (ValueError, TypeError) as exc:
            out.rejected.append(f"span {span.span_id.hex() or '?'}: {exc}")
            continue
        origins.append((span, attrs, resource))
    if len(candidates) > max_events:
        raise TooLarge(
            f"spans: {len(candidates)} LLM spans in one request; the limit is {max_events}"
            " (PROMPTBLAME_MAX_EVENTS_PER_REQUEST)"
        )
    context = {"latest_ts": datetime.now(UTC) + MAX_FUTURE}
    try:  # fast path: one validation pass for the whole batch
        out.events = events_adapter.validate_python(candidates, context=context)
        return out
    except ValidationError:
        pass
    for event, (span, attrs, resource) in zip(candidates, origins, strict=True):
        try:
            out.events.append(event_model.model_validate(event, context=context))
        except ValidationError as exc:
            problems = []
            for err in error_list(exc):
                src = source_of(err["field"], attrs, resource)
                where = f" (from {src})" if src else ""
                problems.append(f"{err['field']}{where}: {err['message']}")
            out.rejected.append(f"span {span.span_id.hex()}: " + ", ".join(problems))
    return out


def span_to_event(
    span: Span,
    attrs: dict[str, Any],
    resource: dict[str, Any],
    *,
    limits: IngestLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """The event dict for one LLM span (validated later, in one pass for the whole batch).

    Raises ValueError (naming the field) for what pydantic cannot say better itself.
    """
    trace_id, span_id = span.trace_id, span.span_id
    if len(trace_id) != 16 or not any(trace_id):
        raise ValueError("trace_id: must be 16 bytes (32 hex digits), not all zero")
    if len(span_id) != 8 or not any(span_id):
        raise ValueError("span_id: must be 8 bytes (16 hex digits), not all zero")
    # model: what the app asked for (gpt-4o); model_version: what answered (the dated
    # snapshot), so a silent provider upgrade shows as a new model_version of the same model
    requested, answered = _lookup(attrs, _REQUEST_MODEL), _lookup(attrs, _RESPONSE_MODEL)
    if requested is None and answered is None:
        raise ValueError(
            "model: no gen_ai.response.model, gen_ai.request.model or llm.model_name attribute"
        )
    max_name = limits.name_chars
    model = str(requested if requested is not None else answered)[:max_name]
    model_version = str(answered if answered is not None else requested)[:max_name]
    trace_hex, span_hex = trace_id.hex(), span_id.hex()
    both = {**resource, **attrs}  # span attributes win over resource attributes
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    e: dict[str, Any] = {
        "event_id": f"otel:{trace_hex}:{span_hex}",
        "ts": datetime.fromtimestamp(start / 1e9, UTC),
        "app": str(both.get("promptblame.app") or resource.get("service.name") or "")[:max_name]
        or "unknown_service",
        "model": model,
        "model_version": model_version,
        "trace_id": trace_hex,
        "span_id": span_hex,
        "latency_ms": (end - start) / 1e6,
    }
    for name, keys, span_only, as_name in _FIELDS:
        where = attrs if span_only else both
        for k in keys:
            v = where.get(k)
            if v is not None and v != "":
                e[name] = str(v)[:max_name] if as_name else v
                break

    events = [(ev.name, _attrs(ev.attributes)) for ev in span.events] if span.events else []
    text_in = input_text(attrs, events)
    if text_in:
        e["input"] = text_in[: limits.text_chars]
    text_out = output_text(attrs, events)
    if text_out:
        e["output"] = text_out[: limits.text_chars]
    if span.status.code == Status.STATUS_CODE_ERROR:
        e["status"] = "error"
        err = attrs.get("error.type") or _exception_type(events) or span.status.message
        e["error_type"] = str(err or "error")[:max_name]
    tags = _tags(both, span.name, limits)
    if tags:
        e["tags"] = tags
    return e


def _lookup(attrs: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = attrs.get(k)
        if v is not None and v != "":
            return v
    return None


def source_of(field_name: str, attrs: dict[str, Any], resource: dict[str, Any]) -> str | None:
    """The attribute a field was read from (for rejection messages; off the hot path)."""
    both = {**resource, **attrs}
    for name, keys, span_only, _ in _FIELDS:
        if name == field_name:
            where = attrs if span_only else both
            return next((k for k in keys if where.get(k) not in (None, "")), None)
    return None


def _exception_type(events: list[tuple[str, dict[str, Any]]]) -> str | None:
    for name, a in events:
        if name == "exception" and a.get("exception.type"):
            return str(a["exception.type"])
    return None


def _tags(attrs: dict[str, Any], span_name: str, limits: IngestLimits) -> dict[str, str]:
    """Known attributes and `promptblame.tags.*` ones, at most `limits.tags` of them."""
    cut = limits.tag_value_chars
    tags: dict[str, str] = {"span_name": span_name[:cut]} if span_name else {}
    for key, tag in _TAG_ATTRS.items():
        v = attrs.get(key)
        if v is not None and v != "" and tag not in tags:
            tags[tag] = _tag_value(v, cut)
    for key, v in attrs.items():
        if key.startswith(_TAG_PREFIXES):
            name = key[len(next(p for p in _TAG_PREFIXES if key.startswith(p))) :]
            if name:
                tags[name[: limits.name_chars]] = _tag_value(v, cut)
    if len(tags) > limits.tags:
        tags = dict(itertools.islice(tags.items(), limits.tags))
    return tags


def _tag_value(v: Any, cut: int) -> str:
    s = ",".join(map(str, v)) if isinstance(v, list) else str(v)
    return s[:cut]


# ---------------------------------------------------------------------------------------------
# Message text
# ---------------------------------------------------------------------------------------------


def _render(messages: list[tuple[str, str]]) -> str:
    """One message: its text. Several: `role: text` per message, so a reader sees the turns."""
    messages = [(r, t) for r, t in messages if t]
    if len(messages) == 1:
        return messages[0][1]
    return "\n".join(f"{r}: {t}" if r else t for r, t in messages)


def _content_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        if len(content) == 1:
            return _content_text(content[0])
        return "\n".join(t for t in map(_content_text, content) if t)
    if isinstance(content, dict):
        for k in ("content", "text", "value"):
            if k in content:
                return _content_text(content[k])
    return ""


def _json_messages(raw: Any) -> list[tuple[str, str]]:
    """GenAI `gen_ai.input.messages` / `gen_ai.output.messages`: JSON list of
    {role, parts: [{type: text, content}]} (also accepts {role, content})."""
    try:
        doc = from_json(raw) if isinstance(raw, str) else raw
    except ValueError:
        return [("", str(raw))]
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list):
        return [("", str(doc))]
    out = []
    for m in doc:
        if isinstance(m, dict):
            body = m.get("parts", m.get("content", m.get("message", "")))
            out.append((str(m.get("role", "")), _content_text(body)))
        else:
            out.append(("", _content_text(m)))
    return out


def _indexed(attrs: dict[str, Any], prefix: str, role: str, content: str) -> list[tuple[str, str]]:
    """Flattened lists: `<prefix>.0.<role>`, `<prefix>.0.<content>`, `<prefix>.1...`."""
    out = []
    i = 0
    while True:
        c = attrs.get(f"{prefix}.{i}.{content}")
        r = attrs.get(f"{prefix}.{i}.{role}")
        if c is None and r is None:
            break
        out.append((str(r or ""), _content_text(c) if c is not None else ""))
        i += 1
    return out


_INPUT_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


def input_text(attrs: dict[str, Any], events: list[tuple[str, dict[str, Any]]]) -> str:
    if "gen_ai.input.messages" in attrs:
        return _render(_json_messages(attrs["gen_ai.input.messages"]))
    for prefix, role, content in (
        ("llm.input_messages", "message.role", "message.content"),  # OpenInference
        ("gen_ai.prompt", "role", "content"),  # OpenLLMetry
    ):
        msgs = _indexed(attrs, prefix, role, content)
        if msgs:
            return _render(msgs)
    if attrs.get("input.value"):
        return str(attrs["input.value"])
    msgs = []
    for name, a in events:
        if name == "gen_ai.content.prompt" and "gen_ai.prompt" in a:
            return _render(_json_messages(a["gen_ai.prompt"]))
        if name == "gen_ai.client.inference.operation.details" and "gen_ai.input.messages" in a:
            return _render(_json_messages(a["gen_ai.input.messages"]))
        if name in _INPUT_EVENTS:
            msgs.append((_INPUT_EVENTS[name], _event_content(a)))
    if msgs:
        return _render(msgs)
    return _content_text(attrs.get("gen_ai.prompt", ""))


def output_text(attrs: dict[str, Any], events: list[tuple[str, dict[str, Any]]]) -> str:
    if "gen_ai.output.messages" in attrs:
        return _render(_json_messages(attrs["gen_ai.output.messages"]))
    for prefix, role, content in (
        ("llm.output_messages", "message.role", "message.content"),
        ("gen_ai.completion", "role", "content"),
    ):
        msgs = _indexed(attrs, prefix, role, content)
        if msgs:
            return "\n".join(t for _, t in msgs if t)
    if attrs.get("output.value"):
        return str(attrs["output.value"])
    outs = []
    for name, a in events:
        if name == "gen_ai.content.completion" and "gen_ai.completion" in a:
            return "\n".join(t for _, t in _json_messages(a["gen_ai.completion"]) if t)
        if name == "gen_ai.client.inference.operation.details" and "gen_ai.output.messages" in a:
            return "\n".join(t for _, t in _json_messages(a["gen_ai.output.messages"]) if t)
        if name == "gen_ai.choice":
            outs.append(_event_content(a))
    if outs:
        return "\n".join(t for t in outs if t)
    return _content_text(attrs.get("gen_ai.completion", ""))


def _event_content(a: dict[str, Any]) -> str:
    """Message events carry their body as JSON in `gen_ai.event.content` (Azure SDKs and
    others) or as plain `content` / `message` attributes."""
    raw = a.get("gen_ai.event.content")
    if raw is not None:
        try:
            body = from_json(raw) if isinstance(raw, str) else raw
        except ValueError:
            return str(raw)
        if isinstance(body, dict) and "message" in body:
            return _content_text(body["message"])
        return _content_text(body)
    for k in ("content", "message", "gen_ai.message.content"):
        if k in a:
            return _content_text(a[k])
    return ""
