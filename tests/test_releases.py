"""Prompt releases through the API on the real engine: labels as compare-and-set pointers, per
model, protected by the gate, their history, resolve, and rollback from an incident."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from promptblame.analysis.alerting.catalog import apply as apply_alerts
from promptblame.analysis.alerting.delivery import Delivery
from promptblame.analysis.alerting.job import run_alerts
from promptblame.analysis.alerting.rules import validate as validate_alerts
from promptblame.analysis.detection import run_detection
from promptblame.api.app import create_app
from promptblame.api.auth import new_key
from promptblame.errors import ConfigInvalid
from promptblame.releases import labels
from promptblame.settings import Settings
from promptblame.store import Store, open_store
from tests.conftest import fresh_database
from tests.helpers import auth
from tests.test_incidents import NOW, SETTINGS, traffic

TEMPLATES = {
    "v1": "Answer {question} citing the policy.",
    "v2": "Keep answers short: {question}",
    "v3": "Answer {question}.",
}


class Api:
    def __init__(self, client: TestClient, store: Store, admin: str, app_key: str) -> None:
        self.client, self.store, self.admin, self.app_key = client, store, admin, app_key

    def move(self, label: str, key: str | None = None, prompt: str = "answer", **body: Any):
        return self.client.put(
            f"/v1/prompts/{prompt}/labels/{label}", json=body, headers=auth(key or self.admin)
        )

    def resolve(self, **params: Any):
        return self.client.get(
            "/v1/prompts/answer/resolve", params=params, headers=auth(self.app_key)
        )


@pytest.fixture
def api(embedded_settings: Settings, embedded_store: Store) -> Iterator[Api]:
    keys = {}
    for name, scopes in (("admin", ["ingest", "read", "admin"]), ("app", ["ingest"])):
        keys[name], record = new_key("acme", scopes, name=name)
        embedded_store.put_api_key(record)
    with TestClient(create_app(embedded_settings, embedded_store)) as client:
        a = Api(client, embedded_store, keys["admin"], keys["app"])
        for v, text in TEMPLATES.items():
            r = client.put(
                f"/v1/prompts/answer/versions/{v}", json={"template": text}, headers=auth(a.admin)
            )
            assert r.status_code == 201
        yield a


def test_a_label_move_is_served_by_resolve_at_once_and_kept_in_the_history(api):
    r = api.move("staging", version="v1", reason="first")
    assert r.status_code == 200 and r.json()["moved"] and r.json()["from"] == ""
    got = api.resolve(label="staging").json()
    assert (got["version"], got["template"], got["variant"]) == ("v1", TEMPLATES["v1"], None)
    assert api.move("staging", version="v2", expected="v1").json()["moved"]
    assert api.resolve(label="staging").json()["version"] == "v2"  # the cache was invalidated
    again = api.move("staging", version="v2")
    assert again.status_code == 200 and not again.json()["moved"]  # idempotent, no new event
    hist = api.client.get(
        "/v1/prompts/answer/labels/staging/history", headers=auth(api.admin)
    ).json()["moves"]
    assert [(m["from"], m["version"], m["reason"]) for m in hist] == [
        (None, "v1", "first"),
        ("v1", "v2", ""),
    ]
    listed = api.client.get("/v1/prompts/answer/labels", headers=auth(api.admin)).json()["labels"]
    assert [(x["label"], x["model"], x["version"], x["protected"]) for x in listed] == [
        ("staging", None, "v2", False)
    ]


def test_a_move_with_a_stale_expected_version_is_409_naming_the_current_one(api):
    api.move("staging", version="v1")
    r = api.move("staging", version="v3", expected="v2")
    assert r.status_code == 409
    assert r.json()["current"] == "v1" and "'v1'" in r.json()["detail"]
    assert api.move("staging", version="v3", expected="").status_code == 409  # it exists
    assert api.resolve(label="staging").json()["version"] == "v1"


def test_concurrent_moves_with_the_same_expected_version_let_exactly_one_win(api):
    api.move("staging", version="v1")
    answers: list[int] = []

    def mover(version: str) -> None:
        answers.append(api.move("staging", version=version, expected="v1").status_code)

    threads = [threading.Thread(target=mover, args=(v,)) for v in ("v2", "v3") * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200] + [409] * 7
    hist = api.store.label_history("acme", "answer", "staging")
    assert [(e["seq"], e["from_version"]) for e in hist][:2] == [(1, ""), (2, "v1")]
    assert len(hist) == 2


def test_a_label_can_point_to_another_version_for_one_model(api):
    api.move("staging", version="v1")
    api.move("staging", version="v3", model="gpt-4o-mini")
    assert api.resolve(label="staging", model="gpt-4o-mini").json()["version"] == "v3"
    assert api.resolve(label="staging", model="gpt-4o-mini").json()["model"] == "gpt-4o-mini"
    other = api.resolve(label="staging", model="gpt-4o").json()
    assert (other["version"], other["model"]) == ("v1", None)  # the label's default
    assert api.resolve(label="staging").json()["version"] == "v1"


def test_a_protected_label_refuses_an_ungated_version_unless_forced_with_a_reason(api):
    r = api.move("production", version="v2")
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "version"
    assert "gate" in r.json()["detail"][0]["message"]
    r = api.move("production", version="v2", force=True)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "reason"
    r = api.move("production", version="v2", force=True, reason="hotfix, gate down")
    assert r.status_code == 200 and r.json()["forced"]
    (event,) = api.store.label_history("acme", "answer", "production")
    assert event["forced"] == 1 and event["reason"] == "hotfix, gate down"
    assert event["key_id"] == api.admin.split("_")[1]  # pb_<key id>_<secret>


def test_a_protected_label_accepts_a_version_with_a_passing_gate_result(api):
    gate_row = {
        "project_id": "acme",
        "app": "bot",
        "environment": "eval",
        "compared": "prompt_version",
        "baseline": "v1",
        "candidate": "v3",
        "candidate_run": "r1",
        "prompt_ids": ["answer"],
        "models": ["gpt-4o"],
        "model_versions": ["2024-08-06"],
        "verdict": "pass",
        "result": "{}",
        "ts": NOW,
    }
    api.store.insert_rows("gate_results", [{**gate_row, "verdict": "fail", "candidate": "v2"}])
    assert api.move("production", version="v2").status_code == 422  # failed: not a pass
    api.store.insert_rows("gate_results", [gate_row])
    assert api.move("production", version="v3").json()["moved"]
    # the pass was on gpt-4o: a pointer for another model is refused
    r = api.move("production", version="v3", model="gpt-4o-mini")
    assert r.status_code == 422 and "gpt-4o-mini" in r.json()["detail"][0]["message"]
    assert api.move("production", version="v3", model="gpt-4o").json()["moved"]


def test_bad_input_names_the_field(api):
    r = api.move("Prod Label", version="v1")
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "label"
    r = api.move("staging", version="v9")
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "version"
    r = api.move("staging", version="v1", colour="blue")
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.colour"
    assert api.resolve(label="staging").status_code == 404
    assert "no labels" in api.resolve(label="staging").json()["detail"]
    api.move("staging", version="v1")
    r = api.resolve(label="canary")
    assert r.status_code == 404 and "canary" in r.json()["detail"]
    r = api.client.get("/v1/prompts/nope/labels", headers=auth(api.admin))
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = api.client.get("/v1/prompts/answer/labels/canary/history", headers=auth(api.admin))
    assert r.status_code == 404
    assert api.move("staging", key=api.app_key, version="v2").status_code == 403


def test_rollback_from_an_incident_moves_exactly_the_labels_serving_the_culprit(api):
    traffic(api.store)  # acme: prompt answer@v2 regresses `correct` (an incident names it)
    run_detection(api.store, SETTINGS, now=NOW)
    (inc,) = [i for i in api.store.incidents("acme") if i["verdict"] == "culprit"]
    assert inc["culprit"] == "prompt answer@v2"
    api.move("production", version="v2", force=True, reason="before the gate existed")
    api.move("staging", version="v2")
    api.move("staging", version="v3", model="gpt-4o-mini")  # serves v3: not the culprit
    api.move("canary", version="v1")
    url = f"/v1/incidents/{inc['incident_id']}"
    release = api.client.get(url, headers=auth(api.admin)).json()["release"]
    assert sorted((s["label"], s["model"]) for s in release["serving_labels"]) == [
        ("production", None),
        ("staging", None),
    ]
    assert release["rollback_to"] == "v1" and release["rollback_possible"]
    assert api.client.post(url + "/rollback", headers=auth(api.app_key)).status_code == 403

    r = api.client.post(url + "/rollback", headers=auth(api.admin)).json()
    assert sorted((m["label"], m["from"], m["to"]) for m in r["moved"]) == [
        ("production", "v2", "v1"),
        ("staging", "v2", "v1"),
    ]
    assert "answer@v2" in r["message"]
    assert api.resolve(label="production").json()["version"] == "v1"
    assert api.resolve(label="staging", model="gpt-4o-mini").json()["version"] == "v3"
    assert api.resolve(label="canary").json()["version"] == "v1"
    events = api.store.label_history("acme", "answer", "production")
    assert events[-1]["incident_id"] == inc["incident_id"]
    assert api.store.incident("acme", inc["incident_id"])["status"] == "resolved"

    again = api.client.post(url + "/rollback", headers=auth(api.admin)).json()
    assert again["moved"] == [] and "already rolled back by this incident" in again["message"]
    assert len(api.store.label_history("acme", "answer", "production")) == 2


def test_alerts_say_which_labels_serve_the_culprit_and_how_to_roll_back(api):
    traffic(api.store)
    run_detection(api.store, SETTINGS, now=NOW)
    api.move("production", version="v2", force=True, reason="before the gate existed")
    config = {
        "channels": [
            {"name": "chat", "kind": "slack", "url": "https://hooks.slack.com/services/T/B/X"},
            {"name": "hook", "kind": "webhook", "url": "https://example.com/hook"},
        ],
        "rules": [{"name": "all", "channels": ["chat", "hook"], "direction": "any"}],
    }
    apply_alerts(api.store, "acme", validate_alerts(config))
    sent: dict[str, Any] = {}

    def poster(url: str, body: dict[str, Any], **_: Any) -> Delivery:
        sent.setdefault(url, body)
        return Delivery(True, 1)

    run_alerts(api.store, SETTINGS, project_id="acme", now=NOW, poster=poster)
    slack = json.dumps(sent["https://hooks.slack.com/services/T/B/X"])
    assert "Served now by label production; roll back to v1" in slack
    hook = sent["https://example.com/hook"]
    assert hook["release"]["serving_labels"] == [
        {"prompt_id": "answer", "label": "production", "model": None}
    ]
    assert hook["release"]["how"].endswith("/rollback (admin key), or from the incident page")


def test_rollback_of_a_model_culprit_says_why_nothing_moved(api):
    incident = {
        "incident_id": "i-model",
        "verdict": "culprit",
        "metric": "json_ok",
        "culprit": "model gpt-4o-mini@2025-01-15",
        "evidence": '{"culprit": {"dimension": "model", "value": "gpt-4o-mini@2025-01-15",'
        ' "predecessor": "gpt-4o-mini@2024-07-18"}}',
    }
    from promptblame.releases.incident import rollback

    r = rollback(api.store, "acme", incident, "k")
    assert r["moved"] == [] and "is a model" in r["message"]


_RACER = """
import sys, time
from promptblame.errors import LabelConflict
from promptblame.releases import labels
from promptblame.store.server import ServerStore
store = ServerStore(sys.argv[1], database=sys.argv[2])
time.sleep(max(0.0, float(sys.argv[5]) - time.time()))  # both start together
wins = 0
for i in range(int(sys.argv[4])):
    now = labels.current(store, "acme", "answer", "staging", "")
    held = now["to_version"] if now else ""
    target = {"v1": "v2", "v2": "v3"}.get(held, "v1")
    try:
        m = labels.Move(prompt_id="answer", label="staging", version=target, expected=held,
                        key_id=sys.argv[3])
        wins += labels.move(store, "acme", m, protected=frozenset())["moved"]
    except LabelConflict:
        pass
print(wins)
"""


def test_two_processes_racing_on_a_server_store_never_lose_or_fork_a_move(clickhouse_url):
    """Each process reads the label and moves it with that version as `expected`: every move
    that answered success is in the history exactly once, and the history is one chain."""
    database = fresh_database()
    store = open_store(Settings(clickhouse_url=clickhouse_url, database=database))
    try:
        for v, text in TEMPLATES.items():
            store.put_prompt_version(
                "acme",
                prompt_id="answer",
                version=v,
                template=text,
                content_hash=v,
                author="",
                labels=[],
                created_at=NOW,
            )
        start_at = str(time.time() + 5)  # after both processes have imported and connected
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _RACER, clickhouse_url, database, name, "25", start_at],
                stdout=subprocess.PIPE,
                text=True,
            )
            for name in ("p1", "p2")
        ]
        wins = [int(p.communicate(timeout=240)[0]) for p in procs]
        history = store.label_history("acme", "answer", "staging")
        assert sum(wins) == len(history)
        assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
        for before, after in itertools.pairwise(history):
            assert after["from_version"] == before["to_version"]  # one chain, no fork
        claims = store._rows("SELECT count() AS n FROM label_events")[0]["n"]
        assert claims > len(history)  # the processes did race: some claims lost their seq
        now = labels.current(store, "acme", "answer", "staging", "")
        assert now is not None and now["seq"] == len(history)
    finally:
        store.close()


def test_rollout_requests_are_validated_naming_the_field(api):
    api.move("staging", version="v1")
    base = {
        "prompt_id": "answer",
        "label": "staging",
        "candidate": "v2",
        "steps": [50, 100],
        "guardrails": [{"metric": "response.error", "direction": "lower_is_better"}],
    }

    def start(**over: Any):
        return api.client.post("/v1/rollouts", json={**base, **over}, headers=auth(api.admin))

    def field_of(r) -> str:
        assert r.status_code == 422, r.text
        return str(r.json()["detail"][0]["field"])

    assert "steps must increase" in start(steps=[5, 5, 100]).json()["detail"][0]["message"]
    assert "last step must be 100" in start(steps=[1, 50]).json()["detail"][0]["message"]
    assert field_of(start(candidate="v9")) == "candidate"
    assert field_of(start(candidate="v1")) == "candidate"  # already served
    assert field_of(start(guardrails=[{"metric": "nope"}])) == "guardrails.0.metric"
    bad_drop = start(guardrails=[{"metric": "ok", "max_drop": -1}])
    assert field_of(bad_drop) == "body.guardrails.0.max_drop"
    assert field_of(start(on_regression="explode")) == "body.on_regression"
    assert start(label="canary").status_code == 404
    r = start()
    assert r.status_code == 201 and r.json()["state"] == "running"
    assert start().status_code == 409  # one active rollout per label
    moved = api.move("staging", version="v3")
    assert moved.status_code == 409 and "abort or promote" in moved.json()["detail"]
    arms = {f"u{i}": api.resolve(label="staging", unit=f"u{i}").json() for i in range(40)}
    assert {a["variant"] for a in arms.values()} == {"candidate", "incumbent"}
    for unit, a in arms.items():  # sticky, and the version is the arm's
        again = api.resolve(label="staging", unit=unit).json()
        assert (again["variant"], again["version"]) == (a["variant"], a["version"])
        assert a["version"] == ("v2" if a["variant"] == "candidate" else "v1")
        assert a["experiment"] == f"{r.json()['rollout_id']}/0"
    rid = r.json()["rollout_id"]
    aborted = api.client.post(f"/v1/rollouts/{rid}/abort", headers=auth(api.admin))
    assert aborted.json()["state"] == "aborted"
    assert api.resolve(label="staging", unit="u1").json()["variant"] is None
    assert api.move("staging", version="v3").status_code == 200


def test_a_rollback_rule_rolls_back_a_culprit_automatically_and_says_so(api):
    traffic(api.store)
    run_detection(api.store, SETTINGS, now=NOW)
    api.move("production", version="v2", force=True, reason="before the gate existed")
    hook = {"name": "hook", "kind": "webhook", "url": "https://example.com/hook"}
    policy = {"name": "auto", "channels": ["hook"], "verdicts": ["culprit"], "rollback": True}
    with pytest.raises(ConfigInvalid, match="rollback rule needs"):  # every verdict: refused
        bad = {"name": "bad", "channels": ["hook"], "rollback": True}
        validate_alerts({"channels": [hook], "rules": [bad]})
    apply_alerts(api.store, "acme", validate_alerts({"channels": [hook], "rules": [policy]}))
    sent: list[dict[str, Any]] = []

    def poster(url: str, body: dict[str, Any], **_: Any) -> Delivery:
        sent.append(body)
        return Delivery(True, 1)

    run_alerts(api.store, SETTINGS, project_id="acme", now=NOW, poster=poster)
    assert [b["event"] for b in sent] == ["opened"]
    assert sent[0]["release"]["rollback_to"] == "v1"
    assert api.resolve(label="production").json()["version"] == "v1"
    (event,) = [
        e for e in api.store.label_history("acme", "answer", "production") if e["incident_id"]
    ]
    assert (event["from_version"], event["to_version"], event["key_id"]) == (
        "v2",
        "v1",
        "policy:auto",
    )
    run_alerts(api.store, SETTINGS, project_id="acme", now=NOW, poster=poster)
    assert [b["event"] for b in sent] == ["opened", "resolved"]
    assert sent[1]["text"].endswith("(rolled back: production answer@v2 → v1)")


def test_detection_takes_the_label_move_as_the_culprits_arrival(api):
    """A 1 % canary served answer@v2 for days; moving `production` to it is the real deploy,
    which the app's clients pick up over two hours. The incident's shift starts at the move
    (the label history is the known deploy time), and v2 is still tested and blamed."""
    from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
    from promptblame.ingest.rows import responses_table, scores_table
    from tests.test_incidents import SETTINGS as DETECTION

    assert api.move("production", version="v2", force=True, reason="canary done").status_code == 200
    (event,) = api.store.label_history("acme", "answer", "production")
    moved = event["claimed_at"]
    moved = moved if moved.tzinfo else moved.replace(tzinfo=UTC)
    hour0 = moved.replace(minute=0, second=0, microsecond=0)
    rng = np.random.default_rng(5)
    events, scores = [], []
    for h in range(-5 * 24, 23):  # ts may be up to a day ahead of the clock
        share = 0.01 if h < 0 else {0: 0.3, 1: 0.7}.get(h, 1.0)
        for i in range(int(rng.poisson(80))):
            v2 = rng.random() < share
            eid = f"m{h}_{i}"
            events.append(
                ResponseEvent(
                    event_id=eid,
                    ts=hour0 + timedelta(hours=h, seconds=float(rng.uniform(0, 3600))),
                    app="bot",
                    model="gpt-4o",
                    route="billing",
                    prompt_id="answer",
                    prompt_version="v2" if v2 else "v1",
                )
            )
            ok = rng.random() < (0.7 if v2 else 0.9)
            scores.append(ScoreEvent(event_id=eid, name="correct", value=float(ok)))
    now = datetime.now(UTC)
    api.store.insert("responses", responses_table("acme", events, now))
    api.store.insert("scores", scores_table("acme", scores, now))
    api.store.materialize_scores()
    run_detection(api.store, DETECTION, now=hour0 + timedelta(hours=23, minutes=30))
    (inc,) = [i for i in api.store.incidents("acme") if i["verdict"] == "culprit"]
    assert inc["culprit"] == "prompt answer@v2"
    culprit = json.loads(inc["evidence"])["culprit"]
    assert culprit["arrival_label"] == "production" and culprit["p_value"] < 1e-6
    start = (
        inc["shift_start"] if inc["shift_start"].tzinfo else inc["shift_start"].replace(tzinfo=UTC)
    )
    assert start == hour0
