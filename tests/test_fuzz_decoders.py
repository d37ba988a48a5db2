"""Property-based tests of the ingest decoders: hostile bodies give clean errors, never crashes.

The decoders are the first code that touches what an app (or an attacker) sends. Whatever the
bytes — random, gzip bombs, JSON nested thousands deep, strings over the limits, invalid UTF-8,
lone surrogates, NaN/Infinity, dates in year 1 or 9999, duplicate ids, OTLP spans with any
attribute values and ids — a decoder either returns events (plus per-event rejections naming
the field) or raises one of our domain errors (MalformedBody → 400, InvalidArgument → 422,
TooLarge → 413). And the good events of a batch survive whatever sits next to them.

Deterministic (tests/fuzzing.py profile); small limits keep examples cheap.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from google.protobuf.message import EncodeError
from hypothesis import assume, given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from promptblame.errors import InvalidArgument, MalformedBody, TooLarge
from promptblame.ingest import otlp
from promptblame.ingest.contracts import IngestLimits
from promptblame.ingest.decode import decode_batch, gunzip
from tests.fuzzing import Hostile, Tally, examples, hostile_json
from tests.helpers import auth, event

LIMITS = IngestLimits(events=50, name_chars=64, text_chars=200, tags=4, tag_value_chars=32)
CLEAN = (MalformedBody, InvalidArgument, TooLarge)
TALLY = Tally("decoder fuzzing (hypothesis)")
NOW = datetime.now(UTC)


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    TALLY.report(request.config)


def good_event(i: int) -> dict[str, Any]:
    e = event(i, event_id=f"good-{i}", tags={"tier": "free"})
    e["ts"] = (NOW - timedelta(hours=1, seconds=i)).isoformat()
    return e


def decode_cleanly(body: bytes, kind: str, limits: IngestLimits = LIMITS) -> Any:
    """decode_batch, which may only raise our domain errors; rejections name their field."""
    try:
        out = decode_batch(body, kind, limits=limits)
    except CLEAN as exc:
        assert str(exc), "an error without words"
        return None
    for r in out.rejected:
        assert isinstance(r["index"], int) and r["errors"]
        for err in r["errors"]:
            assert err["field"] and err["message"], r
    return out


# --- whatever bytes ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=25,
)


@given(body=st.binary(max_size=600), kind=st.sampled_from(["responses", "scores"]))
@examples(150)
def test_any_bytes_decode_to_events_or_a_clean_error(body, kind):
    TALLY.add("JSON decoder: random bytes")
    decode_cleanly(body, kind)
    decode_cleanly(b'{"%s": [' % kind.encode() + body + b"]}", kind)


@given(doc=json_values, kind=st.sampled_from(["responses", "scores"]))
@examples(150)
def test_any_json_document_decodes_to_events_or_a_clean_error(doc, kind):
    TALLY.add("JSON decoder: random JSON documents")
    decode_cleanly(json.dumps(doc).encode(), kind)
    decode_cleanly(json.dumps({kind: doc if isinstance(doc, list) else [doc]}).encode(), kind)


@pytest.mark.parametrize("depth", [150, 250, 5_000, 200_000])
def test_json_nested_thousands_deep_is_a_clean_error_not_a_recursion_crash(depth):
    """Found by this fuzzing: past pydantic's depth limit the lenient fallback parser (json)
    raised RecursionError — a 500 — for a 200 kB body of brackets."""
    deep_list = b'{"responses": [' + b"[" * depth + b"]" * depth + b"]}"
    deep_tags = (
        b'{"responses": [{"event_id": "a", "tags": '
        + b'{"a": ' * depth
        + b"1"
        + b"}" * depth
        + b"}]}"
    )
    deep_surrogate = b'{"responses": ["\\udc80", ' + b"[" * depth + b"]" * depth + b"]}"
    for body in (deep_list, deep_tags, deep_surrogate):
        out = decode_cleanly(body, "responses")
        assert out is None or not out.events  # refused, or every item rejected
    otlp_deep = b'{"resourceSpans": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(MalformedBody):
        otlp.decode_json(otlp_deep)


# --- a hostile batch: the good events survive, each bad one is named --------------------------

# (name, mutation of a good event, raw-bytes patch or None, field the rejection must name;
#  None when the event is valid and must be kept)
HOSTILE: list[tuple[str, dict[str, Any], tuple[bytes, bytes] | None, str | None]] = [
    ("output over the text limit", {"output": "x" * 201}, None, "output"),
    ("route over the name limit", {"route": "r" * 65}, None, "route"),
    ("five tags", {"tags": {f"t{i}": "v" for i in range(5)}}, None, "tags"),
    ("tag value too long", {"tags": {"k": "v" * 33}}, None, "tags.k"),
    ("tag name too long", {"tags": {"k" * 65: "v"}}, None, "tags"),
    ("tag value nested deep", {"tags": {"k": [[[[[{"a": 1}]]]]]}}, None, "tags.k"),
    ("year 1", {"ts": "0001-01-01T00:00:00Z"}, None, "ts"),
    ("year 9999", {"ts": "9999-12-31T23:59:59Z"}, None, "ts"),
    ("ts in a week", {"ts": (NOW + timedelta(days=7)).isoformat()}, None, "ts"),
    ("ts 1e300", {"ts": 1e300}, None, "ts"),
    ("ts -1", {"ts": -1}, None, "ts"),
    ("ts not a date", {"ts": "yesterday"}, None, "ts"),
    ("latency NaN", {"latency_ms": "NAN_TOKEN"}, (b'"NAN_TOKEN"', b"NaN"), "latency_ms"),
    ("cost Infinity", {"cost_usd": "INF_TOKEN"}, (b'"INF_TOKEN"', b"Infinity"), "cost_usd"),
    ("latency -Infinity", {"latency_ms": "NINF"}, (b'"NINF"', b"-Infinity"), "latency_ms"),
    ("tokens 2**40", {"input_tokens": 2**40}, None, "input_tokens"),
    ("negative latency", {"latency_ms": -1}, None, "latency_ms"),
    ("a typo'd field", {"promt_version": "v2"}, None, "promt_version"),
    ("empty event_id", {"event_id": ""}, None, "event_id"),
    ("status 'maybe'", {"status": "maybe"}, None, "status"),
    # kept: free text that cannot be stored as UTF-8 becomes U+FFFD, the event is not lost
    ("invalid UTF-8 in output", {"output": "RAW"}, (b'"RAW"', b'"ok \xff\xfe\xc0 bad"'), None),
    ("lone surrogate in input", {"input": "SUR"}, (b'"SUR"', b'"a \\udc80 b"'), None),
    ("invalid UTF-8 in expected_output", {"expected_output": "EXP"}, (b'"EXP"', b'"\x80"'), None),
    # refused: an identifier, name or tag that is not Unicode cannot be stored as sent (issue 20)
    ("invalid UTF-8 in app", {"app": "RAWAPP"}, (b'"RAWAPP"', b'"h-col\xff"'), "app"),
    (
        "lone surrogate in version",
        {"prompt_version": "SV"},
        (b'"SV"', b'"v\\udc80"'),
        "prompt_version",
    ),
    ("invalid UTF-8 in a tag value", {"tags": {"k": "TAGV"}}, (b'"TAGV"', b'"\xfe"'), "tags.k"),
    ("invalid UTF-8 in a tag name", {"tags": {"TAGK": "v"}}, (b'"TAGK"', b'"\xc0\x80"'), "tags."),
    ("invalid UTF-8 in a field name", {"NAMEK": "v"}, (b'"NAMEK"', b'"\xed\xa0\x80"'), "\\ud"),
    # refused: a key twice in one event (the last value used to win silently)
    ("model twice", {"model": "M2"}, (b'"model": "M2"', b'"model": "a", "model": "b"'), "model"),
    ("event_id twice", {"case_id": "C2"}, (b'"case_id": "C2"', b'"event_id": "other"'), "event_id"),
    ("a tag twice", {"tags": {"k": "v"}}, (b'"k": "v"', b'"k": "v", "k": "w"'), "tags.k"),
    ("emoji and RTL marks", {"output": "👍🏽 \u202e gnp.exe"}, None, None),
]
_HOSTILE_IDS = {name: i for i, (name, *_) in enumerate(HOSTILE)}


def _encode(e: dict[str, Any], patch: tuple[bytes, bytes] | None) -> bytes:
    raw = json.dumps(e).encode()
    return raw.replace(*patch) if patch else raw


batches = st.lists(
    st.one_of(st.integers(0, 40).map(lambda i: ("good", i)), st.sampled_from(HOSTILE)),
    min_size=1,
    max_size=12,
)


@given(items=batches)
@examples(120)
def test_good_events_survive_a_hostile_batch_and_each_bad_event_is_named(items):
    TALLY.add("JSON decoder: hostile batches")
    parts: list[bytes] = []
    expect_good: dict[int, dict[str, Any]] = {}
    expect_bad: dict[int, str] = {}
    for index, item in enumerate(items):
        if item[0] == "good":
            e = good_event(item[1])
            e["event_id"] = f"good-{index}"
            parts.append(_encode(e, None))
            expect_good[index] = e
        else:
            _, mutation, patch, field = item
            e = {**good_event(index), "event_id": f"bad-{index}", **mutation}
            parts.append(_encode(e, patch))
            if field:
                expect_bad[index] = field
            else:
                expect_good[index] = e
    out = decode_cleanly(b'{"responses": [' + b", ".join(parts) + b"]}", "responses")
    assert out is not None
    kept = {e.event_id: e for e in out.events}
    for index, e in expect_good.items():
        assert e["event_id"] in kept, (index, out.rejected)
        if e["event_id"].startswith("good"):
            assert kept[e["event_id"]].output == e["output"]
    assert {r["index"] for r in out.rejected} == set(expect_bad)
    for r in out.rejected:
        fields = [err["field"] for err in r["errors"]]
        assert any(
            f == expect_bad[r["index"]] or f.startswith(expect_bad[r["index"]]) for f in fields
        ), (
            expect_bad[r["index"]],
            r,
        )
    for e in out.events:  # what is kept can be stored: valid Unicode, no surrogates
        for text in (e.input, e.output):
            text.encode("utf-8")


def test_garbled_text_is_kept_with_replacement_characters():
    out = decode_cleanly(
        b'{"responses": ['
        + _encode(good_event(1) | {"output": "X"}, (b'"X"', b'"a\xffb \\ud800"'))
        + b"]}",
        "responses",
    )
    assert out is not None and out.events[0].output == "a\ufffdb \ufffd"


# --- ambiguity anywhere: a repeated key at any depth, non-Unicode text in any position ---------

# valid names of any script (no surrogates, no private-use marks) for ids, versions, tags
names = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Co"]), min_size=1, max_size=12
)


@st.composite
def batch_docs(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    n = draw(st.integers(1, 5))
    ids = draw(st.lists(names, min_size=n, max_size=n, unique=True))
    if kind == "scores":
        items = [
            {"event_id": i, "name": "correct", "value": 1.0, "comment": draw(names)} for i in ids
        ]
    else:
        items = []
        for i in ids:
            e = good_event(0) | {"event_id": i, "prompt_version": draw(names)}
            e["tags"] = draw(st.dictionaries(names, names, max_size=3))
            if draw(st.booleans()):
                e["expected_output"] = draw(names)
            items.append(e)
    return {kind: items}


FREE_TEXT = {"responses": {"input", "output", "expected_output"}, "scores": {"comment"}}


def check_hostile_batch(kind: str, doc: dict[str, Any], h: Hostile) -> None:
    """The ambiguity is refused where it is; every other event is kept exactly as sent."""
    items = doc[kind]
    try:
        out = decode_batch(h.body, kind, limits=LIMITS)
    except (MalformedBody, InvalidArgument) as exc:
        # only an ambiguity outside the events refuses the whole body
        assert len(h.path) <= 1, (h, exc)
        return
    assert len(h.path) >= 2 and h.path[0] == kind, h  # inside event h.path[1]
    bad = h.path[1]
    inner = ".".join(str(p) for p in h.path[2:])
    kept = {e.event_id: e for e in out.events}
    free = h.kind == "bad text" and len(h.path) == 3 and h.path[2] in FREE_TEXT[kind]
    if free:  # free text: kept, the undecodable part replaced
        assert not out.rejected and len(out.events) == len(items)
        text = getattr(kept[items[bad]["event_id"]], str(h.path[2]))
        assert "\ufffd" in text and text.encode("utf-8")
    else:
        (rejection,) = out.rejected
        assert rejection["index"] == bad
        fields = [e["field"] for e in rejection["errors"]]
        if h.kind == "bad key":  # the key itself is named, as \udcXX escapes
            assert any(f.startswith(inner.rpartition(".")[0]) and "\\ud" in f for f in fields)
        else:
            assert inner in fields, (h, rejection)
    for i, item in enumerate(items):  # the others: kept, ids byte for byte
        if i != bad or free:
            assert item["event_id"] in kept, (i, out.rejected)
            assert kept[item["event_id"]].event_id.encode() == item["event_id"].encode()
    assert len(out.events) + len(out.rejected) == len(items)


@given(data=st.data(), kind=st.sampled_from(["responses", "scores"]))
@examples(150)
def test_an_ambiguity_anywhere_in_a_batch_is_refused_where_it_is_and_nothing_else(data, kind):
    """Issue 20: a key repeated at any depth, invalid UTF-8 or a lone surrogate in any key or
    value. Outside the events: the body is refused. In an event: that event is rejected naming
    the key or field, except in free text (input, output, expected_output, comment), where
    the text is kept with U+FFFD. Never a merge, never a last-one-wins."""
    TALLY.add(f"ambiguous JSON: {kind} batches")
    doc = data.draw(batch_docs(kind))
    check_hostile_batch(kind, doc, data.draw(hostile_json(doc)))


@given(
    values=st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(-(2**70), 2**70),
            st.booleans(),
            st.text(max_size=8),
            st.none(),
        ),
        min_size=1,
        max_size=10,
    ),
    names=st.lists(st.text(max_size=12), min_size=1, max_size=10),
)
@examples(100)
def test_scores_with_any_value_or_name_are_kept_or_rejected_by_field(values, names):
    TALLY.add("JSON decoder: score batches")
    scores = [
        {"event_id": f"e{i}", "name": names[i % len(names)], "value": v}
        for i, v in enumerate(values)
    ]
    scores.append({"event_id": "good", "name": "correct", "value": 1.0})
    out = decode_cleanly(json.dumps({"scores": scores}, allow_nan=True).encode(), "scores")
    assert out is not None
    assert any(s.event_id == "good" for s in out.events)
    for s in out.events:
        assert s.value == s.value and abs(s.value) != float("inf")  # no NaN/inf stored
    for r in out.rejected:
        assert {e["field"].split(".")[0] for e in r["errors"]} <= {"name", "value"}


# --- gzip -------------------------------------------------------------------------------------


def test_a_gzip_bomb_is_refused_without_inflating_it():
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = bomb.compress(b"\0" * (256 * 1024 * 1024)) + bomb.flush()  # 256 MB in ~250 kB
    started = time.perf_counter()
    with pytest.raises(TooLarge, match="over 10485760 bytes once decompressed"):
        gunzip(blob, limit=10 * 1024 * 1024)
    assert time.perf_counter() - started < 2
    # several members, each under the limit, together over it
    member = gzip.compress(b"\0" * (6 * 1024 * 1024))
    with pytest.raises(TooLarge):
        gunzip(member + member, limit=10 * 1024 * 1024)
    # gzip inside gzip: one layer is inflated, the inner one is not JSON
    inner = gzip.compress(json.dumps({"responses": [good_event(1)]}).encode())
    with pytest.raises(MalformedBody):
        decode_batch(gunzip(gzip.compress(inner), limit=1 << 20), "responses")


@given(tail=st.binary(max_size=200), cut=st.integers(0, 60))
@examples(100)
def test_damaged_gzip_is_a_clean_error(tail, cut):
    TALLY.add("gzip: damaged streams")
    whole = gzip.compress(json.dumps({"responses": [good_event(1)]}).encode())
    for blob in (whole[: len(whole) - cut] + tail, whole[:10] + tail, b"\x1f\x8b" + tail):
        try:
            body = gunzip(blob, limit=4096)
        except (MalformedBody, TooLarge):
            continue
        decode_cleanly(body, "responses")


def test_a_gzip_bomb_over_http_is_a_413_naming_the_limit(client, key):
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = bomb.compress(b"[" * (64 * 1024 * 1024)) + bomb.flush()
    r = client.post(
        "/v1/responses", content=blob, headers={**auth(key), "Content-Encoding": "gzip"}
    )
    assert r.status_code == 413
    assert "PROMPTBLAME_MAX_REQUEST_BYTES" in r.json()["detail"]


def test_duplicate_ids_in_one_batch_are_stored_once(client: TestClient, key):
    events = [event(1), event(1, output="retry"), event(2), event(1, output="third")]
    r = client.post("/v1/responses", content=json.dumps({"responses": events}), headers=auth(key))
    assert r.status_code == 200 and r.json()["accepted"] == 4
    rows = client.get("/v1/responses", headers=auth(key)).json()["responses"]
    assert sorted(row["event_id"] for row in rows) == ["evt-1", "evt-2"]


# --- OTLP ------------------------------------------------------------------------------------

KEYS = [
    *otlp.LLM_MARKERS,
    "openinference.span.kind",
    "llm.input_messages.0.message.content",
    "llm.input_messages.0.message.role",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.completion.0.content",
    "input.value",
    "output.value",
    "promptblame.prompt.version",
    "promptblame.cost_usd",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "promptblame.tags.tier",
    "traceloop.association.properties.user_id",
    "service.name",
    "error.type",
]
# protobuf strings must be valid UTF-8: no surrogates
texts = st.text(st.characters(codec="utf-8"), max_size=60)
any_values: st.SearchStrategy[AnyValue] = st.deferred(
    lambda: st.one_of(
        texts.map(lambda s: AnyValue(string_value=s)),
        st.sampled_from(['[{"role": "user", "parts": [{"content": "hi"}]}]', "[[[[", "{}"]).map(
            lambda s: AnyValue(string_value=s)
        ),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
        st.floats(allow_nan=True, allow_infinity=True).map(lambda f: AnyValue(double_value=f)),
        st.booleans().map(lambda b: AnyValue(bool_value=b)),
        st.binary(max_size=20).map(lambda b: AnyValue(bytes_value=b)),
        st.lists(any_values, max_size=3).map(
            lambda vs: AnyValue(array_value=ArrayValue(values=vs))
        ),
        st.lists(st.tuples(st.sampled_from(KEYS), any_values), max_size=3).map(
            lambda kvs: AnyValue(
                kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs])
            )
        ),
    )
)
now_ns = int(NOW.timestamp() * 1e9)
hostile_spans = st.builds(
    lambda trace_id, span_id, start, length, attrs, name, status: Span(
        trace_id=trace_id,
        span_id=span_id,
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=max(0, min(2**64 - 1, start + length)),
        attributes=[KeyValue(key=k, value=v) for k, v in attrs],
        status=Status(code=status),
    ),
    trace_id=st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20)),
    span_id=st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=10)),
    start=st.one_of(st.integers(0, 2**64 - 1), st.just(now_ns)),
    length=st.integers(-(10**12), 10**12),
    attrs=st.lists(st.tuples(st.sampled_from([*KEYS, "x", ""]), any_values), max_size=8),
    name=texts,
    status=st.sampled_from([0, 1, 2, 7]),
)


def good_span(i: int) -> Span:
    return Span(
        trace_id=bytes([1] * 15 + [i + 1]),
        span_id=bytes([2] * 7 + [i + 1]),
        name="chat",
        start_time_unix_nano=now_ns - 10**9,
        end_time_unix_nano=now_ns,
        attributes=[
            KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o")),
            KeyValue(key="gen_ai.completion.0.content", value=AnyValue(string_value=f"ok {i}")),
        ],
    )


def _request(
    spans: list[Span], resource: list[tuple[str, AnyValue]], good: tuple[Span, ...] = ()
) -> ExportTraceServiceRequest:
    """Good spans under a clean resource of their own; resource attributes apply to every
    span under them, so a hostile resource may rightly sink its own spans."""
    req = ExportTraceServiceRequest()
    if good:
        req.resource_spans.add().scope_spans.add().spans.extend(good)
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(KeyValue(key=k, value=v) for k, v in resource)
    rs.scope_spans.add().spans.extend(spans)
    return req


def _hex_ids(node: Any) -> Any:
    """MessageToJson writes ids as base64; OTLP/JSON wants hex."""
    if isinstance(node, dict):
        return {
            k: base64.b64decode(v).hex()
            if k in ("traceId", "spanId", "parentSpanId")
            else _hex_ids(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def map_cleanly(req: ExportTraceServiceRequest, n_spans: int) -> otlp.Mapped:
    mapped = otlp.map_request(req, limits=LIMITS)
    assert len(mapped.events) + len(mapped.rejected) + mapped.skipped == n_spans
    for message in mapped.rejected:
        assert message.startswith("span ") and ": " in message
    for e in mapped.events:
        assert len(e.output) <= LIMITS.text_chars and len(e.tags) <= LIMITS.tags
    return mapped


@given(
    spans=st.lists(hostile_spans, max_size=6),
    resource=st.lists(st.tuples(st.sampled_from(KEYS), any_values), max_size=4),
    n_good=st.integers(0, 3),
)
@examples(150)
def test_otlp_spans_with_any_ids_times_and_attributes_map_cleanly_in_both_encodings(
    spans, resource, n_good
):
    TALLY.add("OTLP: hostile span batches (protobuf + JSON)")
    good = tuple(good_span(i) for i in range(n_good))
    req = _request(spans, resource, good)
    try:
        wire = req.SerializeToString()
    except EncodeError:
        assume(False)
    mapped = map_cleanly(otlp.decode_protobuf(wire), len(good) + len(spans))
    ids = {e.event_id for e in mapped.events}
    for s in good:
        assert f"otel:{s.trace_id.hex()}:{s.span_id.hex()}" in ids
    as_json = json.dumps(_hex_ids(json_format.MessageToDict(req))).encode()
    again = map_cleanly(otlp.decode_json(as_json), len(good) + len(spans))
    assert len(again.events) == len(mapped.events) and again.skipped == mapped.skipped


@given(
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 40),
)
@examples(150)
def test_damaged_otlp_protobuf_is_a_clean_error_or_maps_cleanly(flips, cut):
    TALLY.add("OTLP: damaged protobuf")
    wire = bytearray(_request([good_span(0), good_span(1)], []).SerializeToString())
    for at, byte in flips:
        wire[at % len(wire)] = byte
    body = bytes(wire[: len(wire) - cut])
    try:
        req = otlp.decode_protobuf(body)
    except MalformedBody:
        return
    n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    map_cleanly(req, n)


@given(doc=json_values)
@examples(100)
def test_any_json_is_a_clean_otlp_error_or_maps_cleanly(doc):
    TALLY.add("OTLP: random JSON")
    for body in (json.dumps(doc).encode(), json.dumps({"resourceSpans": doc}).encode()):
        try:
            req = otlp.decode_json(body)
        except MalformedBody:
            continue
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        map_cleanly(req, n)


def test_duplicate_span_ids_in_one_otlp_request_are_stored_once(client: TestClient, key):
    req = _request([good_span(0), good_span(0), good_span(1)], [])
    r = client.post(
        "/v1/traces",
        content=req.SerializeToString(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 200
    rows = client.get("/v1/responses", headers=auth(key)).json()["responses"]
    assert len(rows) == 2
