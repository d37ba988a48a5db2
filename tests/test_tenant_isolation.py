"""Tenant isolation audit: every route of the app, enumerated from `app.routes`, with a key of
project A against project B's objects.

Two projects are seeded alike — the same app, route, prompt and model names, so only the project
scope can keep them apart — plus objects only B has (an eval app, an experiment, prompts,
evaluators, alert rules and channels, incidents and alerts), all carrying B's markers. For each
route a case makes A's requests: B's objects are 404 (or simply absent from A's lists), A's
aggregates count A's rows only, A's writes never touch B, and no answer to A holds any of B's
markers that A did not itself send. A route without a case fails
`test_every_route_has_an_isolation_case`, so an endpoint added later must bring one.

Keys: stored as SHA-256 of the secret only, compared with `hmac.compare_digest`, revoked by
`promptblame keys revoke`, and never written to a log, an error or a response.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from promptblame.analysis.alerting.catalog import apply as apply_alerts
from promptblame.analysis.alerting.delivery import Delivery
from promptblame.analysis.alerting.job import run_alerts
from promptblame.analysis.alerting.rules import validate as validate_alerts
from promptblame.analysis.detection import run_detection
from promptblame.analysis.jobs import guarded
from promptblame.analysis.scoring.catalog import apply as apply_evaluators
from promptblame.analysis.scoring.config import validate as validate_evaluators
from promptblame.analysis.scoring.job import run_scoring
from promptblame.api import auth as auth_module
from promptblame.api.app import create_app
from promptblame.api.auth import new_key
from promptblame.errors import Unauthorized
from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
from promptblame.ingest.rows import responses_table, scores_table
from promptblame.releases import labels, rollouts
from promptblame.releases.rollouts import RolloutIn
from promptblame.settings import Settings
from promptblame.store import Store, open_store
from tests.helpers import auth
from tests.server_process import CLI, env_for, free_port
from tests.test_incidents import NOW, SETTINGS, START, traffic

A, B = "alpha", "bravo"
CASES = 40  # eval cases per run
# The window holding each project's `<p>-secret-1` response (and a few of the traffic's).
SECRET_ROW = {
    "since": (START + timedelta(days=9)).isoformat(),
    "until": (START + timedelta(days=9, seconds=1)).isoformat(),
    "route": "billing",
}


# -- seeding -----------------------------------------------------------------------------------


def eval_and_marker_rows(p: str) -> tuple[list[ResponseEvent], list[ScoreEvent]]:
    """Rows carrying the project's markers: secret texts and tags on the shared app, an eval run
    pair for the gate (shared app `evalbot` and an app of its own), a shared experiment."""
    t0 = START + timedelta(days=9)
    events = [
        ResponseEvent(
            event_id=f"{p}-secret-1",
            ts=t0,
            app="bot",
            route="billing",
            model="gpt-4o",
            prompt_id="answer",
            prompt_version="v2",
            input=f"{p}-secret-input",
            output=f"{p}-secret-output",
            user_id=f"{p}-secret-user",
            tags={f"{p}-tag": f"{p}-secret-tag"},
        )
    ]
    scores = [ScoreEvent(event_id=f"{p}-secret-1", name="correct", value=1, comment=f"{p}-c")]
    for app in ("evalbot", f"{p}-evalbot"):
        for version, passing in (("g1", 0.9), ("g2", 0.5)):
            for i in range(CASES):
                eid = f"{p}-{app}-{version}-{i}"
                events.append(
                    ResponseEvent(
                        event_id=eid,
                        ts=t0 + timedelta(seconds=i),
                        app=app,
                        environment="eval",
                        model="gpt-4o",
                        prompt_id="answer",
                        prompt_version=version,
                        case_id=f"{p}-case-{i}",
                        input=f"{p}-secret-case-input {i}",
                        output=f"{p}-secret-case-output {i}",
                    )
                )
                ok = (i * 37 % 100) / 100 < passing
                scores.append(ScoreEvent(event_id=eid, name="correct", value=float(ok)))
    for i in range(300):
        eid = f"{p}-x-{i}"
        events.append(
            ResponseEvent(
                event_id=eid,
                ts=t0 + timedelta(minutes=i),
                app="bot",
                model="gpt-4o",
                experiment="shared-exp",
                variant="control" if i % 2 else f"{p}-arm",
            )
        )
        scores.append(ScoreEvent(event_id=eid, name="correct", value=float(i % 3 > 0)))
    return events, scores


def seed_project(store: Store, p: str, seed: int) -> None:
    traffic(store, p, seed=seed)  # app "bot": prompt answer@v2 regresses `correct`
    events, scores = eval_and_marker_rows(p)
    now = datetime.now(UTC)
    store.insert("responses", responses_table(p, events, now))
    store.insert("scores", scores_table(p, scores, now))
    for pid, version in (("answer", "v1"), ("answer", "v2"), (f"{p}-prompt", "b1")):
        text = f"{p}-secret-template {pid}@{version}"
        store.put_prompt_version(
            p,
            prompt_id=pid,
            version=version,
            template=text,
            content_hash=hashlib.sha256(text.encode()).hexdigest(),
            author=f"{p}-secret-author",
            labels=[f"{p}-label"],
            created_at=START,
        )
    for pid, label, version in (
        ("answer", "production", "v2"),
        (f"{p}-prompt", f"{p}-label", "b1"),
    ):
        move = labels.Move(prompt_id=pid, label=label, version=version, key_id=f"{p}-key")
        labels.move(store, p, move, protected=frozenset())
    apply_evaluators(store, p, validate_evaluators(evaluators_doc(p)), SETTINGS)
    spec = RolloutIn.model_validate(
        {
            "prompt_id": "answer",
            "label": "production",
            "candidate": "v1",
            "guardrails": [{"metric": "correct"}],
            "reason": f"{p}-secret-rollout",
            "force": True,
        }
    )
    rollouts.start(store, p, spec, key_id=f"{p}-key", protected=frozenset())
    run_scoring(store, SETTINGS, project_id=p)
    store.materialize_scores()
    run_detection(store, SETTINGS, project_id=p, now=NOW)
    apply_alerts(store, p, validate_alerts(alerts_doc(p)))

    def post(url: str, payload: dict[str, Any], **_: Any) -> Delivery:
        return Delivery(True, 1)

    run_alerts(store, SETTINGS, project_id=p, now=NOW, poster=post)


def evaluators_doc(p: str, *extra: str) -> dict[str, Any]:
    return {
        "evaluators": [
            {
                "name": f"{p}_eval{x}",
                "kind": "contains",
                "params": {"values": [f"{p}-secret-value"]},
                "filter": {"app": ["bot"]},
                "description": f"{p}-secret-description",
            }
            for x in ("", *extra)
        ]
    }


def alerts_doc(p: str, *extra: str) -> dict[str, Any]:
    return {
        "channels": [
            {
                "name": f"{p}-hook",
                "kind": "webhook",
                "url": f"https://{p}-secret-host.example/hook",
                "headers": {"X-Token": f"{p}-secret-token"},
            }
        ],
        "rules": [
            {"name": f"{p}-rule{x}", "channels": [f"{p}-hook"], "direction": "any"}
            for x in ("", *extra)
        ],
    }


@dataclass
class World:
    client: TestClient
    store: Store
    keys: dict[str, str]  # project -> its ingest+read+admin key
    incidents: dict[str, list[str]]  # project -> incident ids
    key_ids: dict[str, str]
    log: list[tuple[str, str, Any]] = field(default_factory=list)  # (project, request, response)

    def call(self, p: str, method: str, url: str, **kw: Any) -> httpx.Response:
        """A request with project `p`'s key; A's answers are swept for B's markers."""
        headers = {**auth(self.keys[p]), **kw.pop("headers", {})}
        r = self.client.request(method, url, headers=headers, **kw)
        sent = f"{method} {url} {kw.get('params', '')} {kw.get('json', '')} {kw.get('content', '')}"
        self.log.append((p, sent, r))
        return r

    def anonymous(self, method: str, url: str, **kw: Any) -> httpx.Response:
        r = self.client.request(method, url, **kw)
        self.log.append(("", f"{method} {url} {kw}", r))
        return r


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("isolation") / "data")
    store = open_store(settings)
    try:
        seed_project(store, A, seed=1)
        seed_project(store, B, seed=3)
        keys, key_ids = {}, {}
        for p in (A, B):
            keys[p], record = new_key(p, ["ingest", "read", "admin"], name=f"{p}-key")
            key_ids[p] = record.key_id
            store.put_api_key(record)
        incidents = {p: [str(i["incident_id"]) for i in store.incidents(p)] for p in (A, B)}
        assert incidents[A] and incidents[B] and not set(incidents[A]) & set(incidents[B])
        with TestClient(create_app(settings, store)) as client:
            yield World(client, store, keys, incidents, key_ids)
    finally:
        store.close()


def markers(w: World, p: str) -> list[str]:
    """What in an answer would be project p's: its marker texts, incident ids and key id."""
    kinds = ("secret", "case", "arm", "rule", "hook", "prompt", "evalbot", "label", "tag")
    return [*(f"{p}-{k}" for k in kinds), f"{p}_eval", *w.incidents[p], w.key_ids[p]]


def b_markers(w: World) -> list[str]:
    return [B, *markers(w, B)]  # "bravo" alone, too: no English text of ours holds it


def leaks(w: World) -> list[str]:
    """B's markers in any answer to A (or to no key) that A did not send itself."""
    out = []
    for p, sent, r in w.log:
        if p == B:
            continue
        body = r.text + json.dumps(
            {k: v for k, v in r.headers.items() if k.lower() != "set-cookie"}
        )
        for m in b_markers(w):
            if m in body and m not in sent:
                i = body.index(m)
                out.append(
                    f"{sent[:100]} -> {r.status_code}: ...{body[max(0, i - 60) : i + 60]}..."
                )
    return out


# -- the route table ---------------------------------------------------------------------------


def app_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every route of the app, included routers walked (HEAD with GET is
    one route)."""
    out: set[tuple[str, str]] = set()

    def walk(routes: list[Any], prefix: str = "") -> None:
        for r in routes:
            if hasattr(r, "original_router"):  # FastAPI >= 0.16x nests included routers
                walk(r.original_router.routes, prefix + r.include_context.prefix)
                continue
            path = prefix + (r.path_format if isinstance(r, APIRoute) else r.path)
            methods = set(getattr(r, "methods", None) or {"GET"})
            if "GET" in methods:
                methods.discard("HEAD")
            out.update((m, path) for m in methods)

    walk(create_app(Settings()).routes)
    return out


Case = Callable[[World], None]
CASE_TABLE: dict[tuple[str, str], Case] = {}


def case(method: str, path: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASE_TABLE[(method, path)] = fn
        return fn

    return register


def count(w: World, p: str, table: str = "responses") -> int:
    return w.store.count(table, p)


@case("POST", "/v1/responses")
def _post_responses(w: World) -> None:
    before = count(w, B)
    hijack = {
        "event_id": f"{B}-secret-1",  # B's event id, written by A: A's own row
        "ts": (START + timedelta(days=9)).isoformat(),
        "app": "bot",
        "model": "gpt-4o",
        "output": "written by alpha",
    }
    assert w.call(A, "POST", "/v1/responses", json={"responses": [hijack]}).status_code == 200
    r = w.call(A, "POST", "/v1/responses", json={"responses": [{**hijack, "project_id": B}]})
    assert r.status_code == 422  # a body cannot choose its project
    assert count(w, B) == before
    mine = w.call(B, "GET", "/v1/responses", params=SECRET_ROW).json()
    (row,) = [x for x in mine["responses"] if x["event_id"] == f"{B}-secret-1"]
    assert row["output"] == f"{B}-secret-output"


@case("POST", "/v1/scores")
def _post_scores(w: World) -> None:
    score = {"event_id": f"{B}-secret-1", "name": "correct", "value": 0, "comment": "by alpha"}
    assert w.call(A, "POST", "/v1/scores", json={"scores": [score]}).status_code == 200
    rows = w.store._rows(
        "SELECT project_id, value, comment FROM scores FINAL WHERE event_id = {e:String}"
        " AND name = 'correct' ORDER BY project_id",
        e=f"{B}-secret-1",
    )
    assert [(r["project_id"], r["value"], r["comment"]) for r in rows] == [
        (A, 0.0, "by alpha"),
        (B, 1.0, f"{B}-c"),
    ]


@case("POST", "/v1/traces")
def _post_traces(w: World) -> None:
    before = count(w, B)
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "chat gpt-4o",
        "kind": 3,
        "startTimeUnixNano": str(int((START + timedelta(days=9)).timestamp() * 1e9)),
        "endTimeUnixNano": str(int((START + timedelta(days=9, seconds=1)).timestamp() * 1e9)),
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "promptblame.project", "value": {"stringValue": B}},
        ],
    }
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]
                },
                "scopeSpans": [{"spans": [span]}],
            }
        ]
    }
    mine = count(w, A)
    r = w.call(A, "POST", "/v1/traces", content=json.dumps(doc))
    assert r.status_code == 200, r.text
    assert r.headers.get("x-promptblame-skipped-spans", "0") == "0"
    assert (count(w, A), count(w, B)) == (mine + 1, before)  # stored, in A


@case("PUT", "/v1/prompts/{prompt_id}/versions/{version}")
def _put_prompt(w: World) -> None:
    # B registered bravo-prompt@b1; A registering the same id with other text is not a 409
    # (which would tell A that B has it, and B's hash prefix): the registries are separate.
    r = w.call(A, "PUT", f"/v1/prompts/{B}-prompt/versions/b1", json={"template": "alpha's"})
    assert r.status_code in (200, 201) and r.json()["template"] == "alpha's"
    mine = w.call(B, "GET", f"/v1/prompts/{B}-prompt/versions").json()["versions"]
    assert [v["template"] for v in mine] == [f"{B}-secret-template {B}-prompt@b1"]


@case("GET", "/v1/prompts/{prompt_id}/versions")
def _get_prompts(w: World) -> None:
    listed = w.call(A, "GET", "/v1/prompts/answer/versions").json()["versions"]
    assert sorted(v["template"] for v in listed) == [
        f"{A}-secret-template answer@v1",
        f"{A}-secret-template answer@v2",
    ]


def b_labels(w: World) -> list[tuple[str, str, str, int]]:
    return [
        (r["prompt_id"], r["label"], r["to_version"], r["seq"]) for r in w.store.label_pointers(B)
    ]


@case("PUT", "/v1/prompts/{prompt_id}/labels/{label}")
def _put_label(w: World) -> None:
    before = b_labels(w)
    # B's prompt and label names: A's registry has no b1, so nothing can point there
    r = w.call(A, "PUT", f"/v1/prompts/{B}-prompt/labels/{B}-label", json={"version": "b1"})
    assert r.status_code == 422
    r = w.call(A, "PUT", "/v1/prompts/answer/labels/staging", json={"version": "v1"})
    assert r.status_code == 200 and r.json()["moved"]
    assert b_labels(w) == before


@case("GET", "/v1/prompts/{prompt_id}/labels")
def _get_labels(w: World) -> None:
    assert w.call(A, "GET", f"/v1/prompts/{B}-prompt/labels").status_code == 404
    mine = w.call(A, "GET", "/v1/prompts/answer/labels").json()["labels"]
    assert {x["key_id"] for x in mine} <= {f"{A}-key", w.key_ids[A]}


@case("GET", "/v1/prompts/{prompt_id}/labels/{label}/history")
def _get_label_history(w: World) -> None:
    r = w.call(A, "GET", f"/v1/prompts/{B}-prompt/labels/{B}-label/history")
    assert r.status_code == 404
    moves = w.call(A, "GET", "/v1/prompts/answer/labels/production/history").json()["moves"]
    assert [m["key_id"] for m in moves][:1] == [f"{A}-key"]


@case("GET", "/v1/prompts/{prompt_id}/resolve")
def _resolve_prompt(w: World) -> None:
    r = w.call(A, "GET", f"/v1/prompts/{B}-prompt/resolve", params={"label": f"{B}-label"})
    assert r.status_code == 404
    mine = w.call(A, "GET", "/v1/prompts/answer/resolve", params={"label": "production"})
    assert mine.json()["template"].startswith(f"{A}-secret-template")


@case("POST", "/v1/incidents/{incident_id}/rollback")
def _rollback(w: World) -> None:
    before = b_labels(w)
    for iid in w.incidents[B]:
        r = w.call(A, "POST", f"/v1/incidents/{iid}/rollback")
        assert r.status_code == 404
    for iid in w.incidents[A]:  # A's own rollbacks move A's labels only
        assert w.call(A, "POST", f"/v1/incidents/{iid}/rollback").status_code == 200
    assert b_labels(w) == before


def b_rollouts(w: World) -> list[tuple[str, int, str]]:
    return [(r["rollout_id"], r["seq"], r["state"]) for r in w.store.rollout_states(B)]


@case("POST", "/v1/rollouts")
def _start_rollout(w: World) -> None:
    before = b_rollouts(w)
    body = {
        "prompt_id": f"{B}-prompt",
        "label": f"{B}-label",
        "candidate": "b1",
        "guardrails": [{"metric": "correct"}],
    }
    assert w.call(A, "POST", "/v1/rollouts", json=body).status_code == 404
    assert b_rollouts(w) == before


@case("POST", "/v1/experiments")
def _start_experiment(w: World) -> None:
    """B's prompt and label are unknown to A's key: nothing starts on B's traffic."""
    before = b_rollouts(w)
    body = {"prompt_id": f"{B}-prompt", "label": f"{B}-label", "variants": {"b1": 50, "v1": 50}}
    assert w.call(A, "POST", "/v1/experiments", json=body).status_code == 404
    assert b_rollouts(w) == before


@case("GET", "/v1/rollouts")
def _list_rollouts(w: World) -> None:
    mine = w.call(A, "GET", "/v1/rollouts").json()["rollouts"]
    assert mine and {r["rollout_id"] for r in mine}.isdisjoint(r for r, _, _ in b_rollouts(w))


@case("GET", "/v1/rollouts/{rollout_id}")
def _get_rollout(w: World) -> None:
    for rid, _, _ in b_rollouts(w):
        assert w.call(A, "GET", f"/v1/rollouts/{rid}").status_code == 404
    (own,) = w.call(A, "GET", "/v1/rollouts").json()["rollouts"]
    assert w.call(A, "GET", f"/v1/rollouts/{own['rollout_id']}").status_code == 200


@case("POST", "/v1/rollouts/{rollout_id}/{action}")
def _act_on_rollout(w: World) -> None:
    before = b_rollouts(w)
    for rid, _, _ in before:
        for action in ("pause", "abort", "promote"):
            assert w.call(A, "POST", f"/v1/rollouts/{rid}/{action}").status_code == 404
    assert b_rollouts(w) == before


@case("GET", "/v1/responses")
def _get_responses(w: World) -> None:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:  # every page of A's rows
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = w.call(A, "GET", "/v1/responses", params=params).json()
        rows += page["responses"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(rows) == count(w, A)
    for params in ({"app": f"{B}-evalbot"}, {"experiment": "shared-exp", "variant": f"{B}-arm"}):
        assert w.call(A, "GET", "/v1/responses", params=params).json()["responses"] == []


@case("GET", "/v1/versions")
def _get_versions(w: World) -> None:
    versions = w.call(A, "GET", "/v1/versions", params={"metric": "correct"}).json()["versions"]
    assert sum(v["responses"] for v in versions) == count(w, A)
    assert sum(v["score"]["n"] for v in versions) <= count(w, A, "scores")


@case("POST", "/v1/compare")
def _compare(w: World) -> None:
    body = {"metric": "correct", "a": {"prompt_version": "v1"}, "b": {"prompt_version": "v2"}}
    mine = w.call(A, "POST", "/v1/compare", json=body).json()
    versions = w.call(A, "GET", "/v1/versions", params={"metric": "correct", "app": "bot"}).json()[
        "versions"
    ]
    n_v1 = sum(v["score"]["n"] for v in versions if v["prompt_version"] == "v1")
    assert mine["n_a"] == n_v1
    other = {"metric": "correct", "a": {"app": f"{B}-evalbot"}, "b": {"app": "bot"}}
    r = w.call(A, "POST", "/v1/compare", json=other)
    assert r.status_code == 422 or r.json()["n_a"] == 0


@case("GET", "/v1/experiments/{experiment}")
def _experiment(w: World) -> None:
    r = w.call(A, "GET", "/v1/experiments/shared-exp", params={"metric": "correct"})
    assert r.status_code == 200 and set(r.json()["arms"]) == {"control", f"{A}-arm"}
    assert w.call(B, "GET", "/v1/experiments/shared-exp", params={"metric": "correct"}).json()[
        "arms"
    ].keys() == {"control", f"{B}-arm"}


@case("GET", "/v1/series")
def _series(w: World) -> None:
    r = w.call(A, "GET", "/v1/series", params={"metric": "correct", "app": "bot", "bucket": "1d"})
    n = sum(b["n"] for b in r.json()["buckets"])
    assert n == sum(
        v["score"]["n"]
        for v in w.call(
            A, "GET", "/v1/versions", params={"metric": "correct", "app": "bot"}
        ).json()["versions"]
    )
    empty = w.call(A, "GET", "/v1/series", params={"metric": "correct", "app": f"{B}-evalbot"})
    assert empty.status_code == 200 and not any(b["n"] for b in empty.json()["buckets"])


@case("POST", "/v1/gate")
def _gate(w: World) -> None:
    body = {"app": "evalbot", "baseline": "g1", "candidate": "g2"}
    r = w.call(A, "POST", "/v1/gate", json=body)
    assert r.status_code == 200, r.text
    assert f"{A}-case" in r.text  # A's regressed cases are named (and B's, never)
    r = w.call(A, "POST", "/v1/gate", json={**body, "app": f"{B}-evalbot"})
    assert r.status_code == 404
    assert w.call(B, "POST", "/v1/gate", json={**body, "app": f"{B}-evalbot"}).status_code == 200


@case("GET", "/v1/evaluators")
def _get_evaluators(w: World) -> None:
    names = {e["name"] for e in w.call(A, "GET", "/v1/evaluators").json()["evaluators"]}
    assert names and all(n.startswith(f"{A}_eval") for n in names)


@case("PUT", "/v1/evaluators")
def _put_evaluators(w: World) -> None:
    doc = evaluators_doc(A, "_more")
    r = w.call(A, "PUT", "/v1/evaluators", json=doc, params={"dry_run": True})
    assert {c["name"]: c["action"] for c in r.json()["changes"]} == {
        f"{A}_eval": "unchanged",
        f"{A}_eval_more": "create",
    }  # nothing of B's to remove
    assert w.call(A, "PUT", "/v1/evaluators", json=evaluators_doc(A)).status_code == 200
    theirs = w.call(B, "GET", "/v1/evaluators").json()["evaluators"]
    assert [e["name"] for e in theirs] == [f"{B}_eval"]


@case("GET", "/v1/jobs")
def _jobs(w: World) -> None:
    # A store-wide job that fails on B's data must not show B's data to A: B's alert config
    # turned invalid (as after an upgrade that validates more strictly) makes the alerting pass
    # raise with B's webhook URL in the message.
    now = datetime.now(UTC)
    w.store.insert_rows(
        "alert_config",
        [
            {
                "project_id": B,
                "section": "channel",
                "name": f"{B}-hook",
                "definition": json.dumps(
                    {"name": f"{B}-hook", "kind": "webhook", "url": f"{B}-secret-url"}
                ),
                "content_hash": "x",
                "removed": 0,
                "updated_at": now,
            }
        ],
    )
    try:
        guarded(w.store, "alerts", lambda: run_alerts(w.store, SETTINGS, now=NOW))()
    finally:
        apply_alerts(w.store, B, validate_alerts(alerts_doc(B)))
    jobs = w.call(A, "GET", "/v1/jobs").json()["jobs"]
    by_name = {j["job"]: j for j in jobs}
    assert by_name["alerts"]["last_status"] == "failed"
    assert by_name["scoring"]["last_rows"] == count_scored_by_evaluator(w, A)


def count_scored_by_evaluator(w: World, p: str) -> int:
    rows = w.store._rows(
        "SELECT count() AS n FROM scores FINAL WHERE project_id = {p:String}"
        " AND startsWith(source, 'evaluator:')",
        p=p,
    )
    return int(rows[0]["n"])


@case("GET", "/v1/incidents")
def _incidents(w: World) -> None:
    ids = {i["incident_id"] for i in w.call(A, "GET", "/v1/incidents").json()["incidents"]}
    assert ids == set(w.incidents[A])


@case("GET", "/v1/detection/coverage")
def _coverage(w: World) -> None:
    r = w.call(A, "GET", "/v1/detection/coverage", params={"at": NOW.isoformat()})
    assert r.status_code == 200, r.text
    apps = {s["app"] for s in r.json()["analysed"] + r.json()["not_analysed"]}
    assert "bot" in apps and f"{A}-evalbot" in apps and f"{B}-evalbot" not in apps


@case("GET", "/v1/incidents/{incident_id}")
def _incident(w: World) -> None:
    for iid in w.incidents[B]:
        assert w.call(A, "GET", f"/v1/incidents/{iid}").status_code == 404
        assert w.call(B, "GET", f"/v1/incidents/{iid}").status_code == 200
    assert w.call(A, "GET", f"/v1/incidents/{w.incidents[A][0]}").status_code == 200


def _status_change(w: World, action: str) -> None:
    iid = w.incidents[B][0]
    before = w.store.incident(B, iid)
    r = w.call(A, "POST", f"/v1/incidents/{iid}/{action}", json={"note": "alpha was here"})
    assert r.status_code == 404
    assert w.store.incident(B, iid) == before


@case("POST", "/v1/incidents/{incident_id}/ack")
def _ack(w: World) -> None:
    _status_change(w, "ack")


@case("POST", "/v1/incidents/{incident_id}/resolve")
def _resolve(w: World) -> None:
    _status_change(w, "resolve")


@case("GET", "/v1/alert-rules")
def _get_rules(w: World) -> None:
    got = w.call(A, "GET", "/v1/alert-rules").json()
    assert [r["name"] for r in got["rules"]] == [f"{A}-rule"]
    assert [c["host"] for c in got["channels"]] == [f"{A}-secret-host.example"]


@case("PUT", "/v1/alert-rules")
def _put_rules(w: World) -> None:
    r = w.call(A, "PUT", "/v1/alert-rules", json=alerts_doc(A, "-more"), params={"dry_run": 1})
    assert {(c["section"], c["name"], c["action"]) for c in r.json()["changes"]} == {
        ("channel", f"{A}-hook", "unchanged"),
        ("rule", f"{A}-rule", "unchanged"),
        ("rule", f"{A}-rule-more", "create"),
    }
    theirs = w.call(B, "GET", "/v1/alert-rules").json()
    assert [r["name"] for r in theirs["rules"]] == [f"{B}-rule"]


@case("GET", "/v1/alerts")
def _alerts(w: World) -> None:
    alerts = w.call(A, "GET", "/v1/alerts").json()["alerts"]
    assert alerts and {a["incident_id"] for a in alerts} <= set(w.incidents[A])


@case("GET", "/reports/")
def _overview(w: World) -> None:
    html = w.call(A, "GET", "/reports/").text
    assert all(f"/reports/incidents/{i}" in html for i in w.incidents[A])


@case("GET", "/reports/incidents/{incident_id}")
def _report_incident(w: World) -> None:
    for iid in w.incidents[B]:
        assert w.call(A, "GET", f"/reports/incidents/{iid}").status_code == 404
    assert w.call(B, "GET", f"/reports/incidents/{w.incidents[B][0]}").status_code == 200


@case("GET", "/reports/compare")
def _report_compare(w: World) -> None:
    params = {"metric": "correct", "a.prompt_version": "v1", "b.prompt_version": "v2"}
    assert w.call(A, "GET", "/reports/compare", params=params).status_code == 200


@case("GET", "/reports/experiments/{experiment}")
def _report_experiment(w: World) -> None:
    r = w.call(A, "GET", "/reports/experiments/shared-exp", params={"metric": "correct"})
    assert r.status_code == 200 and f"{A}-arm" in r.text


@case("GET", "/reports/incidents")
def _report_incidents(w: World) -> None:
    html = w.call(A, "GET", "/reports/incidents", params={"status": "all"}).text
    assert all(f"/reports/incidents/{i}" in html for i in w.incidents[A])


@case("POST", "/reports/incidents/{incident_id}/status")
def _report_incident_status(w: World) -> None:
    """A's key (admin, Bearer: exempt from the form token) cannot change B's incident."""
    iid = w.incidents[B][0]
    before = w.store.incident(B, iid)
    r = w.call(
        A,
        "POST",
        f"/reports/incidents/{iid}/status",
        data={"action": "resolve", "note": "alpha was here"},
        follow_redirects=False,
    )
    assert r.status_code == 404 and w.store.incident(B, iid) == before


@case("GET", "/reports/experiments")
def _report_experiments(w: World) -> None:
    html = w.call(A, "GET", "/reports/experiments").text
    assert "shared-exp" in html and f"{A}-arm" in html


@case("GET", "/reports/jobs")
def _report_jobs(w: World) -> None:
    assert f"{A}_eval" in w.call(A, "GET", "/reports/jobs").text


@case("GET", "/reports/responses")
def _report_responses(w: World) -> None:
    for params in (SECRET_ROW, {"q": "secret"}, {"metric": "correct", "min": "1"}):
        r = w.call(A, "GET", "/reports/responses", params=params)
        assert r.status_code == 200
    assert f"{A}-secret-output" in w.call(A, "GET", "/reports/responses", params=SECRET_ROW).text


@case("GET", "/reports/responses/{event_id}")
def _report_response(w: World) -> None:
    assert w.call(A, "GET", f"/reports/responses/{B}-secret-1").status_code == 404
    mine = w.call(A, "GET", f"/reports/responses/{A}-secret-1").text
    assert f"{A}-secret-output" in mine and f"{A}-c" in mine  # its score's comment


@case("GET", "/reports/prompts/{prompt_id}")
def _report_prompt(w: World) -> None:
    assert w.call(A, "GET", f"/reports/prompts/{B}-prompt").status_code == 404
    mine = w.call(A, "GET", "/reports/prompts/answer", params={"a": "v1", "b": "v2"}).text
    assert f"{A}-secret-template" in mine


@case("GET", "/reports/rollouts")
def _report_rollouts(w: World) -> None:
    html = w.call(A, "GET", "/reports/rollouts").text
    assert f"{A}-secret-rollout" in html  # and none of B's (swept by leaks())


@case("GET", "/reports/rollouts/{rollout_id}")
def _report_rollout(w: World) -> None:
    for rid, _, _ in b_rollouts(w):
        assert w.call(A, "GET", f"/reports/rollouts/{rid}").status_code == 404
    (own,) = w.call(A, "GET", "/v1/rollouts").json()["rollouts"]
    page = w.call(A, "GET", f"/reports/rollouts/{own['rollout_id']}")
    assert page.status_code == 200 and "Decision log" in page.text


@case("GET", "/reports/login")
def _login_form(w: World) -> None:
    assert w.anonymous("GET", "/reports/login").status_code == 200


@case("POST", "/reports/login")
def _login(w: World) -> None:
    """A browser logged in with A's key (the cookie) sees what A's key sees."""
    browser = TestClient(w.client.app)  # no `with`: the app's lifespan is already running
    r = browser.post("/reports/login", data={"key": w.keys[A]}, follow_redirects=False)
    assert r.status_code == 303
    for iid in w.incidents[B]:
        page = browser.get(f"/reports/incidents/{iid}")
        w.log.append((A, f"GET /reports/incidents/{iid}", page))
        assert page.status_code == 404
    page = browser.get("/reports/")
    w.log.append((A, "GET /reports/ (cookie)", page))
    assert page.status_code == 200 and w.incidents[A][0] in page.text


@case("POST", "/reports/logout")
def _logout(w: World) -> None:
    browser = TestClient(w.client.app)
    browser.post("/reports/login", data={"key": w.keys[A]})
    r = browser.post("/reports/logout", follow_redirects=False)
    w.log.append(("", "POST /reports/logout", r))
    assert r.status_code == 303
    assert browser.get("/reports/", follow_redirects=False).status_code == 303


def _no_project_data(path: str) -> Case:
    def run(w: World) -> None:
        r = w.anonymous("GET", path)
        assert r.status_code == 200
        found = [m for m in markers(w, A) if m in r.text]
        assert found == []  # nothing of any project on an unauthenticated page

    return run


for _path in ("/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
    CASE_TABLE[("GET", _path)] = _no_project_data(_path)


# -- human review (issue 19) ---------------------------------------------------------------------

_REVIEWED: set[int] = set()


def review_doc(p: str) -> dict[str, Any]:
    """The same queue name in both projects (only the scope keeps them apart), one of p's own."""
    window = {k: SECRET_ROW[k] for k in ("since", "until", "route")}
    fields = [{"name": "helpful", "kind": "pass_fail"}]  # not "correct": one source each
    return {
        "queues": [
            {"name": "shared-queue", "filter": window, "overlap": 1.0, "fields": fields},
            {"name": f"{p}-queue", "filter": window, "fields": fields},
        ],
        "trust": [{"metric": "helpful", "min_agreement": 0.5, "min_items": 1}],
    }


def reviewed(w: World) -> None:
    """Both projects' queues, and a label by B on each of its items, set up once."""
    if id(w) in _REVIEWED:
        return
    from promptblame.review import queues as review_queues
    from promptblame.review.config import validate as validate_review

    for p in (A, B):
        review_queues.apply(w.store, p, validate_review(review_doc(p)))
    for q in ("shared-queue", f"{B}-queue"):
        while (item := review_queues.next_item(w.store, B, q, f"{B}-reviewer")) is not None:
            review_queues.submit(
                w.store,
                B,
                q,
                event_id=item.event_id,
                reviewer=f"{B}-reviewer",
                key_id="",
                labels={"helpful": "fail"},
                comment=f"{B}-label-comment",
            )
    _REVIEWED.add(id(w))


def b_review_rows(w: World) -> list[dict[str, Any]]:
    return w.store.review_answers(B)


@case("GET", "/v1/queues")
def _get_queues(w: World) -> None:
    reviewed(w)
    names = [q["name"] for q in w.call(A, "GET", "/v1/queues").json()["queues"]]
    assert sorted(names) == [f"{A}-queue", "shared-queue"]


@case("PUT", "/v1/queues")
def _put_queues(w: World) -> None:
    reviewed(w)
    before = w.store.review_config(B)
    r = w.call(A, "PUT", "/v1/queues", json=review_doc(A))
    assert r.status_code == 200 and w.store.review_config(B) == before


@case("GET", "/v1/queues/{queue}/items")
def _queue_items(w: World) -> None:
    reviewed(w)
    assert w.call(A, "GET", f"/v1/queues/{B}-queue/items").status_code == 404
    items = w.call(A, "GET", "/v1/queues/shared-queue/items", params={"refresh": "true"}).json()
    ids = [i["event_id"] for i in items["items"]]
    assert f"{A}-secret-1" in ids and all(i["labelled_by"] == [] for i in items["items"])


@case("GET", "/v1/queues/{queue}/labels")
def _queue_labels(w: World) -> None:
    reviewed(w)
    assert w.call(A, "GET", f"/v1/queues/{B}-queue/labels").status_code == 404
    assert w.call(A, "GET", "/v1/queues/shared-queue/labels").json()["labels"] == []


@case("POST", "/v1/queues/{queue}/labels")
def _post_queue_label(w: World) -> None:
    reviewed(w)
    before = b_review_rows(w)
    label = {"event_id": f"{B}-secret-1", "labels": {"helpful": "pass"}}
    for q in ("shared-queue", f"{B}-queue"):
        assert w.call(A, "POST", f"/v1/queues/{q}/labels", json=label).status_code == 404
    mine = {"event_id": f"{A}-secret-1", "labels": {"helpful": "pass"}}
    assert w.call(A, "POST", "/v1/queues/shared-queue/labels", json=mine).status_code == 200
    assert b_review_rows(w) == before


@case("POST", "/v1/queues/{queue}/labels/undo")
def _undo_queue_label(w: World) -> None:
    reviewed(w)
    before = b_review_rows(w)
    assert w.call(A, "POST", f"/v1/queues/{B}-queue/labels/undo").status_code == 404
    assert w.call(A, "POST", "/v1/queues/shared-queue/labels/undo").status_code == 200
    assert b_review_rows(w) == before


@case("GET", "/v1/agreement")
def _agreement(w: World) -> None:
    reviewed(w)
    (m,) = w.call(A, "GET", "/v1/agreement").json()["metrics"]
    assert m["metric"] == "helpful" and m["human_human"]["n"] == 0  # B's labels are B's


@case("GET", "/reports/review")
def _report_review(w: World) -> None:
    reviewed(w)
    html = w.call(A, "GET", "/reports/review").text
    assert f"{A}-queue" in html and "shared-queue" in html


@case("GET", "/reports/review/{queue}")
def _report_review_queue(w: World) -> None:
    reviewed(w)
    assert w.call(A, "GET", f"/reports/review/{B}-queue").status_code == 404
    assert w.call(A, "GET", f"/reports/review/{A}-queue").status_code == 200
    r = w.call(A, "GET", "/reports/review/shared-queue", params={"last": f"{B}-secret-1"})
    assert r.status_code == 200


@case("POST", "/reports/review/{queue}")
def _report_review_post(w: World) -> None:
    """A's key (admin, Bearer: exempt from the form token) cannot label B's items."""
    reviewed(w)
    before = b_review_rows(w)
    for q in ("shared-queue", f"{B}-queue"):
        r = w.call(
            A,
            "POST",
            f"/reports/review/{q}",
            content=f"action=label&event_id={B}-secret-1&f.helpful=pass",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            follow_redirects=False,
        )
        assert r.status_code == 404
    assert b_review_rows(w) == before


@case("GET", "/reports/agreement")
def _report_agreement(w: World) -> None:
    reviewed(w)
    assert "helpful" in w.call(A, "GET", "/reports/agreement").text


CASE_TABLE[("GET", "/reports/static/review.js")] = _no_project_data("/reports/static/review.js")


def test_every_route_has_an_isolation_case():
    routes = app_routes()
    missing = sorted(routes - set(CASE_TABLE))
    assert not missing, (
        "routes without a tenant-isolation case in tests/test_tenant_isolation.py (add one:"
        f" project A's key against project B's objects): {missing}"
    )
    assert sorted(set(CASE_TABLE) - routes) == []  # no case for a route that is gone


@pytest.mark.parametrize("route", sorted(CASE_TABLE), ids=lambda r: f"{r[0]} {r[1]}")
def test_a_key_of_project_a_never_reaches_project_b(world, route):
    world.log.clear()
    CASE_TABLE[route](world)
    assert any(p != B for p, _, _ in world.log), "the case made no request as A"
    assert leaks(world) == []


def test_reports_and_alerts_of_b_stay_b_s(world):
    """The incident reports, overview and alerts B sees hold B's data (the cases above are not
    vacuous: B's markers are there to be found)."""
    world.log.clear()
    page = world.call(B, "GET", "/reports/").text
    assert f"{B}-arm" not in page and all(i in page for i in world.incidents[B])
    alerts = world.call(B, "GET", "/v1/alerts").json()["alerts"]
    assert {a["rule"] for a in alerts} == {f"{B}-rule"}
    listed = world.call(B, "GET", "/v1/responses", params=SECRET_ROW).text
    assert f"{B}-secret-output" in listed and f"{B}-secret-tag" in listed


# -- keys ------------------------------------------------------------------------------------


def test_keys_are_stored_as_the_sha256_of_their_secret_only(world):
    rows = world.store._rows("SELECT * FROM api_keys")
    assert rows
    for p, key in world.keys.items():
        secret = key.split("_", 2)[2]
        (row,) = [r for r in rows if r["key_id"] == world.key_ids[p]]
        assert row["secret_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
        dump = json.dumps(rows, default=str)
        assert secret not in dump and key not in dump


def test_keys_are_compared_in_constant_time(world, monkeypatch):
    calls: list[tuple[str, str]] = []
    compare_digest = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module auth.py calls it from
    checker = auth_module.KeyChecker(world.store, cache_seconds=0)
    assert checker.check(f"Bearer {world.keys[A]}").project_id == A
    wrong = world.keys[A][:-4] + "abcd"  # the right key id, a wrong secret
    with pytest.raises(Unauthorized) as unknown_secret:
        checker.check(f"Bearer {wrong}")
    assert len(calls) == 2  # both secrets went through compare_digest, not ==
    with pytest.raises(Unauthorized) as unknown_id:
        checker.check("Bearer pb_000000000000_whatever")
    assert str(unknown_secret.value) == str(unknown_id.value)  # no oracle for key ids


def test_keys_revoked_with_the_cli_are_refused_and_no_key_reaches_a_server_log(tmp_path):
    """`promptblame keys create/revoke/list` on a data directory, then a server on it at DEBUG
    with uvicorn's access log on: the revoked key is refused, and no key or secret appears in
    the server's whole output, whatever the request."""
    data = tmp_path / "data"
    env = env_for(data)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    made = {
        name: cli("keys", "create", "--project", A, "--scopes", scopes)
        for name, scopes in (("good", "read,ingest"), ("revoked", "read"))
    }
    assert all(m.returncode == 0 for m in made.values()), made["good"].stderr
    keys = {name: m.stdout.strip() for name, m in made.items()}
    keys["ingest"] = keys["good"]  # (a key lacking a scope: the in-process test)
    gone_id = keys["revoked"].split("_")[1]
    revoked = cli("keys", "revoke", gone_id)
    assert revoked.returncode == 0 and f"revoked {gone_id}" in revoked.stdout
    listed = cli("keys", "list")
    assert f"{gone_id}\t{A}\tread\trevoked" in listed.stdout
    secrets = [k.split("_", 2)[2] for k in keys.values()]
    for out in (listed, revoked, *made.values()):
        assert not any(s in out.stderr for s in secrets)  # the key is printed once, on stdout
    assert not any(s in listed.stdout for s in secrets)

    log = tmp_path / "serve.log"
    with log.open("w") as f:
        proc, base = serve(data, f)
        try:
            assert httpx.get(f"{base}/v1/incidents", headers=auth(keys["good"])).status_code == 200
            r = httpx.get(f"{base}/v1/incidents", headers=auth(keys["revoked"]))
            assert r.status_code == 401 and "revoked" in r.json()["detail"]

            def call(method: str, path: str, **kw: Any) -> httpx.Response:
                r = httpx.request(method, base + path, timeout=60, **kw)
                assert not any(s in r.text for s in secrets), (path, r.status_code)
                return r

            key_requests(call, keys)
        finally:
            stop(proc)
    text = log.read_text()
    assert '"GET /v1/incidents HTTP/1.1" 200' in text and "DEBUG" in text  # it did log
    assert not any(s in text for s in secrets)


SERVE_AT_DEBUG = """
import logging, sys, uvicorn
from promptblame.api.app import create_app
logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="debug",
            access_log=True)
"""


def serve(data: Path, log: Any) -> tuple[subprocess.Popen[str], str]:
    """The app under uvicorn with every logger at DEBUG and the access log on."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_AT_DEBUG, str(port)],
        env={**env_for(data), "PROMPTBLAME_LOG_LEVEL": "DEBUG"},
        stdout=log,
        stderr=log,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "server did not become healthy in 60 s"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def key_requests(call: Callable[..., httpx.Response], keys: dict[str, str]) -> None:
    """Requests with good, wrong-secret, unknown, revoked, wrong-scope and malformed keys on
    every kind of route, including ones that fail (400, 401, 403, 404, 405, 422)."""
    good = keys["good"]
    wrong = good[:-4] + "abcd"
    for k in (good, wrong, keys["ingest"], keys["revoked"], "pb_nope_nope", "pk" + good[2:]):
        bearer = {"Authorization": f"Bearer {k}"}
        for method, path, kw in (
            ("GET", "/v1/incidents", {}),
            ("GET", "/v1/incidents/nope", {}),
            ("POST", "/v1/responses", {"content": b"{not json"}),
            ("POST", "/v1/responses", {"json": {"responses": [{"event_id": "e"}]}}),
            ("POST", "/v1/compare", {"json": {"metric": "m", "a": {}, "b": {}}}),
            ("PUT", "/v1/evaluators", {"json": {"evaluators": [{"name": "9"}]}}),
            ("DELETE", "/v1/incidents", {}),
            ("GET", "/reports/", {}),
        ):
            headers = {
                **bearer,
                **({"Content-Type": "application/json"} if "content" in kw else {}),
            }
            call(method, path, headers=headers, **kw)
        call("GET", "/v1/versions", headers={"Authorization": k})  # no "Bearer"
        call("POST", "/reports/login", data={"key": k, "next": "/reports/"})
        call("GET", "/reports/", headers={"Cookie": f"pb_report_key={k}"})


def test_keys_never_reach_a_log_an_error_or_a_response_in_process(world, caplog):
    """Every logger at DEBUG while keys good and bad hit every kind of route: the secrets
    appear in no log record, no answer and no header (but the login cookie, which holds the
    key by design)."""
    from dataclasses import replace

    keys = {}
    for name, scopes in (
        ("good", ["read", "ingest"]),
        ("ingest", ["ingest"]),
        ("revoked", ["read"]),
    ):
        keys[name], record = new_key(A, scopes)
        world.store.put_api_key(replace(record, revoked=name == "revoked"))
    secrets = [k.split("_", 2)[2] for k in keys.values()]

    def call(method: str, path: str, **kw: Any) -> httpx.Response:
        r = world.client.request(method, path, follow_redirects=False, **kw)
        world.client.cookies.clear()
        headers = {k: v for k, v in r.headers.items() if k.lower() != "set-cookie"}
        text = r.text + json.dumps(headers)
        assert not any(s in text for s in secrets), (method, path, r.status_code, r.text[:200])
        return r

    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):  # e.g. the CLI quiets httpx for good
        caplog.set_level(logging.DEBUG, logger=name)
    key_requests(call, keys)
    assert caplog.records  # the app and its libraries did log
    assert not any(s in caplog.text for s in secrets)
