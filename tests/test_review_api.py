"""The review API and pages over HTTP: config applied as a whole, labels by review keys only,
bad labels named, the review page's form (CSRF, scope) and what it shows before and after an
answer."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from promptblame.api import csrf
from promptblame.api.app import create_app
from promptblame.api.auth import new_key
from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
from promptblame.ingest.rows import responses_table, scores_table
from promptblame.settings import Settings
from promptblame.store import Store
from tests.helpers import auth, event

P = "acme"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
DOC = {
    "queues": [
        {
            "name": "support",
            "filter": {"app": "support-bot"},
            "overlap": 0.0,
            "fields": [
                {"name": "correct", "kind": "pass_fail", "question": "Is it right?"},
                {"name": "tone", "kind": "scale", "required": False},
            ],
        }
    ],
    "trust": [{"metric": "correct", "min_agreement": 0.6, "min_items": 3}],
}


def make_key(store: Store, scopes: list[str], name: str) -> str:
    plaintext, record = new_key(P, scopes, name=name)
    store.put_api_key(record)
    return plaintext


@pytest.fixture
def api(embedded_settings, embedded_store):
    events = [ResponseEvent.model_validate(event(i)) for i in range(6)]
    embedded_store.insert("responses", responses_table(P, events, NOW))
    embedded_store.insert(
        "scores",
        scores_table(
            P,
            [
                ScoreEvent(event_id=e.event_id, name="correct", value=1.0, source="evaluator:j@1")
                for e in events
            ],
            NOW,
        ),
    )
    keys = {
        "admin": make_key(embedded_store, ["read", "admin"], "ada"),
        "review": make_key(embedded_store, ["read", "review"], "rita"),
        "read": make_key(embedded_store, ["read"], "reed"),
    }
    with TestClient(create_app(embedded_settings, embedded_store)) as c:
        r = c.put("/v1/queues", json=DOC, headers=auth(keys["admin"]))
        assert r.status_code == 200, r.text
        yield c, keys


def test_put_queues_applies_the_set_and_names_bad_fields(api):
    c, keys = api
    listed = c.get("/v1/queues", headers=auth(keys["read"])).json()
    assert [q["name"] for q in listed["queues"]] == ["support"]
    assert listed["queues"][0]["items"] == 6
    bad = {"queues": [{"name": "x", "fields": [{"name": "tone", "kind": "scale", "max": 50}]}]}
    r = c.put("/v1/queues", json=bad, headers=auth(keys["admin"]))
    assert r.status_code == 422 and "queues.0.fields.0" in r.text
    # a read or review key cannot change the config
    for k in ("read", "review"):
        assert c.put("/v1/queues", json=DOC, headers=auth(keys[k])).status_code == 403
    again = c.put("/v1/queues", json=DOC, headers=auth(keys["admin"])).json()
    assert {ch["action"] for ch in again["changes"]} == {"unchanged"}


def test_a_review_key_labels_a_read_key_cannot_and_bad_values_name_the_field(api):
    c, keys = api
    items = c.get("/v1/queues/support/items", headers=auth(keys["read"])).json()["items"]
    first = items[0]["event_id"]
    label = {"event_id": first, "labels": {"correct": "fail", "tone": 2}}
    r = c.post("/v1/queues/support/labels", json=label, headers=auth(keys["read"]))
    assert r.status_code == 403 and "review" in r.text
    r = c.post(
        "/v1/queues/support/labels",
        json={"event_id": first, "labels": {"correct": "pass", "tone": 9}},
        headers=auth(keys["review"]),
    )
    assert r.status_code == 422 and "labels.tone" in r.text
    r = c.post("/v1/queues/support/labels", json=label, headers=auth(keys["review"]))
    assert r.status_code == 200, r.text
    stored = c.get("/v1/queues/support/labels", headers=auth(keys["read"])).json()["labels"]
    assert [(s["event_id"], s["reviewer"], s["labels"]) for s in stored] == [
        (first, "rita", {"correct": 0.0, "tone": 2.0})
    ]
    r = c.post("/v1/queues/support/labels/undo", headers=auth(keys["review"]))
    assert r.json()["undone"] == first
    assert c.get("/v1/queues/support/labels", headers=auth(keys["read"])).json()["labels"] == []
    assert c.get("/v1/queues/nope/labels", headers=auth(keys["read"])).status_code == 404


def test_agreement_and_trust_follow_the_labels(api):
    c, keys = api
    items = c.get("/v1/queues/support/items", headers=auth(keys["read"])).json()["items"]
    # the evaluator says pass on all; the humans say fail on half: kappa 0 (no better than
    # chance), under the rule's 0.6 on 3 labels: untrusted
    for i, it in enumerate(items):
        c.post(
            "/v1/queues/support/labels",
            json={"event_id": it["event_id"], "labels": {"correct": "pass" if i % 2 else "fail"}},
            headers=auth(keys["review"]),
        )
    params = {"metric": "correct"}
    (m,) = c.get("/v1/agreement", params=params, headers=auth(keys["read"])).json()["metrics"]
    (e,) = m["evaluators"]
    assert e["source"] == "evaluator:j@1" and e["n"] == 6
    assert e["percent_agreement"] == pytest.approx(0.5)
    assert e["primary"]["name"] == "kappa" and e["primary"]["value"] == pytest.approx(0.0)
    assert e["trust"]["status"] == "untrusted" and "0.6" in e["trust"]["reason"]
    page = c.get("/reports/agreement", headers=auth(keys["read"])).text
    assert "evaluator:j@1" in page and "untrusted" in page
    # every page showing the evaluator's scores flags it: a response's page, a comparison
    shown = c.get(f"/reports/responses/{items[0]['event_id']}", headers=auth(keys["read"])).text
    assert re.search(r"evaluator:j@1 <span class=\"pill bad\"[^>]*>untrusted<", shown)
    params = {
        "metric": "correct",
        "source": "evaluator:j@1",
        "a.route": "billing",
        "b.route": "refunds",
    }
    compared = c.get("/reports/compare", params=params, headers=auth(keys["read"])).text
    assert "evaluator:j@1 is untrusted for correct" in compared
    overview = c.get("/reports/", headers=auth(keys["read"])).text
    assert re.search(r"evaluator:j@1 <span class=\"pill bad\"[^>]*>untrusted<", overview)
    # ... and an experiment's page
    store = c.app.state.pb.store
    arms = [
        ResponseEvent.model_validate({**event(100 + i), "experiment": "x", "variant": "ab"[i % 2]})
        for i in range(4)
    ]
    received = datetime.now(UTC)  # stamped on arrival, as the writer does
    store.insert("responses", responses_table(P, arms, received))
    judged = [ScoreEvent(event_id=e.event_id, name="correct", value=1.0, source="evaluator:j@1")
              for e in arms]  # fmt: skip
    store.insert("scores", scores_table(P, judged, received))
    params = {"metric": "correct", "control": "a", "source": "evaluator:j@1"}
    exp = c.get("/reports/experiments/x", params=params, headers=auth(keys["read"])).text
    assert 'id="trust"' in exp and "evaluator:j@1 is untrusted for correct" in exp


def test_the_review_page_hides_scores_until_answered_and_its_form_needs_token_and_scope(api):
    c, keys = api
    c.cookies.set("pb_report_key", keys["review"], path="/reports")  # a browser's login
    page = c.get("/reports/review/support")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert "evaluator:j@1" not in html  # no automated score before the reviewer answers
    found = re.search(r'name="event_id" value="([^"]+)"', html)
    sent = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found and sent
    event_id, token = found.group(1), sent.group(1)
    # with the login cookie (no Authorization header) the token is required
    form = {"action": "label", "event_id": event_id, "f.correct": "pass", "comment": "ok"}
    r = c.post("/reports/review/support", data=form, follow_redirects=False)
    assert r.status_code == 403
    r = c.post("/reports/review/support", data={**form, "csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and f"last={event_id}" in r.headers["location"]
    after = c.get(r.headers["location"]).text
    assert "evaluator:j@1" in after and "Your last answer" in after
    # a read key's cookie: the page says so, and its post is refused
    c.cookies.set("pb_report_key", keys["read"], path="/reports")
    read_page = c.get("/reports/review/support").text
    assert "cannot label" in read_page and 'name="event_id"' not in read_page
    read_token = csrf.token(Settings(), keys["read"], "review:support")  # a valid token
    r = c.post("/reports/review/support", data={**form, "csrf": read_token}, follow_redirects=False)
    assert r.status_code == 403 and "review" in r.text


def test_review_apply_on_the_command_line_names_bad_lines(tmp_path):
    from tests.server_process import cli

    data = tmp_path / "data"
    assert cli(data, "migrate").returncode == 0
    path = tmp_path / "review.yaml"
    path.write_text(
        "queues:\n  - name: support\n    overlap: 0.2\n    fields:\n"
        "      - {name: correct, kind: pass_fail}\n      - {name: tone, kind: scale, max: 70}\n"
    )
    bad = cli(data, "review", "apply", str(path), "--project", "p1")
    assert bad.returncode != 0 and "line 6: queues.0.fields.1" in bad.stderr
    path.write_text(path.read_text().replace("max: 70", "max: 7"))
    ok = cli(data, "review", "apply", str(path), "--project", "p1")
    assert ok.returncode == 0 and "create       queue support" in ok.stdout


def test_an_incident_measured_by_an_untrusted_judge_says_so(api, embedded_store):
    """A real incident (detection on seeded traffic), as if its metric came from the judge."""
    from promptblame.analysis.detection import run_detection
    from tests.test_incidents import NOW as AFTER
    from tests.test_incidents import SETTINGS as DETECTION
    from tests.test_incidents import traffic

    c, keys = api
    items = c.get("/v1/queues/support/items", headers=auth(keys["read"])).json()["items"]
    for i, it in enumerate(items):  # the judge says pass on all; people disagree on half
        body = {"event_id": it["event_id"], "labels": {"correct": "pass" if i % 2 else "fail"}}
        c.post("/v1/queues/support/labels", json=body, headers=auth(keys["review"]))
    traffic(embedded_store, P)
    embedded_store.materialize_scores()
    run_detection(embedded_store, DETECTION, project_id=P, now=AFTER)
    first = embedded_store.incidents(P)[0]
    row = embedded_store.incident(P, first["incident_id"])
    assert row is not None
    page = c.get(f"/reports/incidents/{row['incident_id']}", headers=auth(keys["read"])).text
    assert 'id="trust-flag"' not in page  # the app's own scores: no rule applies
    row.update(project_id=P, source="evaluator:j@1", updated_at=datetime.now(UTC))
    embedded_store.insert_rows("incidents", [row])
    page = c.get(f"/reports/incidents/{row['incident_id']}", headers=auth(keys["read"])).text
    assert re.search(r'id="trust-flag"[^>]*>untrusted evaluator<', page)
