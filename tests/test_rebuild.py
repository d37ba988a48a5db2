"""Migration 23 rebuilds `responses` under a time-first key: a data directory from before it
comes out with the same deduplicated rows, and a rebuild that dies part way resumes, whether it
died while copying or between the swap and the clean-up, on both transports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from promptblame.store import Store
from promptblame.store import rebuild as rebuilding
from promptblame.store.embedded import EmbeddedStore
from promptblame.store.schema import MIGRATIONS, RESPONSES_ARROW
from promptblame.store.server import ServerStore
from tests.conftest import fresh_database
from tests.test_store_contract import T0, response

(REBUILD,) = [m for m in MIGRATIONS if m.rebuild]
(SPEC,) = [m.rebuild for m in MIGRATIONS if m.rebuild]
SINCE = [m.version for m in MIGRATIONS if m.version >= REBUILD.version]  # what an upgrade runs
OLD_KEY = "project_id, event_id"


@pytest.fixture(params=["embedded", "server"])
def old_store(request: pytest.FixtureRequest, chdb_path: Path) -> Iterator[Store]:
    """A store migrated to the version before the rebuild: an upgraded data directory."""
    store: Store
    if request.param == "embedded":
        store = EmbeddedStore(chdb_path, database=fresh_database())
    else:
        store = ServerStore(request.getfixturevalue("clickhouse_url"), database=fresh_database())
    store.migrate(through=REBUILD.version - 1)
    yield store
    store.close()


def now() -> datetime:
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)  # as stored: milliseconds


def put(store: Store, *rows: dict[str, Any]) -> None:
    store.insert("responses", pa.Table.from_pylist(list(rows), schema=RESPONSES_ARROW))


def history(store: Store) -> None:
    """Two projects over two months, in several parts, with retried and corrected rows."""
    for project in ("p1", "p2"):
        rows = [
            response(f"e{i:03d}", project=project, ts=T0 + timedelta(hours=7 * i), output=f"o{i}")
            for i in range(120)
        ]
        put(store, *rows[:70])
        put(store, *rows[50:])  # a retried batch overlapping the first
        put(store, {**rows[3], "output": "corrected"}, {**rows[90], "prompt_version": "v2"})


def interrupted(store: Store, **kw: Any) -> None:
    """Migration 23 run by a process that dies part way (`rebuild.run`'s `stop_after`)."""
    for statement in REBUILD.statements:
        store._exec(statement)
    with pytest.raises(rebuilding.Interrupted):
        rebuilding.run(store, SPEC, **kw)


def everything(store: Store) -> list[dict[str, Any]]:
    return store._rows("SELECT * FROM responses FINAL ORDER BY project_id, event_id")


def tables(store: Store) -> set[str]:
    rows = store._rows("SELECT name FROM system.tables WHERE database = currentDatabase()")
    return {r["name"] for r in rows}


def settings(store: Store) -> set[str]:
    rows = store._rows(
        "SELECT create_table_query AS q FROM system.tables WHERE database = currentDatabase()"
        " AND name = 'responses'"
    )
    return set(str(rows[0]["q"]).partition(" SETTINGS ")[2].split(", "))


def key(store: Store) -> str:
    rows = store._rows(
        "SELECT sorting_key FROM system.tables WHERE database = currentDatabase()"
        " AND name = 'responses'"
    )
    return str(rows[0]["sorting_key"])


def test_an_old_directory_is_rebuilt_with_the_same_rows_under_the_time_first_key(
    old_store: Store,
) -> None:
    history(old_store)
    before = everything(old_store)
    assert key(old_store) == OLD_KEY and len(before) == 240
    tuned = settings(old_store)
    assert "merge_selector_base = 20" in tuned  # migration 5's, kept by the new table
    assert old_store.migrate() == SINCE
    assert settings(old_store) == tuned
    assert key(old_store) == SPEC.key == "project_id, toStartOfHour(ts), event_id"
    assert everything(old_store) == before
    assert SPEC.next not in tables(old_store)
    corrected = [r for r in before if r["output"] == "corrected" or r["prompt_version"] == "v2"]
    assert len(corrected) == 4  # the corrections won, in both projects
    # rows stored before the upgrade are found by id (response_keys was filled from them)
    (found,) = old_store.responses_by_id("p2", ["e003"])
    assert found["output"] == "corrected"
    put(old_store, response("e000", project="p1", ts=T0, output="o0"))  # a retry after it
    assert everything(old_store) == before


def test_a_rebuild_that_dies_while_copying_resumes_where_it_stopped(old_store: Store) -> None:
    history(old_store)
    before = everything(old_store)
    interrupted(old_store, chunk_rows=50, stop_after=2)
    (state,) = old_store._rows("SELECT phase, project_id, after FROM table_rebuilds FINAL")
    # chunks count stored rows (a retried copy too), so two chunks end inside p1
    assert state["phase"] == "copying" and state["project_id"] == "p1"
    assert "e050" < state["after"] < "e119"
    assert key(old_store) == OLD_KEY  # nothing swapped: reads still see every row
    # a correction of a row copied already, written while the rebuild was down (a server's
    # api processes may still write): carried over by its arrival time
    late = {**before[10], "output": "late correction", "received_at": now()}
    put(old_store, late)
    assert old_store.migrate() == SINCE
    assert key(old_store) == SPEC.key
    assert everything(old_store) == [
        late if r["event_id"] == "e010" and r["project_id"] == "p1" else r for r in before
    ]


def test_a_rebuild_that_dies_after_the_swap_finishes_without_swapping_back(
    old_store: Store,
) -> None:
    history(old_store)
    before = everything(old_store)
    interrupted(old_store, chunk_rows=100, stop_after=5)  # two chunks a project, the swap
    assert key(old_store) == SPEC.key and SPEC.next in tables(old_store)
    # an insert into the old table that was in flight during the swap
    straggler = response("e500", project="p2", ts=T0, received_at=now())
    old_store._insert(SPEC.next, pa.Table.from_pylist([straggler], schema=RESPONSES_ARROW))
    assert old_store.migrate() == SINCE
    assert key(old_store) == SPEC.key and SPEC.next not in tables(old_store)
    assert everything(old_store) == sorted(
        [*before, straggler], key=lambda r: (r["project_id"], r["event_id"])
    )
