"""The hostile corpus through both store transports (chDB in-process; clickhouse-connect over
HTTP to a ClickHouse server or its test double): every payload in every text column comes back
byte for byte, and as a filter value it matches exactly its own row — a parameter is a literal,
never SQL, whatever quotes, backslashes, braces, tabs, newlines or NULs it holds. A prompt
template of 100,000 characters is stored too (an arrow row: as a query parameter it overflowed
the server's URL limit)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
from promptblame.ingest.rows import responses_table, scores_table
from promptblame.store import ResponseFilter
from tests.hostile import corpus, ident

PAYLOADS = corpus()
T0 = datetime(2026, 11, 20, tzinfo=UTC)
ID_COLUMNS = (
    *("app", "model", "route", "environment", "prompt_id", "prompt_version", "model_version"),
    *("provider", "experiment", "variant", "case_id", "trace_id", "span_id", "user_id"),
    *("session_id", "error_type"),
)
FILTERS = (
    *("app", "route", "environment", "prompt_id", "prompt_version", "model", "model_version"),
    *("provider", "experiment", "variant"),
)


def test_every_payload_round_trips_through_the_store_and_filters_as_a_literal(any_store):
    ids: dict[str, Any] = {}
    events = [
        ResponseEvent(
            event_id=ident(p, f"#{n}"),
            ts=T0 + timedelta(seconds=n),
            **(ids | {c: ident(p) for c in ID_COLUMNS}),
            input=p.text,
            output=p.text,
            expected_output=p.text,
            tags={ident(p): p.text[:4096]},
        )
        for n, p in enumerate(PAYLOADS)
    ]
    now = datetime.now(UTC)
    any_store.insert("responses", responses_table("p", events, now))
    scores = [
        ScoreEvent(event_id=e.event_id, name="ok", value=1, comment=e.output[:10_000])
        for e in events
    ]
    any_store.insert("scores", scores_table("p", scores, now))
    for p in PAYLOADS:
        any_store.put_prompt_version(
            "p",
            prompt_id=ident(p),
            version=ident(p),
            template=p.text,
            content_hash=hashlib.sha256(p.text.encode()).hexdigest(),
            author=ident(p),
            labels=[ident(p)],
            created_at=T0,
        )

    rows = {r["event_id"]: r for r in any_store.list_responses("p", ResponseFilter(), limit=1000)}
    assert len(rows) == len(PAYLOADS)
    for n, (e, p) in enumerate(zip(events, PAYLOADS, strict=True)):
        row = rows[e.event_id]
        for c in (*ID_COLUMNS, "input", "output", "expected_output"):
            assert row[c] == getattr(e, c), (p.name, c)
        assert dict(row["tags"]) == e.tags, p.name
        # a query each: one filter per payload here, the columns in turn (a value is escaped
        # the same whichever column it filters; test_hostile_content tries every filter)
        f = FILTERS[n % len(FILTERS)]
        by: dict[str, Any] = {f: ident(p)}
        found = any_store.list_responses("p", ResponseFilter(**by), limit=10)
        assert [r["event_id"] for r in found] == [e.event_id], (p.name, f)
        (version,) = any_store.list_prompt_versions("p", ident(p))
        assert (version["version"], version["template"], version["labels"]) == (
            ident(p),
            p.text,
            [ident(p)],
        ), p.name
    comments = any_store._rows(
        "SELECT event_id, comment FROM scores FINAL WHERE project_id = {p:String}", p="p"
    )
    assert {r["event_id"]: r["comment"] for r in comments} == {
        s.event_id: s.comment for s in scores
    }
    assert any_store.count("responses", "p") == len(PAYLOADS)  # "DROP TABLE" did nothing
