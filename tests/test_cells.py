"""Statistics cells: aggregate reads from `score_cells` equal the same reads from raw rows after
adversarial sequences (retried batches, duplicate and corrected responses, late, corrected and
deleted scores), on every transport."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from promptblame.store import ResponseFilter, Store
from promptblame.store.base import reads_share_one_job_run
from promptblame.store.filters import FAR_FUTURE, FAR_PAST
from promptblame.store.schema import RESPONSES_ARROW, SCORES_ARROW
from tests.test_store_contract import response, score

T = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # long past: every hour of it is sealed
HOUR = timedelta(hours=1)
READS = [  # (since, until, bucket seconds): aligned, unaligned edges, widths, a raw-only width
    (T - 2 * HOUR, T + 30 * HOUR, 3600),
    (T - 2 * HOUR, T + 30 * HOUR, 6 * 3600),
    (T + timedelta(minutes=20), T + timedelta(hours=20, minutes=5), 3600),
    (T, T + 48 * HOUR, 86400),
    (T, T + 30 * HOUR, 900),
]


def now() -> datetime:
    return datetime.now(UTC)


def put_responses(store: Store, *rows: dict[str, Any]) -> None:
    rows = tuple(
        {**r, "received_at": now()} for r in rows
    )  # stamped on arrival, as the writer does
    store.insert("responses", pa.Table.from_pylist(list(rows), schema=RESPONSES_ARROW))
    store.materialize_scores()


def put_scores(store: Store, *rows: dict[str, Any]) -> None:
    rows = tuple({**r, "received_at": now()} for r in rows)
    store.insert("scores", pa.Table.from_pylist(list(rows), schema=SCORES_ARROW))
    store.materialize_scores()


@contextmanager
def cells_used(store: Store, cells: bool) -> Iterator[Store]:
    """The store reading summed hours from the cells (True) or raw rows only (False)."""
    store.use_cells = cells
    try:
        yield store
    finally:
        store.use_cells = True


def read(store: Store, *, cells: bool, **kw: Any) -> list[tuple[Any, ...]]:
    with cells_used(store, cells):
        rows = store.attribution_cells("p1", **kw)
    return sorted(
        (r["app"], r["metric"], r["source"], r["bucket"], r["route"], r["environment"],
         r["prompt"], r["model_label"], r["n"], round(r["total"], 9), round(r["total_sq"], 9),
         r["non_binary"])
        for r in rows
    )  # fmt: skip


def builtin(store: Store, *, cells: bool, **kw: Any) -> list[tuple[Any, ...]]:
    with cells_used(store, cells):
        rows = store.builtin_cells("p1", **kw)
    return sorted(
        tuple(round(v, 6) if isinstance(v, float) else v for v in r.values()) for r in rows
    )


def versions(store: Store, *, cells: bool, **kw: Any) -> list[dict[str, Any]]:
    with cells_used(store, cells):
        return store.version_counts("p1", ResponseFilter(**kw))


def version_sums(store: Store, *, cells: bool, f: dict[str, Any], **kw: Any) -> list[Any]:
    with cells_used(store, cells):
        rows = store.version_score_sums("p1", ResponseFilter(**f), **kw)
    return sorted((r["prompt_version"], r["n"], round(r["total"], 9)) for r in rows)


def group_counts(store: Store, *, cells: bool, f: dict[str, Any], by: str) -> dict[str, int]:
    with cells_used(store, cells):
        return store.group_counts("p1", ResponseFilter(**f), by=by)


def assert_raw_rows_are_final(store: Store) -> None:
    """The raw score rows (deduplicated by a GROUP BY, not FINAL) equal `scored FINAL`."""
    final = store._rows(
        "SELECT app, name, source, toDateTime64(toStartOfHour(ts), 3, 'UTC') AS h,"
        " count() AS n, sum(value) AS t"
        " FROM scored FINAL WHERE project_id = 'p1' GROUP BY app, name, source, h"
    )
    with cells_used(store, False):
        rows = store.attribution_cells(
            "p1", since=FAR_PAST, until=FAR_FUTURE, bucket_seconds=3600, detail=False
        )
    assert sorted((r["app"], r["metric"], r["source"], r["bucket"], r["n"], round(r["total"], 9))
                  for r in rows) == sorted(
        (r["app"], r["name"], r["source"], r["h"], r["n"], round(r["t"], 9)) for r in final
    )  # fmt: skip


def assert_scored_is_the_join(store: Store) -> None:
    """`scored` (which raw reads and the cells both sum) holds exactly the join of the
    deduplicated raw tables: each score once, under its response's current app and time."""
    cols = ("project_id", "event_id", "name", "source", "app", "ts", "value")
    scored = store._rows(f"SELECT {', '.join(cols)} FROM scored FINAL")
    joined = store._rows(
        "SELECT s.project_id AS project_id, s.event_id AS event_id, s.name AS name,"
        " s.source AS source, r.app AS app, r.ts AS ts, s.value AS value"
        " FROM scores AS s FINAL INNER JOIN responses AS r FINAL"
        " ON s.project_id = r.project_id AND s.event_id = r.event_id"
    )
    assert sorted(tuple(r[c] for c in cols) for r in scored) == sorted(
        tuple(r[c] for c in cols) for r in joined
    )


def assert_cells_equal_raw(store: Store) -> None:
    with reads_share_one_job_run():  # nothing is written here: the job need run only once
        _assert_cells_equal_raw(store)


def _assert_cells_equal_raw(store: Store) -> None:
    store.materialize_scores()
    assert_scored_is_the_join(store)
    assert_raw_rows_are_final(store)
    for since, until, bs in READS:
        got = read(store, cells=True, since=since, until=until, bucket_seconds=bs)
        assert got == read(store, cells=False, since=since, until=until, bucket_seconds=bs), bs
        got = builtin(store, cells=True, since=since, until=until, bucket_seconds=bs)
        assert got == builtin(store, cells=False, since=since, until=until, bucket_seconds=bs)
    edges = {"since": T + timedelta(minutes=20), "until": T + timedelta(hours=20, minutes=5)}
    for f in ({}, edges, {"since": T + 3 * HOUR, "prompt_version": "v1"}):
        assert versions(store, cells=True, **f) == versions(store, cells=False, **f), f
        for by in ("prompt_version", "route"):
            counts = group_counts(store, cells=True, f=f, by=by)
            assert counts == group_counts(store, cells=False, f=f, by=by), (f, by)
        for metric, source in (("quality", "judge"), ("tone", ""), ("quality", "")):
            kw = {"metric": metric, "source": source}
            got = version_sums(store, cells=True, f=f, **kw)
            assert got == version_sums(store, cells=False, f=f, **kw), (f, kw)
    live = now() - timedelta(minutes=1)
    span: dict[str, Any] = {"since": T - HOUR, "until": live + HOUR, "bucket_seconds": 3600}
    assert read(store, cells=True, **span) == read(store, cells=False, **span)
    assert builtin(store, cells=True, **span) == builtin(store, cells=False, **span)


def cell_count(store: Store) -> int:
    rows = store._rows("SELECT count() AS c FROM score_cells FINAL WHERE n > 0")
    return int(rows[0]["c"])


def test_cells_equal_raw_reads_through_retries_corrections_late_and_deleted_scores(
    any_store: Store,
):
    s = any_store
    s._exec("SYSTEM STOP MERGES scored")  # superseded rows stay beside their replacements
    events = [(f"e{i}", T + timedelta(minutes=37 * i)) for i in range(40)]
    batch = [
        response(
            e,
            ts=ts,
            prompt_version="v2" if i >= 20 else "v1",
            route=f"r{i % 3}",
            latency_ms=None if i % 4 == 0 else 100.0 + i,
            cost_usd=0.001 * (i % 3) or None,
            status="error" if i % 7 == 0 else "ok",
        )
        for i, (e, ts) in enumerate(events)
    ]
    put_responses(s, *batch)
    put_scores(s, *(score(e, (i % 5) / 4) for i, (e, _) in enumerate(events)))
    put_scores(s, *(score(e, 0.3 * (i % 4), name="tone") for i, (e, _) in enumerate(events[:25])))
    assert s._sealed() > events[-1][1] and cell_count(s) > 0  # the reads below use cells
    assert_cells_equal_raw(s)

    put_responses(s, *batch[:10])  # a retried batch
    put_scores(s, *(score(e, (i % 5) / 4) for i, (e, _) in enumerate(events[:10])))
    assert_cells_equal_raw(s)

    put_scores(s, score("e3", 1.0, ts=T + 5 * HOUR))  # a corrected score (newer ts wins)
    put_scores(s, score("e4", 0.5, source="human"))  # a late score from another source
    assert_cells_equal_raw(s)

    put_scores(s, score("late", 0.25))  # its response arrives later, into a sealed hour
    put_responses(s, response("late", ts=T + 3 * HOUR))
    assert_cells_equal_raw(s)

    put_responses(s, {**batch[5], "prompt_version": "v9"})  # a response corrected in place
    assert_cells_equal_raw(s)
    raw = read(s, cells=False, since=T, until=T + 48 * HOUR, bucket_seconds=86400)
    assert any(r[6] == "greet@v9" for r in raw)  # the correction reached the scored rows

    put_responses(s, {**batch[8], "latency_ms": 250.0, "status": "error"})  # a repeat, other values
    # Deletes below are mutations, which merges apply: with merges stopped one can wait forever.
    s._exec("SYSTEM START MERGES scored")
    put_responses(s, {**batch[15], "app": "search"})  # sent again under another app
    put_responses(s, {**batch[16], "ts": batch[16]["ts"] + timedelta(minutes=5)})  # same hour
    put_responses(s, {**batch[12], "ts": batch[12]["ts"] + 5 * HOUR})  # sent again, hours later
    put_responses(s, response("late-r", ts=T + 7 * HOUR, latency_ms=90.0, cost_usd=0.002))
    assert_cells_equal_raw(s)

    s.delete_score("p1", "e7", "quality", "judge")  # an undone human label
    assert_cells_equal_raw(s)

    put_responses(s, response("fresh", ts=now() - timedelta(minutes=5)))  # the live hour: raw
    put_scores(s, score("fresh", 1.0))
    assert_cells_equal_raw(s)


def test_an_hour_is_summed_once_it_has_passed_and_reads_before_that_use_raw_rows(
    any_store: Store,
):
    s = any_store
    recent = now() - timedelta(minutes=10)
    put_responses(s, response("a", ts=recent), response("b", ts=T))
    put_scores(s, score("a", 1.0), score("b", 0.0))
    sealed = s._sealed()
    assert T < sealed <= recent  # the old hour is summed, the current one not yet
    hours = s._rows("SELECT DISTINCT hour FROM score_cells FINAL WHERE n > 0")
    assert [r["hour"] for r in hours] == [T]
    got = s.attribution_cells("p1", since=T - HOUR, until=recent + HOUR, bucket_seconds=3600)
    assert [r["n"] for r in got] == [1, 1]


def test_the_first_summing_of_existing_data_is_not_taken_for_touched_cells(any_store: Store):
    """A store upgraded to the cells: its first run sums every hour (no new rows). The next run
    with a late score recomputes that score's cell, not every cell again."""
    s = any_store
    old = {"received_at": now() - 2 * HOUR}  # received and scored two hours ago
    rows = [{**response(f"e{k}", ts=T + k * HOUR), **old} for k in range(6)]
    rows.append({**response("live", ts=now()), "received_at": now() - HOUR})  # the newest
    s.insert("responses", pa.Table.from_pylist(rows, schema=RESPONSES_ARROW))
    rows = [{**score(f"e{k}", 0.5), **old} for k in range(6)]
    s.insert("scores", pa.Table.from_pylist(rows, schema=SCORES_ARROW))
    s.materialize_scores()
    s._exec(
        "ALTER TABLE scored UPDATE materialized_at = materialized_at - INTERVAL 1 HOUR"
        " WHERE 1 SETTINGS mutations_sync = 2"
    )
    s._exec("TRUNCATE TABLE score_cells")  # as before the cells' migration
    s._exec("DELETE FROM job_state WHERE job = 'cells'")
    s.materialize_scores()  # nothing new: only the first summing
    written = cell_rows_written(s)
    put_scores(s, score("e2", 1.0))  # a corrected score in one summed hour
    assert cell_rows_written(s) == written + 1
    assert_cells_equal_raw(s)


def cell_rows_written(store: Store) -> int:
    return int(store._rows("SELECT count() AS c FROM score_cells")[0]["c"])


def test_reads_in_one_request_share_one_job_run(embedded_store: Store):
    s = embedded_store
    put_responses(s, response("a", ts=T), response("b", ts=T))

    def acknowledge(event_id: str) -> None:
        row = {**score(event_id, 1.0), "received_at": now()}
        s.insert("scores", pa.Table.from_pylist([row], schema=SCORES_ARROW))

    def scored() -> int:
        return int(s._rows("SELECT count() AS c FROM scored FINAL")[0]["c"])

    acknowledge("a")
    with reads_share_one_job_run():
        assert s.materialize_scores() and scored() == 1  # acknowledged before the request
        acknowledge("b")
        assert not s.materialize_scores() and scored() == 1  # the request had its run
    assert s.materialize_scores() and scored() == 2  # the next request sees it


@pytest.mark.parametrize("bucket", [3600, 7200, 86400])
def test_partial_hours_at_the_edges_come_from_raw_rows(any_store: Store, bucket: int):
    s = any_store
    put_responses(s, *(response(f"m{i}", ts=T + timedelta(minutes=10 * i)) for i in range(30)))
    put_scores(s, *(score(f"m{i}", 1.0) for i in range(30)))
    since, until = T + timedelta(minutes=25), T + timedelta(minutes=245)
    got = s.attribution_cells("p1", since=since, until=until, bucket_seconds=bucket)
    expected = sum(1 for i in range(30) if since <= T + timedelta(minutes=10 * i) < until)
    assert sum(r["n"] for r in got) == expected == 22


def test_a_read_sees_responses_just_acknowledged_for_an_hour_already_summed(any_store: Store):
    s = any_store
    put_responses(s, response("r1", ts=T))
    put_scores(s, score("r1", 1.0))
    assert s._sealed() > T
    row = {**response("r2", ts=T + timedelta(minutes=5)), "received_at": now()}
    s.insert("responses", pa.Table.from_pylist([row], schema=RESPONSES_ARROW))  # no job run yet
    (got,) = s.version_counts("p1", ResponseFilter())
    assert got["responses"] == 2 and got["last_seen"] == T + timedelta(minutes=5)
    (cell,) = s.builtin_cells("p1", since=T, until=T + HOUR, bucket_seconds=3600)
    assert cell["n"] == 2


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_sequences_of_resends_merges_and_early_scores_stay_exact(
    any_store: Store, seed: int
):
    """Seeded random sequences of what ingest can do (new events, retries, events sent again
    with another app, version, time in their hour or hour; scores before or after their
    response, corrected, deleted) with background merges forced between a write and the job:
    after every run `scored` is the join of the deduplicated raw tables, each event is one
    response, and at the end the cells equal raw reads."""
    s, rng = any_store, random.Random(seed)
    sent: dict[str, dict[str, Any]] = {}  # each event's response as last sent
    scores: set[tuple[str, str, str]] = set()
    for step in range(30):
        op = rng.choice(["new", "new", "again", "again", "score", "score", "early", "delete"])
        if op == "new":
            rows = [
                response(
                    f"e{step}-{k}",
                    ts=rng.choice(  # mostly hours summed; some in the live hour
                        [T + timedelta(minutes=rng.randrange(30 * 60))] * 3
                        + [now() - timedelta(minutes=rng.randrange(1, 20))]
                    ),
                    app=rng.choice(["chat", "search"]),
                    prompt_version=rng.choice(["v1", "v2"]),
                )
                for k in range(rng.randint(1, 4))
            ]
        elif op == "again" and sent:
            old = sent[rng.choice(sorted(sent))]
            hour = old["ts"].replace(minute=0, second=0, microsecond=0)
            rows = [
                rng.choice(
                    [
                        old,  # a retry
                        {**old, "app": "search" if old["app"] == "chat" else "chat"},
                        {**old, "prompt_version": "v3"},
                        {**old, "ts": hour + timedelta(minutes=rng.randrange(60))},
                        {**old, "ts": old["ts"] + rng.choice([-1, 1]) * rng.randint(1, 5) * HOUR},
                    ]
                )
            ]
        elif op in ("score", "early"):
            ids = sorted(sent) if op == "score" and sent else [f"early{step}"]
            key = (rng.choice(ids), rng.choice(["quality", "tone"]), rng.choice(["judge", "human"]))
            row = score(key[0], rng.choice([0.0, 0.25, 0.5, 1.0]), name=key[1], source=key[2])
            row["ts"] = T + timedelta(minutes=step)  # later steps correct earlier ones
            s.insert("scores", pa.Table.from_pylist([{**row, "received_at": now()}], SCORES_ARROW))
            scores.add(key)
            rows = []
        elif op == "delete" and scores:
            key = rng.choice(sorted(scores))
            s.delete_score("p1", *key)
            scores.discard(key)
            rows = []
        else:
            continue
        if rows:
            stamped = [{**r, "received_at": now()} for r in rows]
            s.insert("responses", pa.Table.from_pylist(stamped, schema=RESPONSES_ARROW))
            sent.update((r["event_id"], r) for r in rows)
        if rng.random() < 0.4:  # a background merge before the job sees the write
            table = rng.choice(["response_keys", "responses", "scores", "scored"])
            s._exec(f"OPTIMIZE TABLE {table} FINAL")
        if rng.random() < 0.3:
            continue  # the next run takes this write with the next one
        s.materialize_scores()
        assert_scored_is_the_join(s)
        assert s.count("responses", "p1") == len(sent), step
    assert_cells_equal_raw(s)
