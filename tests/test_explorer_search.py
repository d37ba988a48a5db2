"""The response explorer's text search and newest-first pages (Store.list_responses).

Search is a case-insensitive substring of the input or the output, typed text taken literally
(LIKE wildcards included). Pages come newest first through widening time windows; whatever the
windows, every page must equal the brute-force answer: all matching responses, deduplicated,
sorted by (ts, event_id) descending, cut after the cursor.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pyarrow as pa

from promptblame.store import ResponseFilter, Store
from promptblame.store.schema import RESPONSES_ARROW, SCORES_ARROW
from tests.test_store_contract import T0, ids, response, score


def put(store: Store, *rows: dict[str, Any]) -> None:
    store.insert("responses", pa.Table.from_pylist(list(rows), schema=RESPONSES_ARROW))


def found(store: Store, text: str, f: ResponseFilter | None = None) -> list[str]:
    rows = store.list_responses("p1", f or ResponseFilter(), limit=100, search=text)
    return sorted(ids(rows))


def test_search_finds_text_in_input_or_output_whatever_its_case(any_store: Store) -> None:
    put(
        any_store,
        response("in", input="Please CANCEL Plan today"),
        response("out", output="we will cancel plan B"),
        response("split", input="cancel", output="plan"),
        response("other", route="cancel plan", case_id="cancel plan"),
        response("umlaut", output="Großer ÄRGER mit der Rechnung"),
    )
    assert found(any_store, "cancel plan") == ["in", "out"]
    assert found(any_store, "Cancel PLAN") == ["in", "out"]
    assert found(any_store, "ärger") == ["umlaut"]
    assert found(any_store, "ca") == ["in", "out", "split"]  # shorter than an n-gram
    assert found(any_store, "nothing like it") == []


def test_search_takes_wildcards_and_escapes_literally(any_store: Store) -> None:
    put(
        any_store,
        response("pct", output="50% off"),
        response("x", output="50x off"),
        response("under", output="snake_case"),
        response("other", output="snakeXcase"),
        response("slash", output="C:\\temp\\new"),
        response("quote", output='it\'s "quoted"'),
    )
    assert found(any_store, "50%") == ["pct"]
    assert found(any_store, "e_c") == ["under"]
    assert found(any_store, "%") == ["pct"]
    assert found(any_store, "\\temp\\") == ["slash"]
    assert found(any_store, "it's \"q") == ["quote"]


def test_a_corrected_retry_is_searched_by_its_latest_text(any_store: Store) -> None:
    put(any_store, response("e1", output="refund denied"))
    put(any_store, response("e1", output="refund approved"))  # the same event, sent again
    assert found(any_store, "denied") == []
    assert found(any_store, "approved") == ["e1"]


def test_pages_through_the_windows_equal_the_brute_force_answer(any_store: Store) -> None:
    """Responses over 60 days, dense and sparse matches: newest first across every window edge
    (1 h, 8 h, 3 d, 21 d and beyond), with and without search, filters and a since bound."""
    rng = random.Random(12)
    newest = T0 + timedelta(days=60)
    rows = []
    for i in range(160):
        age = timedelta(minutes=rng.choice([5, 30, 200, 600, 3000, 9000, 40000, 80000]) + i)
        text = rng.choice(["refund please", "order status", "Refund now", "hello"])
        app = rng.choice(["chat", "search"])
        rows.append(response(f"e{i:03}", ts=newest - age, output=text, app=app))
    rows.append(response("rare", ts=newest - timedelta(days=59), output="order A-777 lost"))
    put(any_store, *rows)
    quality = {r["event_id"]: rng.random() for r in rows}
    any_store.insert(
        "scores",
        pa.Table.from_pylist(
            [score(e, v, ts=newest) for e, v in quality.items()], schema=SCORES_ARROW
        ),
    )
    any_store.materialize_scores()
    low = ("quality", 0.0, 0.4)
    cases: list[tuple[str, ResponseFilter, tuple[str, float, float] | None]] = [
        ("", ResponseFilter(), None),
        ("refund", ResponseFilter(), None),
        ("refund", ResponseFilter(app="search"), None),
        ("a-777", ResponseFilter(), None),
        ("hello", ResponseFilter(since=newest - timedelta(days=10)), None),
        ("", ResponseFilter(app="chat"), low),
        (
            "",
            ResponseFilter(since=newest - timedelta(hours=20), until=newest - timedelta(hours=2)),
            None,
        ),
        ("refund", ResponseFilter(until=newest - timedelta(days=1)), low),
    ]
    for text, f, by_score in cases:
        expected = sorted(
            (
                r
                for r in rows
                if text.lower() in r["input"].lower() or text.lower() in r["output"].lower()
                if (not f.app or r["app"] == f.app) and (f.since is None or r["ts"] >= f.since)
                if f.until is None or r["ts"] < f.until
                if by_score is None or by_score[1] <= quality[r["event_id"]] <= by_score[2]
            ),
            key=lambda r: (r["ts"], r["event_id"]),
            reverse=True,
        )
        for limit in (3, 50):
            pages: list[list[str]] = []
            before = None
            while page := any_store.list_responses(
                "p1",
                f,
                limit=limit,
                before=before,
                columns=("event_id", "ts"),
                search=text,
                score=by_score,
            ):
                pages.append(ids(page))
                before = (page[-1]["ts"], page[-1]["event_id"])
            assert [e for p in pages for e in p] == [r["event_id"] for r in expected], (text, f)
            assert all(len(p) == limit for p in pages[:-1]), (
                text,
                f,
                limit,
            )  # only the last is short


def test_the_text_index_serves_the_search_predicate(embedded_store: Store) -> None:
    """Migration 12's indexes exist (and 22's, for the cells' job) and the engine uses
    text_ngrams to skip granules for the search (a predicate the index cannot answer would show
    no skip index here)."""
    indexes = embedded_store._rows(
        "SELECT name, type FROM system.data_skipping_indices"
        " WHERE database = currentDatabase() AND table = 'responses' ORDER BY name"
    )
    assert [(r["name"], r["type"]) for r in indexes] == [
        ("received_minmax", "minmax"),
        ("text_ngrams", "ngrambf_v1"),
        ("ts_minmax", "minmax"),
    ]
    put(embedded_store, response("e1", output="order A-12345"))
    plan = embedded_store._rows(
        "EXPLAIN indexes = 1 SELECT event_id FROM responses FINAL WHERE project_id = 'p1'"
        " AND (lowerUTF8(input) LIKE lowerUTF8({q:String})"
        " OR lowerUTF8(output) LIKE lowerUTF8({q:String}))",
        q="%a-12345%",
    )
    text = "\n".join(str(next(iter(r.values()))) for r in plan)
    assert "text_ngrams" in text, text
