"""Analysis aggregates, on every transport: the scored table, group moments, raw values,
pairs by eval case, time series and counts — all by response time and deduplicated."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from promptblame.analysis.moments import Moments
from promptblame.settings import Settings
from promptblame.store import ResponseFilter, Store, cells, open_store
from promptblame.store.schema import SCORES_ARROW
from tests.conftest import close_and_drop
from tests.test_store_contract import T0, insert_responses, insert_scores, response, score

F = ResponseFilter


def test_scores_that_arrive_before_their_response_are_joined_once_it_arrives(any_store: Store):
    insert_scores(any_store, score("e1", 0.25), score("e2", 0.75))
    assert any_store.group_moments("p1", {"all": F()}, metric="quality")["all"]["n"] == 0
    insert_responses(any_store, response("e1"), response("e2", prompt_version="v2"))
    got = any_store.group_moments(
        "p1", {"v1": F(prompt_version="v1"), "v2": F(prompt_version="v2")}, metric="quality"
    )
    assert (got["v1"]["n"], got["v1"]["total"]) == (1, 0.25)
    assert (got["v2"]["n"], got["v2"]["total"]) == (1, 0.75)


def test_materializing_again_with_nothing_new_does_nothing_and_changes_nothing(any_store: Store):
    insert_responses(any_store, response("e1"))
    insert_scores(any_store, score("e1", 1.0))
    assert any_store.materialize_scores() is False
    insert_scores(any_store, score("e1", 1.0))  # a retry
    got = any_store.group_moments("p1", {"all": F()}, metric="quality")["all"]
    assert (got["n"], got["total"]) == (1, 1.0)


def test_the_only_writer_skips_the_job_without_a_query_until_a_write_or_an_hour_passes(
    embedded_store: Store, monkeypatch: pytest.MonkeyPatch
):
    """Embedded, this process is the only writer: with nothing written and no hour to sum since
    the last run, a read needs no run and not even the read that looks for changes."""
    s = embedded_store
    insert_responses(s, response("e1"))
    insert_scores(s, score("e1", 0.25))  # each runs the job
    queries: list[str] = []
    select, command = s._select, s._command

    def recorded(sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        queries.append(sql)
        return select(sql, params)

    def recorded_command(sql: str, params: Mapping[str, Any] | None = None) -> None:
        queries.append(sql)
        command(sql, params)

    monkeypatch.setattr(s, "_select", recorded)
    monkeypatch.setattr(s, "_command", recorded_command)
    assert s.materialize_scores() is False and queries == []
    correction = score("e1", 0.75, ts=T0 + timedelta(minutes=1))
    s.insert("scores", pa.Table.from_pylist([correction], schema=SCORES_ARROW))
    assert s.materialize_scores() is True  # as a read does first
    got = s.group_moments("p1", {"all": F()}, metric="quality")["all"]
    assert (got["n"], got["total"]) == (1, 0.75)
    queries.clear()
    assert s.materialize_scores() is False and queries == []
    later = cells.sealed_target(datetime.now(UTC)) + timedelta(hours=1)
    monkeypatch.setattr(cells, "sealed_target", lambda now: later)  # an hour passed
    assert s.materialize_scores() is False
    assert any(q == cells.SEAL for q in queries)  # it ran, and summed the hour


def test_the_only_writers_job_window_starts_at_its_oldest_insert_under_way_not_a_minute_back(
    embedded_store: Store, monkeypatch: pytest.MonkeyPatch
):
    """Embedded, a run takes the rows received from where the oldest insert under way at the
    last run began (re-reading a minute back made each run under ingest ~1 s), and an insert
    that commits after a run it was under way for is still taken by the next run."""
    s = embedded_store
    insert_responses(s, response("e1"), response("e2"))
    s.materialize_scores()
    real_insert, held, release = s._insert, threading.Event(), threading.Event()

    def insert(table: str, data: pa.Table) -> None:
        if table == "scores" and not held.is_set():  # the first score insert stalls mid-way
            held.set()
            release.wait(30)
        real_insert(table, data)

    monkeypatch.setattr(s, "_insert", insert)
    stalled = threading.Thread(
        target=lambda: s.insert(
            "scores", pa.Table.from_pylist([score("e1", 0.25)], SCORES_ARROW), stamp=True
        )
    )
    stalled.start()
    assert held.wait(30)
    time.sleep(1.2)  # it began longer ago than the window's second for the clock
    s.insert("scores", pa.Table.from_pylist([score("e2", 0.5)], SCORES_ARROW), stamp=True)
    assert s.materialize_scores() is True  # e2 is in; e1 is not written yet
    release.set()
    stalled.join(30)
    windows: list[datetime] = []
    execute = s._exec

    def recorded(sql: str, **params: Any) -> None:
        if sql.startswith("INSERT INTO scored"):
            windows.append(params["since"])
        execute(sql, **params)

    monkeypatch.setattr(s, "_exec", recorded)
    assert s.materialize_scores() is True  # as a read does first
    got = s.group_moments("p1", {"all": F()}, metric="quality")["all"]
    assert (got["n"], got["total"]) == (2, 0.75)  # the stalled insert was taken too
    assert windows and min(windows) > datetime.now(UTC) - timedelta(seconds=10)


def test_the_only_writers_run_looks_for_touched_cells_only_where_its_new_rows_can_be(
    embedded_store: Store, monkeypatch: pytest.MonkeyPatch
):
    """Under ingest of live responses the only writer's run neither looks for scored rows it
    did not write nor for responses in summed hours none of its new ones is in (two scans a
    run); a response that lands in a summed hour, or a score, is looked for and counted."""
    s = embedded_store
    insert_responses(s, response("old", ts=T0))
    insert_scores(s, score("old", 1.0))
    assert s._sealed() > T0
    looked: list[str] = []
    rows = s._rows

    def recorded(sql: str, **params: Any) -> list[dict[str, Any]]:
        looked.extend(q for q in ("TOUCHED", "TOUCHED_RESPONSES") if sql == getattr(cells, q))
        return rows(sql, **params)

    monkeypatch.setattr(s, "_rows", recorded)
    live = datetime.now(UTC) - timedelta(minutes=1)
    insert_responses(s, response("live", ts=live))
    assert looked == []
    insert_responses(s, response("late", ts=T0 + timedelta(minutes=5)))
    assert looked == ["TOUCHED_RESPONSES"]
    (counts,) = s.version_counts("p1", F(until=T0 + timedelta(hours=1)))
    assert counts["responses"] == 2  # the summed hour's cell was recomputed
    insert_scores(s, score("late", 0.5))
    assert looked == ["TOUCHED_RESPONSES", "TOUCHED"]
    got = s.group_moments("p1", {"all": F(until=T0 + timedelta(hours=1))}, metric="quality")
    assert (got["all"]["n"], got["all"]["total"]) == (2, 1.5)


def test_the_only_writer_writes_the_jobs_marks_every_few_seconds_and_on_close(
    embedded_settings: Settings,
):
    """A marks INSERT costs 10-45 ms under ingest, so the only writer keeps them and writes
    them at most every MARKS_EVERY seconds, and on close; the store opened again goes on from
    them and counts each row once."""
    s = open_store(embedded_settings)

    def marks(store: Store) -> list[dict[str, Any]]:
        return store._rows(
            "SELECT job, key, ts FROM job_state FINAL"
            " WHERE (job, key) IN (('scored', 'received_at'), ('cells', 'started')) ORDER BY job"
        )

    try:
        insert_responses(s, response("e1"))
        first = marks(s)
        assert [m["job"] for m in first] == ["cells", "scored"]  # the first run writes them
        insert_responses(s, response("e2"))
        insert_scores(s, score("e2", 0.5))
        assert marks(s) == first  # kept: within MARKS_EVERY of the last write
    finally:
        s.close()
    s = open_store(embedded_settings)
    try:
        closed = marks(s)
        assert closed[0]["key"] == "started" and closed[0]["ts"] > first[0]["ts"]  # on close
        insert_scores(s, score("e1", 1.0))
        got = s.group_moments("p1", {"all": F()}, metric="quality")["all"]
        assert (got["n"], got["total"]) == (2, 1.5)
        assert [c["responses"] for c in s.version_counts("p1", F())] == [2]
    finally:
        close_and_drop(s)


def test_readers_queued_behind_a_run_share_the_next_one_and_see_their_writes(
    any_store: Store, monkeypatch: pytest.MonkeyPatch
):
    """Aggregate reads run the job first (read your writes). Under ingest, every run finds new
    rows; readers that asked while a run held the lock need one more run, begun after they
    asked, not one each."""
    insert_responses(any_store, response("e1"), response("e2"))
    any_store.insert("scores", pa.Table.from_pylist([score("e1", 0.5)], schema=SCORES_ARROW))
    execute, landed = any_store._exec, threading.Event()

    def exec_while_ingesting(sql: str, **params: object) -> None:
        execute(sql, **params)
        if sql.startswith("INSERT INTO scored") and not landed.is_set():
            landed.set()  # a write lands while the first run is under way
            any_store.insert("scores", pa.Table.from_pylist([score("e2", 1.0)], SCORES_ARROW))

    monkeypatch.setattr(any_store, "_exec", exec_while_ingesting)
    ran: list[bool] = []
    with any_store._materialize_lock:  # a run under way
        readers = [
            threading.Thread(target=lambda: ran.append(any_store.materialize_scores()))
            for _ in range(3)
        ]
        for t in readers:
            t.start()
        time.sleep(0.2)  # all three have asked and wait for the lock
    for t in readers:
        t.join(30)
    assert sorted(ran) == [False, False, True]  # one run for the three
    got = any_store.group_moments("p1", {"all": F()}, metric="quality")["all"]
    assert got["total"] in (0.5, 1.5)  # e1's score, acknowledged before they asked, is in
    assert any_store.materialize_scores() is True  # the write that landed later: the next run


def test_a_corrected_score_replaces_the_old_one_in_the_scored_table(any_store: Store):
    insert_responses(any_store, response("e1"))
    insert_scores(any_store, score("e1", 0.0, ts=T0))
    insert_scores(any_store, score("e1", 1.0, ts=T0 + timedelta(hours=1)))
    got = any_store.group_moments("p1", {"all": F()}, metric="quality", source="judge")["all"]
    assert (got["n"], got["total"]) == (1, 1.0)


def test_group_moments_match_moments_of_the_raw_values_and_flag_overlap(any_store: Store):
    values = {f"e{i}": (i % 7) / 7 for i in range(40)}
    insert_responses(
        any_store,
        *(response(e, prompt_version="v2" if i >= 25 else "v1") for i, e in enumerate(values)),
    )
    insert_scores(any_store, *(score(e, v) for e, v in values.items()))
    got = any_store.group_moments(
        "p1",
        {"a": F(prompt_version="v1"), "b": F(prompt_version="v2"), "all": F()},
        metric="quality",
    )
    expect_a = Moments.of(list(values.values())[:25])
    assert got["a"]["n"] == expect_a.n
    assert got["a"]["total"] == pytest.approx(expect_a.total)
    assert got["a"]["total_sq"] == pytest.approx(expect_a.total_sq)
    assert got["b"]["n"] == 15 and got["all"]["n"] == 0  # first matching group wins
    assert got["a"]["overlap"] == 25 and got["b"]["overlap"] == 15
    assert got["a"]["non_binary"] > 0


def test_builtin_response_metrics_need_no_scores(any_store: Store):
    insert_responses(
        any_store,
        response("e1", latency_ms=100.0, status="ok"),
        response("e2", latency_ms=300.0, status="error"),
        response("e3", latency_ms=None, status="ok"),
    )
    lat = any_store.group_moments("p1", {"all": F()}, metric="response.latency_ms")["all"]
    assert (lat["n"], lat["total"]) == (2, 400.0)
    err = any_store.group_moments("p1", {"all": F()}, metric="response.error")["all"]
    assert (err["n"], err["total"], err["non_binary"]) == (3, 1.0, 0)


def test_group_moments_can_bring_a_deterministic_sample_of_raw_values(any_store: Store):
    insert_responses(any_store, *(response(f"e{i}") for i in range(30)))
    insert_scores(any_store, *(score(f"e{i}", float(i)) for i in range(30)))
    everything = any_store.group_moments("p1", {"g": F()}, metric="quality", sample=100)["g"]
    assert sorted(everything["sample"]) == [float(i) for i in range(30)]
    first = any_store.group_moments("p1", {"g": F()}, metric="quality", sample=10)["g"]
    again = any_store.group_moments("p1", {"g": F()}, metric="quality", sample=10)["g"]
    assert len(first["sample"]) == 10 and first["sample"] == again["sample"]
    assert first["n"] == 30
    none = any_store.group_moments("p1", {"g": F()}, metric="quality")["g"]
    assert none["sample"] == []


def test_paired_values_join_the_same_eval_case_under_two_versions(any_store: Store):
    insert_responses(
        any_store,
        response("a1", case_id="c1", prompt_version="v1"),
        response("a2", case_id="c2", prompt_version="v1"),
        response("a3", case_id="c3", prompt_version="v1"),
        response("b1", case_id="c1", prompt_version="v2"),
        response("b2", case_id="c2", prompt_version="v2"),
        response("b2x", case_id="c2", prompt_version="v2"),
        response("nocase", prompt_version="v2"),
    )
    insert_scores(
        any_store,
        *(score(e, v) for e, v in [("a1", 1), ("a2", 1), ("a3", 0), ("b1", 0), ("b2", 1)]),
        score("b2x", 0.0),
        score("nocase", 1.0),
    )
    pairs = any_store.paired_values(
        "p1", F(prompt_version="v1"), F(prompt_version="v2"), metric="quality"
    )
    assert pairs == [
        {"case_id": "c1", "a": 1.0, "b": 0.0},
        {"case_id": "c2", "a": 1.0, "b": 0.5},
    ]


def test_the_series_buckets_by_response_time_not_score_arrival(any_store: Store):
    insert_responses(
        any_store, *(response(f"e{i}", ts=T0 + timedelta(minutes=20 * i)) for i in range(6))
    )
    late = T0 + timedelta(days=3)
    insert_scores(any_store, *(score(f"e{i}", float(i % 2), ts=late) for i in range(6)))
    series = any_store.metric_series("p1", F(), metric="quality", bucket_seconds=3600)
    assert [(r["bucket"], r["n"], r["total"]) for r in series] == [
        (T0, 3, 1.0),
        (T0 + timedelta(hours=1), 3, 2.0),
    ]
    assert all(r["non_binary"] == 0 for r in series)


def test_group_counts_count_responses_per_value_whether_scored_or_not(any_store: Store):
    insert_responses(
        any_store,
        *(
            response(f"e{i}", experiment="x", variant="control" if i < 6 else "b")
            for i in range(10)
        ),
        response("other", experiment="y", variant="control"),
    )
    assert any_store.group_counts("p1", F(experiment="x"), by="variant") == {"control": 6, "b": 4}
    with pytest.raises(ValueError, match="cannot group by"):
        any_store.group_counts("p1", F(), by="input")


def test_score_sources_lists_who_scored_a_metric(any_store: Store):
    insert_responses(any_store, response("e1"))
    insert_scores(any_store, score("e1", 1, source="human"), score("e1", 0, source="judge"))
    assert any_store.score_sources("p1", "quality") == ["human", "judge"]
    assert any_store.score_sources("p2", "quality") == []
