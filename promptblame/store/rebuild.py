"""Rebuilding a table under a new sorting key, resumably: copy, catch up, swap, catch up, drop.

ClickHouse cannot move a table's sorting key (only append new columns to it), so a new key means
a new table. The copy walks the old table in its own key's order, one chunk of about
`chunk_rows` rows per INSERT, each chunk read deduplicated (FINAL: the rows reads saw), and
records after every chunk where it got to (`table_rebuilds`). A rebuild that dies resumes after
the last recorded chunk; a chunk copied twice is harmless, its rows collapse as a retried batch's
do. The swap is one EXCHANGE; whether it happened is read from the table itself (its sorting
key), never from our own record, so a crash between the two cannot swap the tables back.

Rows written while the copy runs (a ServerStore with api processes still up; the embedded store
migrates before it serves, so there are none) are carried by received_at: once before the swap,
and once after it for inserts that were in flight. Stop ingest for the rebuild to be sure.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from promptblame.store.schema import Rebuild

if TYPE_CHECKING:
    from promptblame.store.base import Store

log = logging.getLogger(__name__)

CHUNK_ROWS = 1_000_000


class Interrupted(Exception):
    """Raised by `run(..., stop_after=n)`: stands for a process that died after n steps."""


def run(
    store: Store, spec: Rebuild, *, chunk_rows: int = CHUNK_ROWS, stop_after: int | None = None
) -> None:
    """Bring `spec.table` (keyed by project_id, event_id, the order the copy walks) to the
    layout of `spec.create`, resuming a rebuild that died. `stop_after` (tests) stops it as a
    crash would, after that many steps (a chunk, the swap)."""
    create, exchange, drop = spec.ddl()
    steps = 0

    def step() -> None:
        nonlocal steps
        steps += 1
        if stop_after is not None and steps >= stop_after:
            raise Interrupted(f"stopped after {steps} steps")

    if _sorting_key(store, spec.table) != spec.key:
        store._exec(create)
        state = _state(store, spec) or _save(
            store, spec, phase="copying", project_id="", after="", started_at=_now()
        )
        if state["phase"] == "copying":
            for project in _projects(store, spec.table, state["project_id"]):
                after = state["after"] if project == state["project_id"] else ""
                while True:
                    last = _chunk_end(store, spec.table, project, after, chunk_rows)
                    store._exec(
                        f"INSERT INTO {spec.next} SELECT * FROM {spec.table} FINAL"
                        " WHERE project_id = {p:String} AND event_id > {a:String}"
                        + (" AND event_id <= {b:String}" if last is not None else ""),
                        p=project,
                        a=after,
                        b=last or "",
                    )
                    after = last or after
                    state = _save(store, spec, **{**state, "project_id": project, "after": after})
                    log.info("rebuild of %s: %s copied through %r", spec.table, project, after)
                    step()
                    if last is None:
                        break
            state = _save(store, spec, **{**state, "phase": "copied", "caught_up_at": _now()})
            _catch_up(store, spec, source=spec.table, target=spec.next, since="started_at")
        store._exec(exchange)
        step()
    if _sorting_key(store, spec.next) is not None:  # the old table, after the swap
        _catch_up(store, spec, source=spec.next, target=spec.table, since="caught_up_at")
        store._exec(drop)


def _now() -> datetime:
    return datetime.now(UTC)


def _sorting_key(store: Store, table: str) -> str | None:
    """The table's sorting key (of its local table on a cluster), None if it does not exist."""
    rows = store._rows(
        "SELECT sorting_key FROM system.tables WHERE database = currentDatabase()"
        " AND name IN ({t:String}, {local:String}) AND engine != 'Distributed'",
        t=table,
        local=f"{table}_local",
    )
    return str(rows[0]["sorting_key"]) if rows else None


def _projects(store: Store, table: str, start: str) -> list[str]:
    rows = store._rows(
        f"SELECT DISTINCT project_id FROM {table} WHERE project_id >= {{s:String}}"
        " ORDER BY project_id",
        s=start,
    )
    return [r["project_id"] for r in rows]


def _chunk_end(store: Store, table: str, project: str, after: str, rows: int) -> str | None:
    """The event id `rows` rows past `after` in the old key's order (None: the rest is less).
    Reads the key column alone, in key order."""
    found = store._rows(
        f"SELECT event_id FROM {table} WHERE project_id = {{p:String}} AND event_id > {{a:String}}"
        " ORDER BY event_id LIMIT 1 OFFSET {k:UInt64}",
        p=project,
        a=after,
        k=rows - 1,
    )
    return str(found[0]["event_id"]) if found else None


def _catch_up(store: Store, spec: Rebuild, *, source: str, target: str, since: str) -> None:
    """Copy the rows `source` received since the state's `since` mark into `target`."""
    state = _state(store, spec)
    if state is None:
        return
    store._exec(
        f"INSERT INTO {target} SELECT * FROM {source} FINAL"
        " WHERE received_at >= {since:DateTime64(3)}",
        since=state[since],
    )


def _state(store: Store, spec: Rebuild) -> dict[str, Any] | None:
    rows = store._rows(
        "SELECT phase, project_id, after, started_at, caught_up_at FROM table_rebuilds"
        " FINAL WHERE name = {n:String}",
        n=_name(spec),
    )
    return rows[0] if rows else None


def _name(spec: Rebuild) -> str:
    """One record per table and target layout (a later rebuild of the table starts afresh)."""
    return f"{spec.table} ({spec.key})"


def _save(store: Store, spec: Rebuild, **state: Any) -> dict[str, Any]:
    state.setdefault("caught_up_at", state["started_at"])
    store._exec(
        "INSERT INTO table_rebuilds (name, phase, project_id, after, started_at, caught_up_at)"
        " VALUES ({n:String}, {phase:String}, {project_id:String}, {after:String},"
        " {started_at:DateTime64(3)}, {caught_up_at:DateTime64(3)})",
        n=_name(spec),
        **state,
    )
    return state
