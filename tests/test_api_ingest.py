"""Ingest over HTTP against the real chDB engine: per-event rejection, whole-request errors,
gzip, idempotent retries, late and early scores."""

from __future__ import annotations

import gzip
import json
import threading
import time

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from promptblame.api.app import create_app
from promptblame.api.auth import new_key
from promptblame.settings import Settings
from promptblame.store import ResponseFilter
from promptblame.store.embedded import EmbeddedStore
from promptblame.store.schema import MIGRATIONS
from tests.helpers import auth, body, event


def post(client: TestClient, key: str, path: str, content: bytes, **headers: str):
    return client.post(path, content=content, headers={**auth(key), **headers})


def test_a_valid_batch_is_stored_and_read_back(client, key, embedded_store):
    r = post(client, key, "/v1/responses", body("responses", [event(i) for i in range(50)]))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 50, "rejected": []}
    assert embedded_store.count("responses", "acme") == 50
    page = client.get("/v1/responses", params={"limit": 5}, headers=auth(key)).json()
    assert [x["event_id"] for x in page["responses"]] == [f"evt-{i}" for i in (49, 48, 47, 46, 45)]
    assert page["responses"][0]["tags"] == {"tier": "free"}
    assert page["responses"][0]["output"] == "answer 49 <script>alert(1)</script>"


def test_invalid_events_are_rejected_by_index_with_field_and_reason_and_the_rest_stored(
    client, key, embedded_store
):
    items = [
        event(0),
        event(1, ts="yesterday"),
        event(2, latency_ms=-5),
        {k: v for k, v in event(3).items() if k != "model"},
        event(4, promt_version="v2"),
        event(5, status="maybe"),
        "not an object",
        event(7),
    ]
    r = post(client, key, "/v1/responses", body("responses", items))
    assert r.status_code == 207
    out = r.json()
    assert out["accepted"] == 2
    fields = {x["index"]: [e["field"] for e in x["errors"]] for x in out["rejected"]}
    assert fields == {
        1: ["ts"],
        2: ["latency_ms"],
        3: ["model"],
        4: ["promt_version"],
        5: ["status"],
        6: ["(event)"],
    }
    assert out["rejected"][0]["event_id"] == "evt-1"
    assert all(e["message"] for x in out["rejected"] for e in x["errors"])
    assert embedded_store.count("responses", "acme") == 2


def test_text_that_is_not_valid_unicode_is_kept_with_replacement_characters(
    client, key, embedded_store
):
    garbled = json.dumps({"responses": [event(0), event(1)]}).replace(
        "answer 1 ", "answer 1 \\udc80 \\ud83d\\ude00 "
    )
    raw = garbled.encode().replace(b"answer 0 ", b"answer 0 \xff\xfe ")
    r = post(client, key, "/v1/responses", raw)
    assert r.status_code == 200, r.text
    outputs = {
        x["event_id"]: x["output"]
        for x in embedded_store.list_responses("acme", ResponseFilter(), limit=10)
    }
    assert outputs["evt-1"].startswith("answer 1 \ufffd \U0001f600 ")
    assert outputs["evt-0"].startswith("answer 0 \ufffd\ufffd ")


def test_timestamps_in_the_far_future_or_before_2000_are_refused_with_the_reason(client, key):
    items = [event(0, ts="2999-01-01T00:00:00Z"), event(1, ts=946_684_700)]
    r = post(client, key, "/v1/responses", body("responses", items))
    assert r.status_code == 422
    messages = [x["errors"][0]["message"] for x in r.json()["rejected"]]
    assert "future" in messages[0] and "2000" in messages[1]


def test_a_batch_with_no_valid_event_is_422(client, key):
    r = post(client, key, "/v1/responses", body("responses", [event(0, app="")]))
    assert r.status_code == 422
    assert r.json()["rejected"][0]["errors"][0]["field"] == "app"


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {}, 400),
        (b"[]", {}, 422),
        (b'{"responses": {}}', {}, 422),
        (b'{"responses": [], "extra": 1}', {}, 422),
        (b"{}", {"Content-Type": "text/plain"}, 415),
        (b"{}", {"Content-Encoding": "br"}, 415),
        (b"not gzip", {"Content-Encoding": "gzip"}, 400),
    ],
)
def test_whole_request_errors_have_their_status_and_a_reason(client, key, content, headers, status):
    r = post(client, key, "/v1/responses", content, **headers)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_bodies_over_the_size_limit_are_413_even_when_gzip_hides_it(client, key):
    big = body("responses", [event(0, output="x" * 11 * 1024 * 1024)])
    assert post(client, key, "/v1/responses", big).status_code == 413
    bomb = gzip.compress(big)
    assert len(bomb) < 100_000
    r = post(client, key, "/v1/responses", bomb, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413


def test_more_events_than_allowed_in_one_request_is_413(client, key):
    items = [{"event_id": str(i)} for i in range(10_001)]
    r = post(client, key, "/v1/responses", body("responses", items))
    assert r.status_code == 413
    assert "10000" in r.json()["detail"]


def test_gzip_bodies_are_accepted(client, key, embedded_store):
    gz = body("responses", [event(i) for i in range(10)], compress=True)
    r = post(client, key, "/v1/responses", gz, **{"Content-Encoding": "gzip"})
    assert r.status_code == 200
    assert embedded_store.count("responses", "acme") == 10


def test_retrying_the_same_batch_three_times_stores_one_copy(client, key, embedded_store):
    batch = body("responses", [event(i) for i in range(100)])
    for _ in range(3):
        assert post(client, key, "/v1/responses", batch).status_code == 200
    # the same event ids again in a later, differently composed batch
    later = body("responses", [event(i) for i in range(50, 120)])
    assert post(client, key, "/v1/responses", later).status_code == 200
    assert embedded_store.count("responses", "acme") == 120
    versions = client.get("/v1/versions", headers=auth(key)).json()["versions"]
    assert sum(v["responses"] for v in versions) == 120


def test_scores_before_and_after_their_responses_both_count_and_retries_do_not(
    client, key, embedded_store
):
    early = [{"event_id": f"evt-{i}", "name": "helpful", "value": 1.0} for i in range(5)]
    assert post(client, key, "/v1/scores", body("scores", early)).status_code == 200
    assert post(client, key, "/v1/responses", body("responses", [event(i) for i in range(10)]))
    late = [{"event_id": f"evt-{i}", "name": "helpful", "value": 0.0} for i in range(5, 10)]
    for _ in range(2):
        assert post(client, key, "/v1/scores", body("scores", late)).status_code == 200
    v = client.get("/v1/versions", params={"metric": "helpful"}, headers=auth(key)).json()
    score = v["versions"][0]["score"]
    assert score["n"] == 10
    assert score["mean"] == pytest.approx(0.5)
    assert score["ci_low"] < 0.5 < score["ci_high"]
    assert embedded_store.count("scores", "acme") == 10


def test_a_corrected_score_with_a_later_ts_replaces_the_earlier_one(client, key, embedded_store):
    post(client, key, "/v1/responses", body("responses", [event(0)]))
    first = {
        "event_id": "evt-0",
        "name": "helpful",
        "value": 0.0,
        "source": "human",
        "ts": "2026-11-02T00:00:00Z",
    }
    fixed = {**first, "value": 1.0, "ts": "2026-11-03T00:00:00Z"}
    post(client, key, "/v1/scores", body("scores", [first]))
    post(client, key, "/v1/scores", body("scores", [fixed]))
    post(client, key, "/v1/scores", body("scores", [first]))  # a late retry of the old one
    v = client.get("/v1/versions", params={"metric": "helpful"}, headers=auth(key)).json()
    assert v["versions"][0]["score"]["mean"] == 1.0


def test_invalid_scores_name_their_field(client, key):
    items = [
        {"event_id": "e", "name": "ok", "value": 1},
        {"event_id": "e", "name": "bad name!", "value": 1},
        {"event_id": "e", "name": "x", "value": "high"},
        {"event_id": "e", "name": "x", "value": 1, "source": ""},
    ]
    r = post(client, key, "/v1/scores", body("scores", items))
    assert r.status_code == 207
    assert [x["errors"][0]["field"] for x in r.json()["rejected"]] == ["name", "value", "source"]


def test_metrics_count_accepted_and_rejected_events(client, key):
    post(client, key, "/v1/responses", body("responses", [event(0), event(1, ts="x")]))
    text = client.get("/metrics").text
    assert 'promptblame_events_accepted_total{kind="responses"} 1.0' in text
    assert 'promptblame_events_rejected_total{kind="responses"} 1.0' in text
    assert "promptblame_write_seconds_bucket" in text
    assert "promptblame_write_queue_rows 0.0" in text


class GatedStore(EmbeddedStore):
    """The real embedded store whose inserts wait for a gate: makes the queue fill on demand."""

    gate: threading.Event

    def insert(self, table: str, data: pa.Table, *, stamp: bool = False) -> None:
        self.gate.wait(30)
        super().insert(table, data, stamp=stamp)


def test_a_full_write_queue_answers_503_with_retry_after_and_loses_nothing(
    embedded_settings: Settings,
):
    settings = embedded_settings.model_copy(update={"write_queue_max_rows": 15})
    store = GatedStore(settings.data_dir, settings.database)
    store.gate = threading.Event()
    store.migrate()
    plaintext, record = new_key("acme", ["ingest", "read"])
    store.put_api_key(record)
    try:
        with TestClient(create_app(settings, store)) as c:
            results: list[int] = []
            first_batch = body("responses", [event(i) for i in range(10)])
            first = threading.Thread(
                target=lambda: results.append(
                    post(c, plaintext, "/v1/responses", first_batch).status_code
                )
            )
            first.start()  # held by the gate: its 10 rows wait to be written
            deadline = time.monotonic() + 10
            while c.get("/healthz").json()["write_queue_rows"] < 10:
                assert time.monotonic() < deadline, "the first batch never reached the queue"
                time.sleep(0.01)

            second_batch = body("responses", [event(i) for i in range(10, 20)])
            full = post(c, plaintext, "/v1/responses", second_batch)
            assert full.status_code == 503
            assert full.headers["Retry-After"] == "1"
            assert "waiting to be written" in full.json()["detail"]

            store.gate.set()
            first.join()
            assert results == [200]
            assert post(c, plaintext, "/v1/responses", second_batch).status_code == 200
            assert store.count("responses", "acme") == 20
    finally:
        store.gate.set()
        store.close()


def test_reads_filter_by_version_route_and_time_and_page_without_gaps(client, key):
    items = [event(i, prompt_version="v2" if i >= 30 else "v1") for i in range(60)]
    post(client, key, "/v1/responses", body("responses", items))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 7, "prompt_version": "v2", "route": "refunds"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/responses", params=params, headers=auth(key)).json()
        seen += [x["event_id"] for x in page["responses"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"evt-{i}" for i in range(59, 29, -1) if i % 2]
    window = client.get(
        "/v1/responses",
        params={"since": "2026-11-01T12:00:10Z", "until": "2026-11-01T12:00:12Z"},
        headers=auth(key),
    ).json()
    assert [x["event_id"] for x in window["responses"]] == ["evt-11", "evt-10"]


def test_bad_query_parameters_name_the_parameter(client, key):
    r = client.get("/v1/responses", params={"limit": 0}, headers=auth(key))
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "query.limit"
    r = client.get("/v1/responses", params={"cursor": "@@@"}, headers=auth(key))
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "cursor"
    r = client.get("/v1/versions", params={"since": "soon"}, headers=auth(key))
    assert r.json()["detail"][0]["field"] == "query.since"


def test_healthz_reports_the_store_and_schema(client):
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/healthz").json()["schema_version"] == MIGRATIONS[-1].version


def test_version_summary_has_counts_and_first_last_seen(client, key):
    items = [event(i, prompt_version="v2" if i >= 3 else "v1") for i in range(5)]
    post(client, key, "/v1/responses", body("responses", items))
    versions = client.get("/v1/versions", headers=auth(key)).json()["versions"]
    assert [(v["prompt_version"], v["responses"]) for v in versions] == [("v1", 3), ("v2", 2)]
    assert versions[1]["first_seen"] == "2026-11-01T12:00:03Z"
    assert "score" not in versions[0]
    assert json.dumps(versions)


def test_the_store_filter_matches_what_the_endpoint_reports(client, key, embedded_store):
    post(client, key, "/v1/responses", body("responses", [event(i) for i in range(4)]))
    rows = embedded_store.list_responses("acme", ResponseFilter(route="billing"), limit=10)
    assert {r["event_id"] for r in rows} == {"evt-0", "evt-2"}


def test_a_client_that_hangs_up_mid_body_is_answered_400_not_an_unhandled_error(
    client, key, embedded_store
):
    """A dropped connection is the client's network, not a server fault: no exception escapes
    the app (uvicorn would log it as an ERROR with a traceback), and nothing is stored."""
    whole = body("responses", [event(i) for i in range(10)])
    incoming: list[dict] = [
        {"type": "http.request", "body": whole[: len(whole) // 2], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = {"content-type": "application/json", "content-length": str(len(whole)), **auth(key)}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/responses",
        "raw_path": b"/v1/responses",
        "query_string": b"",
        "root_path": "",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    client.portal.call(client.app, scope, receive, send)

    assert sent[0]["status"] == 400
    assert b"disconnected" in sent[1]["body"]
    assert embedded_store.count("responses", "acme") == 0
