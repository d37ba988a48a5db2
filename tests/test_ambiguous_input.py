"""Issue 20, pinned down: the exact requests of the hostile-input probe, and the guard that
keeps every JSON body route (present and future) on the strict JSON reader.

Found: a forged cursor was a 500; two events whose ids differed only in invalid UTF-8 became
one row behind two 200s; a repeated key made an acknowledged batch store nothing (or let the
last value of an event's key win silently).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute

from promptblame.api.app import create_app
from promptblame.api.json_body import StrictJSONRoute
from promptblame.errors import MalformedBody
from promptblame.ingest import strict_json
from promptblame.settings import Settings
from promptblame.store import ResponseFilter
from tests.helpers import auth, event


def _cursor(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


FORGED_CURSORS = [
    "OTk5OTk5OTk5OTk5OTk5OTk5OTk6eA==",  # the probe's, verbatim: 99999999999999999999:x
    _cursor("253402300800000:x"),  # year 10000
    _cursor("-99999999999999:x"),  # before year 1
    _cursor("10413792000000:x"),  # year 2300: a date, but not one the store holds
    _cursor("x:y"),
    _cursor("12"),
    "not base64 at all %%%",
]


def test_a_forged_cursor_is_a_422_naming_cursor(client, key):
    for cursor in FORGED_CURSORS:
        r = client.get("/v1/responses", params={"cursor": cursor}, headers=auth(key))
        assert r.status_code == 422, (cursor, r.text)
        (problem,) = r.json()["detail"]
        assert problem["field"] == "cursor" and "not a cursor" in problem["message"]


def test_a_cursor_the_endpoint_issued_still_pages(client, key):
    items = [event(i) for i in range(3)]
    client.post("/v1/responses", content=json.dumps({"responses": items}), headers=auth(key))
    first = client.get("/v1/responses", params={"limit": 2}, headers=auth(key)).json()
    rest = client.get(
        "/v1/responses", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth(key)
    ).json()
    got = [r["event_id"] for r in first["responses"] + rest["responses"]]
    assert got == ["evt-2", "evt-1", "evt-0"]


def _h_col(marker: bytes, model: str) -> bytes:
    """The probe's event: an event_id ending in one raw byte that is not UTF-8."""
    e = json.dumps(event(0, event_id="h-col@", model=model)).encode()
    return e.replace(b"h-col@", b"h-col" + marker)


def test_two_events_whose_ids_differ_only_in_invalid_utf8_are_refused_not_merged(
    client, key, embedded_store
):
    for marker, model in ((b"\xff", "first"), (b"\xfe", "second")):
        r = client.post(
            "/v1/responses",
            content=b'{"responses": [' + _h_col(marker, model) + b"]}",
            headers=auth(key),
        )
        assert r.status_code == 422, r.text
        (rejection,) = r.json()["rejected"]
        assert rejection["index"] == 0 and rejection["event_id"] is None
        (problem,) = rejection["errors"]
        assert problem["field"] == "event_id" and "not valid Unicode" in problem["message"]
        assert "h-col\\udc" in problem["message"]  # the bytes shown as escapes
    assert embedded_store.count("responses", "acme") == 0


def test_the_valid_events_of_a_batch_with_a_non_unicode_identifier_are_stored(
    client, key, embedded_store
):
    raw = (
        b'{"responses": ['
        + _h_col(b"\xff", "first")
        + b", "
        + json.dumps(event(1)).encode().replace(b'"v1"', b'"v\\udc80"')  # lone surrogate
        + b", "
        + json.dumps(event(2, output="OUT")).encode().replace(b"OUT", b"ok \xff")  # free text
        + b", "
        + json.dumps(event(3)).encode()
        + b"]}"
    )
    r = client.post("/v1/responses", content=raw, headers=auth(key))
    assert r.status_code == 207, r.text
    fields = {x["index"]: [e["field"] for e in x["errors"]] for x in r.json()["rejected"]}
    assert fields == {0: ["event_id"], 1: ["prompt_version"]}
    rows = embedded_store.list_responses("acme", ResponseFilter(), limit=10)
    assert {x["event_id"]: x["output"] for x in rows} == {
        "evt-2": "ok \ufffd",
        "evt-3": event(3)["output"],
    }


@pytest.mark.parametrize("kind", ["responses", "scores"])
def test_a_repeated_top_level_key_is_a_400_and_nothing_is_stored(client, key, embedded_store, kind):
    one = event(0) if kind == "responses" else {"event_id": "e", "name": "m", "value": 1}
    raw = b'{"%s": [%s], "%s": []}' % (kind.encode(), json.dumps(one).encode(), kind.encode())
    r = client.post(f"/v1/{kind}", content=raw, headers=auth(key))
    assert r.status_code == 400, r.text
    assert f"the key '{kind}' more than once" in r.json()["detail"]
    assert embedded_store.count(kind, "acme") == 0


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ((b'"model": "gpt-4o"', b'"model": "gpt-4o", "event_id": "evt-9"'), "event_id"),
        ((b'"model": "gpt-4o"', b'"model": "gpt-4o", "model": "other"'), "model"),
        ((b'"tier": "free"', b'"tier": "free", "tier": "paid"'), "tags.tier"),
    ],
)
def test_a_key_repeated_inside_an_event_rejects_that_event_naming_the_key(
    client, key, embedded_store, patch, field
):
    bad = json.dumps(event(0)).encode().replace(*patch)
    raw = b'{"responses": [' + bad + b", " + json.dumps(event(1)).encode() + b"]}"
    r = client.post("/v1/responses", content=raw, headers=auth(key))
    assert r.status_code == 207, r.text
    (rejection,) = r.json()["rejected"]
    assert rejection["index"] == 0
    (problem,) = rejection["errors"]
    assert problem["field"] == field and "more than once" in problem["message"]
    rows = embedded_store.list_responses("acme", ResponseFilter(), limit=10)
    assert [x["event_id"] for x in rows] == ["evt-1"]


def test_a_score_with_a_non_unicode_id_is_rejected_and_its_comment_is_repaired(
    client, key, embedded_store
):
    raw = (
        b'{"scores": [{"event_id": "e\\ud800", "name": "m", "value": 1},'
        b' {"event_id": "e2", "name": "m", "value": 1, "comment": "fine \xff"}]}'
    )
    r = client.post("/v1/scores", content=raw, headers=auth(key))
    assert r.status_code == 207, r.text
    assert r.json()["rejected"][0]["errors"][0]["field"] == "event_id"
    assert embedded_store.count("scores", "acme") == 1


APP = create_app(Settings())


def _routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI >= 0.16x: included routers nest
            yield from _routes(route.original_router.routes, prefix + route.include_context.prefix)
        elif hasattr(route, "endpoint"):
            yield prefix + route.path_format, route


JSON_BODY_OPS = sorted(
    (m.upper(), p)
    for p, ms in APP.openapi()["paths"].items()
    for m, op in ms.items()
    if "application/json" in op.get("requestBody", {}).get("content", {})
)


def test_every_route_reads_its_json_body_strictly():
    """The guard for routes yet to come: a router not made with `json_body.json_router`
    would parse its JSON with FastAPI's reader (last repeated key wins)."""
    ours = [(path, r) for path, r in _routes(APP.routes) if isinstance(r, APIRoute)]
    plain = [path for path, r in ours if not isinstance(r, StrictJSONRoute)]
    assert len(ours) >= 30
    assert not plain, f"routes on a router not made with json_router: {plain}"
    assert len(JSON_BODY_OPS) >= 10  # responses, scores, traces, prompts, evaluators, ...


def test_every_json_body_with_a_repeated_key_is_a_400_naming_it(client, key):
    for method, path in JSON_BODY_OPS:
        url = path.replace("{", "").replace("}", "")  # {incident_id} -> incident_id, etc.
        for body, named in (
            (b'{"dup": 1, "dup": 2}', "'dup'"),
            (b'{"a": {"b": [{"dup": 1, "dup": 2}]}}', "a.b.0.dup"),
        ):
            r = client.request(method, url, content=body, headers=auth(key))
            assert r.status_code == 400, (method, path, r.text)
            assert named in r.json()["detail"] and "more than once" in r.json()["detail"]


NON_UNICODE_BODIES = [
    ("PUT", "/v1/prompts/p/versions/v1", b'{"template": "a \\udc80"}'),
    ("PUT", "/v1/evaluators", b'{"evaluators": [{"name": "\xff"}]}'),
    ("PUT", "/v1/alert-rules", b'{"channels": [], "rules": [{"name": "r\\udfff"}]}'),
    ("POST", "/v1/gate", b'{"app": "a\xc0\x80", "baseline": "x", "candidate": "y"}'),
    ("POST", "/v1/traces", b'{"resourceSpans": [{"resource": {"x\\ud800": 1}}]}'),
]


def test_non_unicode_text_in_any_other_json_body_is_a_400_naming_where(client, key):
    for method, path, body in NON_UNICODE_BODIES:
        r = client.request(method, path, content=body, headers=auth(key))
        assert r.status_code == 400, (path, r.text)
        assert "not valid Unicode" in r.json()["detail"] and " at " in r.json()["detail"]


def test_two_prompt_ids_differing_only_in_invalid_utf8_are_refused_not_merged(client, key):
    """Starlette decodes %FF in a path to U+FFFD: both would have been prompt "\ufffd"."""
    for raw_id in ("%FF", "%FE"):
        r = client.put(
            f"/v1/prompts/{raw_id}/versions/v1", json={"template": raw_id}, headers=auth(key)
        )
        assert r.status_code == 400 and "URL path is not UTF-8" in r.json()["detail"]
    assert client.get("/v1/prompts/%EF%BF%BD/versions", headers=auth(key)).json()["versions"] == []
    r = client.get("/v1/responses?app=%C0%80", headers=auth(key))
    assert r.status_code == 400 and "query parameter 'app'" in r.json()["detail"]


def test_the_strict_reader_accepts_what_json_accepts_and_refuses_only_ambiguity():
    """jiter stops at 200 levels and at a byte order mark; json does not: such bodies are
    still read (and still checked), so no body FastAPI's reader took is refused for that."""
    deep = b"[" * 300 + b"]" * 300
    assert strict_json.loads(deep) == json.loads(deep)
    assert strict_json.loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    with pytest.raises(MalformedBody, match=r"at 0\.0\..*\.a: the key 'a' appears more"):
        strict_json.loads(b"[" * 300 + b'{"a": 1, "a": 2}' + b"]" * 300)
    with pytest.raises(json.JSONDecodeError):  # FastAPI answers a syntax error with its 422
        strict_json.loads(b'{"a": 1')
