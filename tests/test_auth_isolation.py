"""API keys: scoped to one project, hashed at rest; project A can neither read nor write B."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from promptblame.api.app import create_app
from promptblame.api.auth import new_key
from promptblame.store import Store
from tests.helpers import auth, body, event


def make_key(store: Store, project: str, scopes: list[str]) -> str:
    plaintext, record = new_key(project, scopes)
    store.put_api_key(record)
    return plaintext


def test_requests_without_or_with_a_wrong_key_are_401(client, embedded_store):
    good = make_key(embedded_store, "a", ["ingest", "read"])
    payload = body("responses", [event(0)])
    headers = {"Content-Type": "application/json"}
    assert client.post("/v1/responses", content=payload, headers=headers).status_code == 401
    for bad in ("Bearer nope", "Basic abc", good[:-2] + "xx", "Bearer pb_unknownid_secret"):
        r = client.post("/v1/responses", content=payload, headers={**headers, "Authorization": bad})
        assert r.status_code == 401, bad
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/v1/versions").status_code == 401
    assert embedded_store.count("responses", "a") == 0


def test_a_key_without_the_needed_scope_is_403(client, embedded_store):
    reader = make_key(embedded_store, "a", ["read"])
    writer = make_key(embedded_store, "a", ["ingest"])
    r = client.post("/v1/responses", content=body("responses", [event(0)]), headers=auth(reader))
    assert r.status_code == 403
    assert "ingest" in r.json()["detail"]
    assert client.get("/v1/responses", headers=auth(writer)).status_code == 403
    assert client.get("/v1/responses", headers=auth(reader)).status_code == 200


def test_project_a_can_neither_read_nor_write_project_b(client, embedded_store):
    key_a = make_key(embedded_store, "a", ["ingest", "read"])
    key_b = make_key(embedded_store, "b", ["ingest", "read"])
    secret = event(1, output="B's private answer", prompt_version="b-secret")
    client.post("/v1/responses", content=body("responses", [secret]), headers=auth(key_b))
    client.put("/v1/prompts/answer/versions/b1", json={"template": "B only"}, headers=auth(key_b))

    # A's reads never show B's rows, versions or prompts
    assert client.get("/v1/responses", headers=auth(key_a)).json()["responses"] == []
    assert client.get("/v1/versions", headers=auth(key_a)).json()["versions"] == []
    listed = client.get("/v1/prompts/answer/versions", headers=auth(key_a)).json()
    assert listed["versions"] == []

    # A writing the same event id, scores for B's event, or B's prompt id touches only A
    hijack = event(1, output="overwritten by A")
    client.post("/v1/responses", content=body("responses", [hijack]), headers=auth(key_a))
    score = {"scores": [{"event_id": "evt-1", "name": "helpful", "value": 0}]}
    client.post("/v1/scores", json=score, headers=auth(key_a))
    r = client.put(
        "/v1/prompts/answer/versions/b1", json={"template": "A's text"}, headers=auth(key_a)
    )
    assert r.status_code == 201  # a separate registry per project: no conflict with B

    b_rows = client.get("/v1/responses", headers=auth(key_b)).json()["responses"]
    assert [r["output"] for r in b_rows] == ["B's private answer"]
    b_scored = client.get("/v1/versions", params={"metric": "helpful"}, headers=auth(key_b))
    assert b_scored.json()["versions"][0]["score"]["n"] == 0
    b_prompt = client.get("/v1/prompts/answer/versions", headers=auth(key_b)).json()
    assert [v["template"] for v in b_prompt["versions"]] == ["B only"]
    assert embedded_store.count("responses", "a") == 1
    assert embedded_store.count("responses", "b") == 1


def test_a_body_cannot_choose_its_project(client, embedded_store):
    key_a = make_key(embedded_store, "a", ["ingest"])
    r = client.post(
        "/v1/responses",
        content=body("responses", [event(0, project_id="b")]),
        headers=auth(key_a),
    )
    assert r.status_code == 422
    assert r.json()["rejected"][0]["errors"][0]["field"] == "project_id"
    assert embedded_store.count("responses", "b") == 0


def test_keys_are_stored_hashed_and_revocation_takes_effect(embedded_settings, embedded_store):
    plaintext, record = new_key("a", ["read"])
    embedded_store.put_api_key(record)
    stored = embedded_store.get_api_key(record.key_id)
    assert stored is not None
    assert plaintext.split("_", 2)[2] not in repr(stored)
    settings = embedded_settings.model_copy(update={"key_cache_seconds": 0})
    with TestClient(create_app(settings, embedded_store)) as c:
        assert c.get("/v1/responses", headers=auth(plaintext)).status_code == 200
        from dataclasses import replace

        embedded_store.put_api_key(replace(record, revoked=True))
        assert c.get("/v1/responses", headers=auth(plaintext)).status_code == 401


def test_local_mode_without_keys_is_refused_on_a_non_loopback_bind(embedded_settings):
    open_bind = embedded_settings.model_copy(update={"auth_disabled": True, "host": "0.0.0.0"})
    with pytest.raises(ValueError, match="loopback"):
        create_app(open_bind)


def test_local_mode_on_loopback_needs_no_key_and_uses_the_default_project(
    embedded_settings, embedded_store
):
    local = embedded_settings.model_copy(update={"auth_disabled": True})
    with TestClient(create_app(local, embedded_store)) as c:
        r = c.post(
            "/v1/responses",
            content=body("responses", [event(0)]),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 200
    assert embedded_store.count("responses", "default") == 1


def test_prompt_registry_registers_once_and_409s_on_different_text(client, embedded_store):
    key = make_key(embedded_store, "a", ["ingest", "read"])
    url = "/v1/prompts/answer/versions/v1"
    first = client.put(url, json={"template": "Answer {q}", "labels": ["prod"]}, headers=auth(key))
    assert first.status_code == 201
    again = client.put(url, json={"template": "Answer {q}"}, headers=auth(key))
    assert again.status_code == 200
    clash = client.put(url, json={"template": "Answer {q} politely"}, headers=auth(key))
    assert clash.status_code == 409
    assert "different" in clash.json()["detail"]
    empty = client.put(url, json={"template": ""}, headers=auth(key))
    assert empty.status_code == 422
    assert empty.json()["detail"][0]["field"] == "body.template"
    listed = client.get("/v1/prompts/answer/versions", headers=auth(key)).json()["versions"]
    assert [(v["version"], v["template"], v["labels"]) for v in listed] == [
        ("v1", "Answer {q}", ["prod"])
    ]
    assert len(listed[0]["content_hash"]) == 64
