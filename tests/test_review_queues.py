"""Annotation queues on the real engine: deterministic and stratified sampling, serving each
response at most once per reviewer, overlap double labels at the configured rate, labels as
scores with source human:<queue>, undo, and bad labels refused naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from promptblame.errors import InvalidArgument
from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
from promptblame.ingest.rows import responses_table, scores_table
from promptblame.review import queues
from promptblame.review.config import validate
from promptblame.review.sampling import sample
from promptblame.store import Store
from tests.helpers import event

P = "proj"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def seed(store: Store, counts: dict[str, int]) -> list[str]:
    """Responses of prompt versions in the given (unequal) numbers; their ids."""
    events, i = [], 0
    for version, n in counts.items():
        for _ in range(n):
            events.append(ResponseEvent.model_validate(event(i, prompt_version=version)))
            i += 1
    store.insert("responses", responses_table(P, events, NOW))
    return [e.event_id for e in events]


def config(**queue: Any) -> dict[str, Any]:
    q = {
        "name": "q1",
        "fields": [
            {"name": "correct", "kind": "pass_fail"},
            {"name": "tone", "kind": "scale", "required": False},
        ],
        **queue,
    }
    return {"queues": [q]}


def apply(store: Store, doc: dict[str, Any]) -> None:
    queues.apply(store, P, validate(doc))


def test_sampling_is_deterministic_and_a_rate_keeps_about_that_share():
    rows = [(f"e{i}", "") for i in range(4000)]
    a = sample(rows, seed="queue:x", rate=0.1, max_items=10_000)
    b = sample(list(reversed(rows)), seed="queue:x", rate=0.1, max_items=10_000)
    assert a == b and 340 < len(a) < 460  # binomial(4000, 0.1): mean 400, sd 19
    other = sample(rows, seed="queue:y", rate=0.1, max_items=10_000)
    assert {i.event_id for i in a} != {i.event_id for i in other}
    # a lower rate keeps a subset (ranks are positions, not draws)
    low = sample(rows, seed="queue:x", rate=0.05, max_items=10_000)
    assert {i.event_id for i in low} < {i.event_id for i in a}


def test_a_stratified_queue_takes_the_configured_number_per_version(embedded_store):
    seed(embedded_store, {"v1": 200, "v2": 15, "v3": 3})
    apply(embedded_store, config(stratify_by="prompt_version", per_stratum=10))
    items = queues.items(embedded_store, P, "q1")
    per: dict[str, int] = {}
    for it in items:
        per[it.stratum] = per.get(it.stratum, 0) + 1
    assert per == {"v1": 10, "v2": 10, "v3": 3}
    # applying again (same config, same data) changes nothing; a fresh apply elsewhere agrees
    apply(embedded_store, config(stratify_by="prompt_version", per_stratum=10))
    assert queues.items(embedded_store, P, "q1") == items
    assert [i.rank for i in items] == sorted(i.rank for i in items)


def test_one_reviewer_is_never_served_the_same_response_twice_and_overlap_doubles(embedded_store):
    seed(embedded_store, {"v1": 60})
    apply(embedded_store, config(overlap=0.5))
    items = queues.items(embedded_store, P, "q1")
    double = {i.event_id for i in items if i.needed == 2}
    assert len(items) == 60 and 15 <= len(double) <= 45  # binomial(60, 0.5)
    served: dict[str, list[str]] = {"ann": [], "bob": []}
    # the two reviewers alternate until the queue has nothing left for either
    while True:
        progressed = False
        for who in ("ann", "bob"):
            item = queues.next_item(embedded_store, P, "q1", who)
            if item is None:
                continue
            progressed = True
            served[who].append(item.event_id)
            queues.submit(
                embedded_store,
                P,
                "q1",
                event_id=item.event_id,
                reviewer=who,
                key_id="k",
                labels={"correct": "pass" if len(served[who]) % 3 else "fail"},
            )
        if not progressed:
            break
    for who, ids in served.items():
        assert len(ids) == len(set(ids)), f"{who} was served a response twice"
    labelled = {i.event_id: i.labelled_by for i in queues.items(embedded_store, P, "q1")}
    assert {e for e, by in labelled.items() if len(by) == 2} == double
    assert all(len(by) == 1 for e, by in labelled.items() if e not in double)


def test_labels_become_scores_with_the_queue_as_source_and_undo_takes_them_back(embedded_store):
    seed(embedded_store, {"v1": 5})
    apply(embedded_store, config())
    first = queues.next_item(embedded_store, P, "q1", "ann")
    assert first is not None
    queues.submit(
        embedded_store,
        P,
        "q1",
        event_id=first.event_id,
        reviewer="ann",
        key_id="k",
        labels={"correct": "fail", "tone": 4},
        comment="rude",
    )
    scores = {
        (s["name"], s["source"]): s for s in embedded_store.response_scores(P, first.event_id)
    }
    assert scores[("correct", "human:q1")]["value"] == 0.0
    assert scores[("tone", "human:q1")]["value"] == 4.0
    assert scores[("correct", "human:q1")]["comment"] == "ann: rude"
    # usable as a metric: the analysis table holds it after materialization
    embedded_store.materialize_scores()
    assert "human:q1" in embedded_store.score_sources(P, "correct")
    second = queues.next_item(embedded_store, P, "q1", "ann")
    assert second is not None and second.event_id != first.event_id
    assert queues.undo(embedded_store, P, "q1", reviewer="ann", key_id="k") == first.event_id
    assert embedded_store.response_scores(P, first.event_id) == []
    again = queues.next_item(embedded_store, P, "q1", "ann")
    assert again is not None and again.event_id == first.event_id


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"correct": "maybe"}, "labels.correct"),
        ({"correct": "pass", "tone": 6}, "labels.tone"),
        ({"correct": "pass", "tone": 2.5}, "labels.tone"),
        ({"tone": 3}, "labels.correct"),
        ({"correct": "pass", "speed": 1}, "labels.speed"),
    ],
)
def test_a_label_outside_the_schema_is_refused_naming_the_field(embedded_store, labels, field):
    seed(embedded_store, {"v1": 2})
    apply(embedded_store, config())
    item = queues.next_item(embedded_store, P, "q1", "ann")
    assert item is not None
    with pytest.raises(InvalidArgument) as err:
        queues.submit(
            embedded_store,
            P,
            "q1",
            event_id=item.event_id,
            reviewer="ann",
            key_id="k",
            labels=labels,
        )
    assert err.value.field == field
    assert embedded_store.review_answers(P, "q1") and all(
        a["action"] == "lease" for a in embedded_store.review_answers(P, "q1")
    )


def test_an_incident_feed_samples_before_and_after_the_shift(embedded_store):
    from promptblame.store.schema import INCIDENTS_ARROW

    ids = seed(embedded_store, {"v1": 40, "v2": 40})  # v2's responses come later
    rows = embedded_store.responses_by_id(P, [ids[40]])
    start = rows[0]["ts"]
    inc: dict[str, Any] = {f.name: "" for f in INCIDENTS_ARROW}
    inc.update(
        project_id=P,
        incident_id="inc-1",
        app="support-bot",
        route="billing",
        environment="prod",
        metric="correct",
        bucket_seconds=3600,
        shift_start=start,
        effect=0.0,
        p_value=0.0,
        revision=1,
        created_at=NOW,
        updated_at=NOW,
    )
    embedded_store.insert_rows("incidents", [inc])
    apply(
        embedded_store,
        {
            "queues": [
                {
                    "name": "inc",
                    "feed": {"incident": "inc-1", "per_side": 5},
                    "fields": [{"name": "correct", "kind": "pass_fail"}],
                }
            ]
        },
    )
    items = queues.items(embedded_store, P, "inc")
    got = embedded_store.responses_by_id(P, [i.event_id for i in items])
    side = {i.event_id: i.stratum for i in items}
    assert sorted(side.values()) == ["after"] * 5 + ["before"] * 5
    for r in got:
        assert r["route"] == "billing"
        assert (r["ts"] >= start) == (side[r["event_id"]] == "after")


def test_scores_of_other_sources_are_untouched_by_labels(embedded_store):
    ids = seed(embedded_store, {"v1": 3})
    embedded_store.insert(
        "scores",
        scores_table(
            P, [ScoreEvent(event_id=ids[0], name="correct", value=1.0, source="evaluator:j@1")], NOW
        ),
    )
    apply(embedded_store, config())
    for _ in range(3):
        item = queues.next_item(embedded_store, P, "q1", "ann")
        assert item is not None
        queues.submit(
            embedded_store,
            P,
            "q1",
            event_id=item.event_id,
            reviewer="ann",
            key_id="k",
            labels={"correct": "fail"},
        )
    sources = {s["source"] for s in embedded_store.response_scores(P, ids[0])}
    assert sources == {"evaluator:j@1", "human:q1"}


def test_a_skipped_item_goes_to_someone_else_and_makes_no_score(embedded_store):
    seed(embedded_store, {"v1": 3})
    apply(embedded_store, config())
    first = queues.next_item(embedded_store, P, "q1", "ann")
    assert first is not None
    queues.submit(
        embedded_store, P, "q1", event_id=first.event_id, reviewer="ann", key_id="k", skip=True
    )
    served = []
    while (item := queues.next_item(embedded_store, P, "q1", "ann")) is not None:
        served.append(item.event_id)
        queues.submit(
            embedded_store,
            P,
            "q1",
            event_id=item.event_id,
            reviewer="ann",
            key_id="k",
            labels={"correct": "pass"},
        )
    assert first.event_id not in served and len(served) == 2
    assert embedded_store.response_scores(P, first.event_id) == []
    other = queues.next_item(embedded_store, P, "q1", "bob")
    assert other is not None and other.event_id == first.event_id
