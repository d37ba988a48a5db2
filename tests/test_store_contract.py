"""The Store contract: every public Store method behaves the same over both transports.

Each test runs once on the embedded chDB store and once on the server store (clickhouse-connect
over HTTP, to a real server when PROMPTBLAME_TEST_CLICKHOUSE_URL is set, else to the chDB-backed
test double in tests/clickhouse_double.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from promptblame.store import ApiKeyRecord, ResponseFilter, Store
from promptblame.store.schema import MIGRATIONS, RESPONSES_ARROW, SCORES_ARROW

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
INJECTION = "x'; DROP TABLE responses; --"
# Characters that need escaping on the way to the engine: quote, backslash, tab, newline.
Row = dict[str, Any]
AWKWARD = 'say "hi"\\n it\'s\ta\nnew line \\ `tick`'


def response(event_id: str, *, project: str = "p1", ts: datetime = T0, **fields: Any) -> Row:
    row: dict[str, Any] = {name: "" for name in RESPONSES_ARROW.names}
    row.update(
        project_id=project,
        event_id=event_id,
        ts=ts,
        app="chat",
        route="/answer",
        prompt_id="greet",
        prompt_version="v1",
        model="gpt",
        model_version="2024-01",
        latency_ms=None,
        input_tokens=None,
        output_tokens=None,
        cost_usd=None,
        tags=[],
        received_at=ts + timedelta(seconds=1),
    )
    row.update(fields)
    return row


def score(
    event_id: str,
    value: float,
    *,
    project: str = "p1",
    name: str = "quality",
    source: str = "judge",
    ts: datetime = T0,
) -> Row:
    return {
        "project_id": project,
        "event_id": event_id,
        "name": name,
        "source": source,
        "value": value,
        "comment": "",
        "ts": ts,
        "received_at": ts,
    }


def insert_responses(store: Store, *rows: Row) -> None:
    """Insert, then run the scored-table job as the scheduler would."""
    store.insert("responses", pa.Table.from_pylist(list(rows), schema=RESPONSES_ARROW))
    store.materialize_scores()


def insert_scores(store: Store, *rows: Row) -> None:
    store.insert("scores", pa.Table.from_pylist(list(rows), schema=SCORES_ARROW))
    store.materialize_scores()


def ids(rows: list[Row]) -> list[str]:
    return [r["event_id"] for r in rows]


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def every_filter() -> ResponseFilter:
    return ResponseFilter()


def version_of(row: Row) -> tuple[str, ...]:
    return tuple(row[c] for c in ("app", "prompt_id", "prompt_version", "model", "model_version"))


def only(field: str, value: str) -> ResponseFilter:
    fields: dict[str, Any] = {field: value}
    return ResponseFilter(**fields)


# -- schema ----------------------------------------------------------------------------------


def test_migrating_an_up_to_date_database_applies_nothing(any_store: Store) -> None:
    assert any_store.migrate() == []
    assert any_store.migrate() == []
    assert any_store.applied_migrations() == [m.version for m in MIGRATIONS]


# -- ingest ----------------------------------------------------------------------------------


def test_inserted_responses_and_scores_are_counted(any_store: Store) -> None:
    insert_responses(any_store, response("e1"), response("e2"))
    insert_scores(any_store, score("e1", 1.0), score("e2", 0.0))

    assert any_store.count("responses", "p1") == 2
    assert any_store.count("scores", "p1") == 2


def test_every_column_of_a_response_reads_back_as_written(any_store: Store) -> None:
    row = response(
        "e1",
        environment="prod",
        provider="openai",
        experiment="exp",
        variant="b",
        case_id="c1",
        trace_id="t1",
        span_id="s1",
        user_id="u1",
        session_id="sess",
        input="question?",
        output="answer.",
        expected_output="answer!",
        latency_ms=12.5,
        input_tokens=10,
        output_tokens=20,
        cost_usd=0.001,
        status="ok",
        error_type="",
        tags=[("team", "search"), ("tier", "gold")],
    )
    insert_responses(any_store, row)

    (got,) = any_store.list_responses("p1", every_filter(), limit=10)

    expected = {k: v for k, v in row.items() if k != "project_id"}
    assert got == expected


def test_a_page_of_some_columns_and_whole_rows_by_id_read_what_was_written(
    any_store: Store,
) -> None:
    rows = [response(f"e{i}", ts=T0 + timedelta(minutes=i), output=f"out {i}") for i in range(5)]
    insert_responses(any_store, *rows, response("other", project="p2"))
    insert_responses(any_store, response("e3", ts=T0 + timedelta(minutes=3), output="resent"))

    page = any_store.list_responses("p1", every_filter(), limit=3, columns=("event_id", "ts"))
    assert page == [{"event_id": f"e{i}", "ts": T0 + timedelta(minutes=i)} for i in (4, 3, 2)]
    with pytest.raises(ValueError, match="not columns"):
        any_store.list_responses("p1", every_filter(), limit=3, columns=("event_id; DROP",))

    whole = any_store.responses_by_id("p1", ["e3", "e0", "missing", "other", INJECTION])
    assert sorted((r["event_id"], r["output"]) for r in whole) == [
        ("e0", "out 0"),
        ("e3", "resent"),
    ]
    assert any_store.responses_by_id("p1", []) == []


def test_a_retried_insert_of_the_same_rows_counts_once(any_store: Store) -> None:
    rows = [response("e1"), response("e2")]
    insert_responses(any_store, *rows)
    insert_responses(any_store, *rows)
    insert_scores(any_store, score("e1", 1.0))
    insert_scores(any_store, score("e1", 1.0))

    assert any_store.count("responses", "p1") == 2
    assert any_store.count("scores", "p1") == 1
    assert ids(any_store.list_responses("p1", every_filter(), limit=10)) == ["e2", "e1"]


def test_an_event_sent_again_with_its_time_in_another_hour_is_one_response(
    any_store: Store,
) -> None:
    """The key is (project, hour, event): the job keeps the row received last, as FINAL keeps
    the last write of one key, and the event's score moves with it."""
    insert_responses(any_store, response("e1", ts=at(0)), response("e2", ts=at(0)))
    insert_scores(any_store, score("e1", 0.5))
    moved = response("e1", ts=at(0) + timedelta(hours=3), received_at=at(0) + timedelta(hours=3))
    insert_responses(any_store, moved)

    assert any_store.count("responses", "p1") == 2
    listed = any_store.list_responses("p1", every_filter(), limit=10)
    assert [(r["event_id"], r["ts"]) for r in listed] == [("e1", moved["ts"]), ("e2", at(0))]
    assert [r["ts"] for r in any_store.responses_by_id("p1", ["e1"])] == [moved["ts"]]
    by_version = any_store.version_score_sums("p1", every_filter(), metric="quality")
    assert [r["n"] for r in by_version] == [1]
    scored = any_store._rows("SELECT event_id, ts FROM scored FINAL WHERE project_id = 'p1'")
    assert scored == [{"event_id": "e1", "ts": moved["ts"]}]


@pytest.mark.parametrize(
    "change", [{"app": "search"}, {"ts": at(0) + timedelta(minutes=20)}], ids=["app", "ts"]
)
def test_an_event_sent_again_with_another_app_or_time_in_its_hour_keeps_one_scored_row(
    any_store: Store, change: dict[str, Any]
) -> None:
    """App and time are in the scored table's key: the row under the old ones must go, or the
    score counts twice (once under each)."""
    insert_responses(any_store, response("e1", ts=at(0)), response("e2", ts=at(0)))
    insert_scores(any_store, score("e1", 0.5), score("e2", 1.0))
    again = response("e1", **{"ts": at(0), **change})
    insert_responses(any_store, again)

    scored = any_store._rows(
        "SELECT event_id, app, ts FROM scored FINAL WHERE project_id = 'p1' ORDER BY event_id"
    )
    assert scored == [
        {"event_id": "e1", "app": again["app"], "ts": again["ts"]},
        {"event_id": "e2", "app": "chat", "ts": at(0)},
    ]
    by_version = any_store.version_score_sums("p1", every_filter(), metric="quality")
    assert sorted((r["app"], r["n"], r["total"]) for r in by_version) == sorted(
        [(again["app"], 1, 0.5), ("chat", 1, 1.0)] if "app" in change else [("chat", 2, 1.5)]
    )


def test_an_event_moved_to_another_hour_stays_one_response_when_a_merge_comes_first(
    any_store: Store,
) -> None:
    """The job finds a moved event by its two hours in `response_keys`. A background merge
    between the re-send and the job must not fold those two rows into one (the old hour's
    response would stay, counted twice)."""
    insert_responses(any_store, response("e1", ts=at(0)))
    insert_scores(any_store, score("e1", 0.5))
    any_store.materialize_scores()
    moved = response("e1", ts=at(0) + timedelta(hours=3), received_at=at(0) + timedelta(hours=3))
    any_store.insert("responses", pa.Table.from_pylist([moved], schema=RESPONSES_ARROW))
    any_store._exec("OPTIMIZE TABLE response_keys FINAL")  # the merge, before the job runs
    any_store.materialize_scores()

    assert any_store.count("responses", "p1") == 1
    by_version = any_store.version_score_sums("p1", every_filter(), metric="quality")
    assert [r["n"] for r in by_version] == [1]
    assert [r["ts"] for r in any_store.responses_by_id("p1", ["e1"])] == [moved["ts"]]


def test_rows_that_do_not_match_the_arrow_layout_are_refused(any_store: Store) -> None:
    wrong = pa.table({"project_id": ["p1"], "event_id": ["e1"]})

    with pytest.raises(ValueError, match="arrow layout"):
        any_store.insert("responses", wrong)
    with pytest.raises(ValueError, match="arrow layout"):
        any_store.insert("api_keys", wrong)


# -- reads -----------------------------------------------------------------------------------


def test_responses_are_listed_newest_first(any_store: Store) -> None:
    insert_responses(any_store, response("a", ts=at(1)), response("b", ts=at(3)))
    insert_responses(any_store, response("c", ts=at(2)))

    assert ids(any_store.list_responses("p1", every_filter(), limit=10)) == ["b", "c", "a"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("app", "search"),
        ("route", "/other"),
        ("prompt_id", "farewell"),
        ("prompt_version", "v2"),
        ("model", "claude"),
        ("model_version", "2025-01"),
    ],
)
def test_each_filter_field_selects_only_matching_responses(
    any_store: Store, field: str, value: str
) -> None:
    special: dict[str, Any] = {field: value}
    insert_responses(any_store, response("plain"), response("special", **special))

    matching = any_store.list_responses("p1", only(field, value), limit=10)
    other = any_store.list_responses("p1", only(field, "nothing"), limit=10)

    assert ids(matching) == ["special"]
    assert other == []


def test_since_is_inclusive_and_until_is_exclusive(any_store: Store) -> None:
    insert_responses(any_store, *(response(f"m{i}", ts=at(i)) for i in range(4)))

    rows = any_store.list_responses("p1", ResponseFilter(since=at(1), until=at(3)), limit=10)

    assert ids(rows) == ["m2", "m1"]


def test_paging_with_before_visits_every_response_once_in_order(any_store: Store) -> None:
    # Two pairs share a timestamp, so the event_id tie-break decides the order inside them.
    stamps = {"a": at(1), "b": at(2), "c": at(2), "d": at(3), "e": at(4), "f": at(4)}
    insert_responses(any_store, *(response(e, ts=ts) for e, ts in stamps.items()))

    pages = []
    before = None
    while page := any_store.list_responses("p1", every_filter(), limit=2, before=before):
        pages.append(ids(page))
        before = (page[-1]["ts"], page[-1]["event_id"])

    assert pages == [["f", "e"], ["d", "c"], ["b", "a"]]


def test_version_counts_group_responses_by_app_and_versions(any_store: Store) -> None:
    insert_responses(
        any_store,
        response("a", ts=at(1)),
        response("b", ts=at(5)),
        response("c", ts=at(3), prompt_version="v2"),
        response("d", ts=at(4), model_version="2025-01"),
    )

    rows = any_store.version_counts("p1", every_filter())

    summary = [(version_of(r), r["responses"], r["first_seen"], r["last_seen"]) for r in rows]
    assert summary == [
        (("chat", "greet", "v1", "gpt", "2024-01"), 2, at(1), at(5)),
        (("chat", "greet", "v2", "gpt", "2024-01"), 1, at(3), at(3)),
        (("chat", "greet", "v1", "gpt", "2025-01"), 1, at(4), at(4)),
    ]


def test_version_counts_honour_the_filter(any_store: Store) -> None:
    insert_responses(any_store, response("a"), response("b", app="search"))

    rows = any_store.version_counts("p1", ResponseFilter(app="search"))

    assert [(r["app"], r["responses"]) for r in rows] == [("search", 1)]


def test_version_score_sums_are_count_sum_and_sum_of_squares(any_store: Store) -> None:
    insert_responses(
        any_store,
        response("a"),
        response("b"),
        response("c"),
        response("d", prompt_version="v2"),
        response("unscored"),
    )
    insert_scores(
        any_store,
        score("a", 1.0),
        score("b", 2.0),
        score("c", 4.0),
        score("d", 3.0),
        score("a", 100.0, name="other_metric"),
    )

    rows = any_store.version_score_sums("p1", every_filter(), metric="quality")

    sums = {r["prompt_version"]: (r["n"], r["total"], r["total_sq"]) for r in rows}
    assert sums == {"v1": (3, 7.0, 21.0), "v2": (1, 3.0, 9.0)}


def test_a_response_scored_by_two_sources_counts_once_with_their_mean(any_store: Store) -> None:
    insert_responses(any_store, response("a"), response("b"))
    insert_scores(
        any_store,
        score("a", 0.5, source="judge"),
        score("a", 1.0, source="human"),
        score("b", 1.0, source="judge"),
    )

    (both,) = any_store.version_score_sums("p1", every_filter(), metric="quality")
    (human,) = any_store.version_score_sums("p1", every_filter(), metric="quality", source="human")

    assert (both["n"], both["total"], both["total_sq"]) == (2, 1.75, pytest.approx(1.5625))
    assert (human["n"], human["total"], human["total_sq"]) == (1, 1.0, 1.0)


def test_a_rescored_response_keeps_only_its_latest_score(any_store: Store) -> None:
    insert_responses(any_store, response("a"))
    insert_scores(any_store, score("a", 0.0, ts=at(1)))
    insert_scores(any_store, score("a", 1.0, ts=at(2)))

    (row,) = any_store.version_score_sums("p1", every_filter(), metric="quality")

    assert (row["n"], row["total"]) == (1, 1.0)


# -- api keys and the prompt registry ----------------------------------------------------------


def key(key_id: str, project: str = "p1", **fields: Any) -> ApiKeyRecord:
    values: dict[str, Any] = {
        "key_id": key_id,
        "project_id": project,
        "secret_sha256": "ab" * 32,
        "scopes": ("ingest", "read"),
        "name": f"key {key_id}",
        "created_at": T0,
    }
    values.update(fields)
    return ApiKeyRecord(**values)


def test_an_api_key_reads_back_as_written(any_store: Store) -> None:
    written = key("k1")
    any_store.put_api_key(written)

    assert any_store.get_api_key("k1") == written
    assert any_store.get_api_key("missing") is None


def test_putting_an_api_key_again_replaces_it(any_store: Store) -> None:
    any_store.put_api_key(key("k1"))
    any_store.put_api_key(key("k1", revoked=True, scopes=("read",)))

    got = any_store.get_api_key("k1")
    assert got is not None
    assert (got.revoked, got.scopes) == (True, ("read",))
    assert [k.key_id for k in any_store.list_api_keys()] == ["k1"]


def test_api_keys_are_listed_by_project_or_all_together(any_store: Store) -> None:
    any_store.put_api_key(key("k2", "p2"))
    any_store.put_api_key(key("k1b", "p1", created_at=at(1)))
    any_store.put_api_key(key("k1a", "p1"))

    assert [k.key_id for k in any_store.list_api_keys("p1")] == ["k1a", "k1b"]
    assert [k.key_id for k in any_store.list_api_keys("p2")] == ["k2"]
    assert [k.key_id for k in any_store.list_api_keys()] == ["k1a", "k1b", "k2"]


def put_prompt(store: Store, version: str, *, project: str = "p1", **fields: Any) -> Row:
    values: dict[str, Any] = {
        "prompt_id": "greet",
        "version": version,
        "template": f"Hello {{name}} ({version})",
        "content_hash": f"hash-{version}",
        "author": "ana",
        "labels": ["prod"],
        "created_at": T0,
    }
    values.update(fields)
    store.put_prompt_version(project, **values)
    return values


def test_a_prompt_version_reads_back_as_written(any_store: Store) -> None:
    written = put_prompt(any_store, "v1")

    assert any_store.get_prompt_version("p1", "greet", "v1") == written
    assert any_store.get_prompt_version("p1", "greet", "v9") is None
    assert any_store.get_prompt_version("p1", "other", "v1") is None


def test_prompt_versions_are_listed_in_creation_order(any_store: Store) -> None:
    put_prompt(any_store, "v2", created_at=at(2))
    put_prompt(any_store, "v1", created_at=at(1))
    put_prompt(any_store, "v1b", created_at=at(1))
    put_prompt(any_store, "x1", prompt_id="other")

    listed = any_store.list_prompt_versions("p1", "greet")

    assert [p["version"] for p in listed] == ["v1", "v1b", "v2"]


def test_strings_needing_escapes_round_trip_through_parameters(any_store: Store) -> None:
    written = put_prompt(any_store, "v1", template=AWKWARD, author=AWKWARD, labels=[AWKWARD, "b"])
    any_store.put_api_key(key("k1", name=AWKWARD, scopes=(AWKWARD,)))
    insert_responses(any_store, response("e1", app=AWKWARD))

    assert any_store.get_prompt_version("p1", "greet", "v1") == written
    assert any_store.get_api_key("k1") == key("k1", name=AWKWARD, scopes=(AWKWARD,))
    assert ids(any_store.list_responses("p1", ResponseFilter(app=AWKWARD), limit=10)) == ["e1"]


# -- safety and isolation ----------------------------------------------------------------------


def test_an_sql_injection_string_is_only_ever_a_value(any_store: Store) -> None:
    insert_responses(any_store, response("e1"))
    insert_scores(any_store, score("e1", 1.0))

    for field in ("app", "route", "prompt_id", "prompt_version", "model", "model_version"):
        f = only(field, INJECTION)
        assert any_store.list_responses("p1", f, limit=10) == []
        assert any_store.version_counts("p1", f) == []
    assert any_store.list_responses(INJECTION, every_filter(), limit=10) == []
    assert any_store.version_score_sums("p1", every_filter(), metric=INJECTION) == []
    assert any_store.get_api_key(INJECTION) is None
    assert any_store.list_api_keys(INJECTION) == []
    assert any_store.get_prompt_version(INJECTION, INJECTION, INJECTION) is None
    put_prompt(any_store, INJECTION, template=INJECTION)

    assert any_store.count("responses", "p1") == 1
    assert any_store.count("scores", "p1") == 1
    stored = any_store.get_prompt_version("p1", "greet", INJECTION)
    assert stored is not None and stored["template"] == INJECTION
    assert any_store.applied_migrations() == [m.version for m in MIGRATIONS]


def test_a_long_filter_value_is_bound_like_a_short_one(any_store: Store) -> None:
    # clickhouse-connect moves large parameters from the URL into a multipart form.
    long_app = "a" * 20_000
    insert_responses(any_store, response("short"), response("long", app=long_app))

    assert ids(any_store.list_responses("p1", ResponseFilter(app=long_app), limit=10)) == ["long"]


def test_rows_of_one_project_never_appear_in_another_projects_reads(any_store: Store) -> None:
    # The same event ids in both projects: only the project keeps them apart.
    insert_responses(any_store, response("e1", project="A"), response("e2", project="A"))
    insert_responses(
        any_store, response("e1", project="B", prompt_version="vB"), response("e3", project="B")
    )
    insert_scores(any_store, score("e1", 1.0, project="A"), score("e1", 9.0, project="B"))
    put_prompt(any_store, "vA", project="A")
    put_prompt(any_store, "vB", project="B")
    any_store.put_api_key(key("kA", "A"))
    any_store.put_api_key(key("kB", "B"))

    assert ids(any_store.list_responses("A", every_filter(), limit=10)) == ["e2", "e1"]
    assert ids(any_store.list_responses("B", every_filter(), limit=10)) == ["e3", "e1"]
    assert any_store.count("responses", "A") == 2
    assert any_store.count("scores", "A") == 1
    assert [r["prompt_version"] for r in any_store.version_counts("A", every_filter())] == ["v1"]
    (a_sums,) = any_store.version_score_sums("A", every_filter(), metric="quality")
    assert (a_sums["n"], a_sums["total"]) == (1, 1.0)
    (b_sums,) = any_store.version_score_sums("B", every_filter(), metric="quality")
    assert (b_sums["prompt_version"], b_sums["total"]) == ("vB", 9.0)
    assert [p["version"] for p in any_store.list_prompt_versions("A", "greet")] == ["vA"]
    assert any_store.get_prompt_version("A", "greet", "vB") is None
    assert [k.key_id for k in any_store.list_api_keys("A")] == ["kA"]
    assert any_store.count("responses", "nobody") == 0
