"""Trust rules at the gate: an evaluator version below the project's minimum agreement with
human labels is refused with a reason naming it; one that agrees decides; a flag-only rule
warns; app scores are not evaluators and are never refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from promptblame.api.app import create_app
from promptblame.api.auth import new_key
from promptblame.errors import UntrustedEvaluator
from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
from promptblame.ingest.rows import responses_table, scores_table
from promptblame.releases import labels, rollouts
from promptblame.releases.rollouts import RolloutIn
from promptblame.review import queues
from promptblame.review.config import validate
from tests.helpers import auth

P = "acme"
CASES = 30
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
JUDGE = "evaluator:judge@1"


def seed(store: Any, judge_says: Callable[[int, str], float]) -> None:
    """Two eval runs (v1, v2) of CASES cases; the judge's score on each response is
    judge_says(case, version); the app also sends its own score."""
    events, scores = [], []
    for v_i, version in enumerate(("v1", "v2")):
        for i in range(CASES):
            eid = f"{version}-{i}"
            events.append(
                ResponseEvent(
                    event_id=eid,
                    ts=START + timedelta(seconds=v_i * 100 + i),
                    app="bot",
                    environment="eval",
                    prompt_id="answer",
                    prompt_version=version,
                    model="m",
                    case_id=f"c{i}",
                    input=f"q{i}",
                    output=f"a{i}",
                )
            )
            scores.append(
                ScoreEvent(event_id=eid, name="correct", value=judge_says(i, version), source=JUDGE)
            )
            scores.append(ScoreEvent(event_id=eid, name="app_ok", value=1.0))
    now = datetime.now(UTC)
    store.insert("responses", responses_table(P, events, now))
    store.insert("scores", scores_table(P, scores, now))


def truth(i: int) -> float:
    return float(i % 3 != 0)


def review(store: Any, *, enforce: bool, human: Callable[[int], float], items: int = 1000) -> None:
    doc = {
        "queues": [
            {
                "name": "evals",
                "filter": {"environment": "eval"},
                "max_items": items,
                "fields": [{"name": "correct", "kind": "pass_fail"}],
            }
        ],
        "trust": [{"metric": "correct", "min_agreement": 0.6, "min_items": 20, "enforce": enforce}],
    }
    queues.apply(store, P, validate(doc))
    while (item := queues.next_item(store, P, "evals", "ann")) is not None:
        i = int(item.event_id.split("-")[1])
        queues.submit(
            store,
            P,
            "evals",
            event_id=item.event_id,
            reviewer="ann",
            key_id="",
            labels={"correct": "pass" if human(i) else "fail"},
        )


@pytest.fixture
def gate(embedded_settings, embedded_store):
    plaintext, record = new_key(P, ["read"])
    embedded_store.put_api_key(record)
    with TestClient(create_app(embedded_settings, embedded_store)) as c:

        def run(**body: Any) -> Any:
            return c.post(
                "/v1/gate",
                json={"app": "bot", "baseline": "v1", "candidate": "v2", **body},
                headers=auth(plaintext),
            )

        yield run


def test_the_gate_refuses_a_judge_that_disagrees_with_people(embedded_store, gate):
    seed(embedded_store, lambda i, v: float(i % 2))  # a judge unrelated to the truth
    review(embedded_store, enforce=True, human=truth)
    r = gate()
    assert r.status_code == 409, r.text
    msg = r.text
    assert "correct from evaluator:judge@1" in str(msg) and "untrusted" in str(msg)
    assert "0.6" in str(msg)
    # app scores are not an evaluator's: gating on them alone is allowed
    ok = gate(metrics=["app_ok"])
    assert ok.status_code == 200, ok.text


def test_a_judge_that_agrees_with_people_may_decide(embedded_store, gate):
    seed(embedded_store, lambda i, v: truth(i))
    review(embedded_store, enforce=True, human=truth)
    r = gate()
    assert r.status_code == 200, r.text
    assert {m["source"] for m in r.json()["metrics"]} >= {JUDGE}


def test_a_flag_only_rule_warns_instead(embedded_store, gate):
    seed(embedded_store, lambda i, v: float(i % 2))
    review(embedded_store, enforce=False, human=truth)
    r = gate()
    assert r.status_code == 200, r.text
    assert any(
        w.startswith("untrusted_evaluator: correct from evaluator:judge@1")
        for w in r.json()["warnings"]
    )


def test_too_few_labels_leave_a_judge_unproven_and_refused(embedded_store, gate):
    seed(embedded_store, lambda i, v: truth(i))
    review(embedded_store, enforce=True, human=truth, items=10)  # 10 labels, the rule asks 20
    r = gate()
    assert r.status_code == 409 and "unproven" in r.text


def start_rollout(store: Any) -> dict[str, Any]:
    store.materialize_scores()  # what the rollout's checks read
    for v in ("v1", "v2"):
        store.put_prompt_version(
            P,
            prompt_id="answer",
            version=v,
            template=f"template {v}",
            content_hash=f"h{v}",
            author="a",
            labels=[],
            created_at=START,
        )
    move = labels.Move(prompt_id="answer", label="production", version="v1", key_id="k")
    labels.move(store, P, move, protected=frozenset())
    spec = RolloutIn.model_validate(
        {
            "prompt_id": "answer",
            "label": "production",
            "candidate": "v2",
            "guardrails": [{"metric": "correct", "source": JUDGE}],
        }
    )
    return rollouts.start(store, P, spec, key_id="k", protected=frozenset())


def test_a_rollout_guardrail_may_not_watch_an_untrusted_judge(embedded_store):
    seed(embedded_store, lambda i, v: float(i % 2))
    review(embedded_store, enforce=True, human=truth)
    with pytest.raises(
        UntrustedEvaluator, match=r"rollout guardrail.*correct from evaluator:judge@1"
    ):
        start_rollout(embedded_store)
    assert embedded_store.rollout_states(P) == []


def test_a_trusted_judge_watches_a_rollout_whose_arms_feed_a_queue(embedded_store):
    seed(embedded_store, lambda i, v: truth(i))
    review(embedded_store, enforce=True, human=truth)
    st = start_rollout(embedded_store)
    doc = {
        "queues": [
            {
                "name": "evals",
                "filter": {"environment": "eval"},
                "fields": [{"name": "correct", "kind": "pass_fail"}],
            },
            {
                "name": "arms",
                "feed": {"rollout": st["rollout_id"], "per_side": 4},
                "fields": [{"name": "correct", "kind": "pass_fail"}],
            },
        ],
        "trust": [{"metric": "correct", "min_agreement": 0.6, "min_items": 20}],
    }
    queues.apply(embedded_store, P, validate(doc))
    items = queues.items(embedded_store, P, "arms")
    assert sorted(i.stratum for i in items) == ["candidate"] * 4 + ["incumbent"] * 4
    assert all(i.event_id.startswith("v2-" if i.stratum == "candidate" else "v1-") for i in items)


def test_a_running_rollout_pauses_when_its_judge_loses_the_peoples_trust(embedded_store):
    seed(embedded_store, lambda i, v: float(i % 2))
    st = start_rollout(embedded_store)  # no trust rule yet: the judge may watch
    review(embedded_store, enforce=True, human=truth)  # people disagree with it: untrusted
    assert rollouts.watch(embedded_store, P, st, datetime.now(UTC)) == "pause"
    (now,) = embedded_store.rollout_states(P)
    assert now["state"] == "paused" and "no longer trusted" in now["reason"]
    assert JUDGE in now["reason"]
