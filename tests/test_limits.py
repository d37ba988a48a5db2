"""Limits: request size, batch length, string length, tag count, per-key rate, body read time.

Each limit is a setting (README lists them); each refusal names the limit and the field or
setting it comes from. And a slow client cannot hold the writer: the writer only ever receives
batches that were read in full and validated, so a client trickling its body holds nothing but
its own connection while other clients' ingests go through.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from promptblame.api.app import create_app
from promptblame.api.auth import new_key
from promptblame.api.ratelimit import TokenBuckets
from promptblame.errors import RateLimited
from promptblame.settings import Settings
from promptblame.store import Store
from tests.helpers import auth, body, event
from tests.server_process import cli, free_port, start_server

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(embedded_settings: Settings, embedded_store: Store) -> Iterator[MakeClient]:
    """The API on the test's database with some settings changed."""
    opened: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings(**{**embedded_settings.model_dump(), **overrides})
        c = TestClient(create_app(settings, embedded_store))
        c.__enter__()
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def post(client: TestClient, key: str, path: str, content: Any, **headers: str) -> httpx.Response:
    return client.post(path, content=content, headers={**auth(key), **headers})


def detail_of(r: httpx.Response) -> str:
    """The error's words: `detail` of JSON, or the message of OTLP's protobuf rpc Status."""
    if r.headers["content-type"].startswith("application/x-protobuf"):
        from google.rpc.status_pb2 import Status

        return str(Status.FromString(r.content).message)
    return str(r.json()["detail"])


def errors_of(r: httpx.Response) -> dict[str, str]:
    """{field: message} of the first rejected event of a 207/422."""
    return {e["field"]: e["message"] for e in r.json()["rejected"][0]["errors"]}


# --- request size -------------------------------------------------------------------------


def test_a_body_over_max_request_bytes_is_413_naming_the_setting_on_every_route(make_client, key):
    c = make_client(max_request_bytes=4096)
    big = body("responses", [event(0, output="x" * 5000)])
    for path in ("/v1/responses", "/v1/scores", "/v1/traces", "/v1/evaluators"):
        method = "PUT" if path == "/v1/evaluators" else "POST"
        r = c.request(method, path, content=big, headers=auth(key))
        assert r.status_code == 413, (path, r.text)
        assert r.json()["detail"] == (
            f"body of {len(big)} bytes is over the 4096-byte limit (PROMPTBLAME_MAX_REQUEST_BYTES)"
        )


def test_a_chunked_body_without_content_length_is_cut_off_at_the_limit(make_client, key):
    c = make_client(max_request_bytes=4096)
    big = body("responses", [event(0, output="x" * 5000)])
    chunks = [big[i : i + 1000] for i in range(0, len(big), 1000)]
    for method, path in (("POST", "/v1/responses"), ("PUT", "/v1/alert-rules")):
        r = c.request(method, path, content=iter(chunks), headers=auth(key))
        assert r.status_code == 413, (path, r.text)
        assert "over the 4096-byte limit (PROMPTBLAME_MAX_REQUEST_BYTES)" in r.json()["detail"]


def test_gzip_that_inflates_past_the_limit_is_413(make_client, key):
    c = make_client(max_request_bytes=4096)
    big = gzip.compress(body("responses", [event(0, output="x" * 5000)]))
    assert len(big) < 4096
    r = post(c, key, "/v1/responses", big, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert r.json()["detail"] == (
        "body is over 4096 bytes once decompressed (PROMPTBLAME_MAX_REQUEST_BYTES)"
    )


# --- batch length ---------------------------------------------------------------------------


def test_more_events_than_max_events_per_request_is_413_naming_field_and_limit(make_client, key):
    c = make_client(max_events_per_request=3)
    r = post(c, key, "/v1/responses", body("responses", [event(i) for i in range(4)]))
    assert r.status_code == 413
    assert r.json()["detail"] == (
        "responses: 4 in one request; the limit is 3 (PROMPTBLAME_MAX_EVENTS_PER_REQUEST)"
    )
    scores = [{"event_id": "e", "name": "n", "value": 1}] * 4
    r = post(c, key, "/v1/scores", body("scores", scores))
    assert r.status_code == 413 and r.json()["detail"].startswith("scores: 4 in one request")
    assert post(c, key, "/v1/responses", body("responses", [event(0)] * 3)).status_code == 200

    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for i in range(4):
        spans.add(
            trace_id=bytes(range(1, 17)),
            span_id=bytes([9] * 7 + [i + 1]),
            attributes=[KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="m"))],
        )
    r = post(
        c,
        key,
        "/v1/traces",
        req.SerializeToString(),
        **{"Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 413
    assert detail_of(r) == (
        "spans: 4 LLM spans in one request; the limit is 3 (PROMPTBLAME_MAX_EVENTS_PER_REQUEST)"
    )


# --- string length and tag count ------------------------------------------------------------


def test_default_string_and_tag_limits_reject_the_event_naming_field_and_limit(client, key):
    cases = [
        (event(0, prompt_version="v" * 257), "prompt_version", "at most 256 characters"),
        (event(1, event_id="e" * 257), "event_id", "at most 256 characters"),
        (event(2, output="o" * 2_000_001), "output", "at most 2000000 characters"),
        (event(3, tags={f"t{i}": "v" for i in range(65)}), "tags", "at most 64 items"),
        (event(4, tags={"k": "v" * 4097}), "tags.k", "at most 4096 characters"),
    ]
    for item, field, limit in cases:
        r = post(client, key, "/v1/responses", body("responses", [item, event(9)]))
        assert r.status_code == 207, r.text
        errors = errors_of(r)
        assert field in errors and limit in errors[field], (field, errors)
    ok = event(5, prompt_version="v" * 256, tags={f"t{i}": "v" * 4096 for i in range(64)})
    assert post(client, key, "/v1/responses", body("responses", [ok])).status_code == 200


def test_string_and_tag_limits_follow_the_settings(make_client, key):
    c = make_client(max_text_chars=100, max_name_chars=64, max_tags=2, max_tag_value_chars=8)
    cases = [
        (event(0, output="o" * 101), "output", "at most 100 characters"),
        (event(1, route="r" * 65), "route", "at most 64 characters"),
        (event(2, tags={"a": "1", "b": "2", "c": "3"}), "tags", "at most 2 items"),
        (event(3, tags={"a": "123456789"}), "tags.a", "at most 8 characters"),
    ]
    for item, field, limit in cases:
        r = post(c, key, "/v1/responses", body("responses", [item]))
        assert r.status_code == 422, r.text
        errors = errors_of(r)
        assert field in errors and limit in errors[field], (field, errors)
    schema = c.get("/openapi.json").json()["components"]["schemas"]["ResponseEvent"]
    assert schema["properties"]["output"]["maxLength"] == 100
    assert schema["properties"]["tags"]["maxProperties"] == 2
    ok = event(4, output="o" * 100, route="r" * 64, tags={"a": "12345678", "b": ""})
    assert post(c, key, "/v1/responses", body("responses", [ok])).status_code == 200


def test_otlp_text_and_tags_are_cut_to_the_limits_not_rejected(make_client, key):
    c = make_client(max_text_chars=50, max_tags=3)
    req = ExportTraceServiceRequest()
    span = (
        req.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=bytes(range(1, 17)),
            span_id=bytes(range(1, 9)),
            name="chat",
            start_time_unix_nano=time.time_ns() - 10**9,
            end_time_unix_nano=time.time_ns(),
        )
    )
    attrs = {"gen_ai.request.model": "m", "gen_ai.completion.0.content": "y" * 80}
    attrs |= {f"promptblame.tags.t{i}": str(i) for i in range(5)}
    span.attributes.extend(
        KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()
    )
    r = post(
        c, key, "/v1/traces", req.SerializeToString(), **{"Content-Type": "application/x-protobuf"}
    )
    assert r.status_code == 200
    (row,) = c.get("/v1/responses", headers=auth(key)).json()["responses"]
    assert row["output"] == "y" * 50 and len(row["tags"]) == 3


# --- per-key rate limit ---------------------------------------------------------------------


def test_token_buckets_refill_at_the_rate_up_to_the_burst():
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token comes back in 1/rate s
    assert buckets.take("b") == 0.0  # another key has its own bucket
    now[0] = 0.5
    assert buckets.take("a") == 0.0
    now[0] = 100.0  # a long pause refills to the burst, not beyond
    assert [buckets.take("a") for _ in range(4)][-1] > 0
    with pytest.raises(RateLimited) as exc:
        buckets.check("a")
    assert exc.value.retry_after == 1
    assert "rate limit of 2 requests/s (burst 3" in str(exc.value)
    assert TokenBuckets(rate=0, burst=1).take("a") == 0.0  # 0 disables


def test_a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not(
    make_client, key, embedded_store
):
    c = make_client(rate_limit_per_second=0.5, rate_limit_burst=3)
    other, record = new_key("acme", ["read"])
    embedded_store.put_api_key(record)
    statuses = [c.get("/v1/jobs", headers=auth(key)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    r = c.get("/v1/jobs", headers=auth(key))
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    key_id = key.split("_")[1]
    assert r.json()["detail"] == (
        f"API key {key_id} is over its rate limit of 0.5 requests/s (burst 3;"
        " PROMPTBLAME_RATE_LIMIT_PER_SECOND, PROMPTBLAME_RATE_LIMIT_BURST); retry in 2 s"
    )
    assert post(c, key, "/v1/responses", body("responses", [event(0)])).status_code == 429
    assert c.get("/v1/jobs", headers=auth(other)).status_code == 200
    assert c.get("/healthz").status_code == 200  # no key, no bucket


def test_the_default_rate_limit_leaves_room_for_busy_clients(client, key):
    settings = Settings()
    assert settings.rate_limit_per_second >= 500 and settings.rate_limit_burst >= 1000
    statuses = {client.get("/v1/jobs", headers=auth(key)).status_code for _ in range(100)}
    assert statuses == {200}


# --- slow clients -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory) -> Iterator[tuple[str, str]]:
    data = tmp_path_factory.mktemp("slow") / "data"
    created = cli(data, "keys", "create", "--project", "slow", "--scopes", "ingest,read")
    assert created.returncode == 0, created.stderr
    port = free_port()
    server = start_server(data, port, PROMPTBLAME_BODY_READ_TIMEOUT_SECONDS="4")
    try:
        yield f"127.0.0.1:{port}", created.stdout.strip()
    finally:
        server.terminate()
        server.wait(30)


def _trickle(
    address: str, key: str, payload: bytes, seconds: float, *, stall_after: int | None = None
) -> tuple[int, bytes]:
    """POST `payload` over a raw socket in 20 pieces spread over `seconds`; with `stall_after`,
    send only that many bytes of it and wait for the answer."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        head = (
            "POST /v1/responses HTTP/1.1\r\n"
            f"Host: {address}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        s.sendall(head.encode())
        sent = payload if stall_after is None else payload[:stall_after]
        pieces = 20
        step = max(1, len(sent) // pieces)
        for i in range(0, len(sent), step):
            s.sendall(sent[i : i + step])
            time.sleep(seconds / pieces)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def test_a_client_trickling_its_body_does_not_hold_other_clients_ingests(slow_server):
    address, key = slow_server
    url = f"http://{address}"
    slow_payload = body("responses", [event(i, event_id=f"slow-{i}") for i in range(200)])
    result: dict[str, Any] = {}
    slow = threading.Thread(
        target=lambda: result.update(answer=_trickle(address, key, slow_payload, 2.0))
    )
    slow.start()
    time.sleep(0.3)
    latencies, queued_while_trickling = [], []
    with httpx.Client(base_url=url, headers=auth(key), timeout=10) as fast:
        for n in range(5):
            started = time.perf_counter()
            r = fast.post(
                "/v1/responses", content=body("responses", [event(n, event_id=f"fast-{n}")])
            )
            latencies.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text
            queued_while_trickling.append(fast.get("/healthz").json()["write_queue_rows"])
        assert slow.is_alive(), "the slow client finished too early to prove anything"
        slow.join(30)
        status, answer = result["answer"]
        assert status == 200, answer
        assert json.loads(answer)["accepted"] == 200
        counts = fast.get("/v1/versions").json()["versions"]
    assert max(latencies) < 1.0, latencies  # not waiting for the slow body
    assert queued_while_trickling == [0] * 5  # the half-read body is nowhere near the writer
    assert sum(v["responses"] for v in counts) == 205


def test_a_body_slower_than_the_read_timeout_is_408_and_nothing_is_stored(slow_server):
    address, key = slow_server
    payload = body("responses", [event(i, event_id=f"late-{i}") for i in range(50)])
    started = time.perf_counter()
    status, answer = _trickle(address, key, payload, 1.0, stall_after=len(payload) // 2)
    assert status == 408
    assert json.loads(answer)["detail"] == (
        "body not received within 4 s (PROMPTBLAME_BODY_READ_TIMEOUT_SECONDS);"
        " send it faster or in smaller requests"
    )
    assert 3.9 < time.perf_counter() - started < 7
    with httpx.Client(base_url=f"http://{address}", headers=auth(key), timeout=10) as c:
        rows = c.get("/v1/responses", params={"limit": 1000}).json()["responses"]
    assert not [r for r in rows if r["event_id"].startswith("late-")]
