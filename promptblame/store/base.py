"""The Store: every SQL statement promptblame runs, over one of two transports.

Subclasses supply only the transport (`_select`, `_command`, `_insert`); the SQL is written once
here, in ClickHouse dialect, with user values passed as server-side `{name:Type}` parameters.
Reads of `responses` and `scores` deduplicate so a retried event never counts twice: FINAL, or
where FINAL cannot skip parts by time, a GROUP BY that keeps the row FINAL would keep.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from promptblame.store import cells, rebuild
from promptblame.store.filters import (
    BUILTIN_METRICS,
    EVAL_VERSION_COLUMNS,
    FAR_FUTURE,
    FAR_PAST,
    FILTER_COLUMNS,
    EvalRun,
    ResponseFilter,
    ScoringTarget,
    filter_params,
    filter_sql,
    json_rows,
    metric_values_sql,
    target_params,
    target_sql,
)
from promptblame.store.rows import to_dicts
from promptblame.store.schema import (
    EVALUATOR_VERSIONS_ARROW,
    INSERTABLE,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    RESPONSES_ARROW,
)

log = logging.getLogger(__name__)

MARKS_EVERY = 5.0  # seconds: how often the only writer writes the scored-table job's marks

# monotonic start of the request (or other unit of reads) the current context serves
_reads_began: ContextVar[float] = ContextVar("promptblame_reads_began", default=math.inf)


@contextmanager
def reads_share_one_job_run() -> Iterator[None]:
    """Reads inside (one request) need the scored-table job to have run only once since the
    block began: what was acknowledged before the request is then in `scored`. Without it a
    page of five aggregate reads ran the job five times, each with new rows under ingest."""
    token = _reads_began.set(time.monotonic())
    try:
        yield
    finally:
        _reads_began.reset(token)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    """The earlier of two optional times (None: none)."""
    return b if a is None else a if b is None else min(a, b)


def _param(value: Any) -> Any:
    """Render datetimes in the text form both transports accept for DateTime64(3) parameters."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return value


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    project_id: str
    secret_sha256: str
    scopes: tuple[str, ...]
    name: str
    created_at: datetime
    revoked: bool = False


class Store(ABC):
    """One door to ClickHouse. Thread-safe; `kind` names the transport."""

    kind: str = "abstract"
    use_cells: bool = True  # aggregate reads take sealed hours from the cells (tests turn it off)
    exclusive: bool = False  # only this process writes (embedded: the data directory's lock)

    def __init__(self) -> None:
        self._materialize_lock = threading.Lock()  # one scored-table job run at a time
        self._materialized_from = 0.0  # monotonic start of the last run that finished
        # Writes through this store outside the job, counted once done; with `exclusive`, a
        # job run is skipped when there were none and no hour passed since the last one.
        self._writes: dict[str, int] = {}  # per table written ("": a statement, any table)
        self._writes_lock = threading.Lock()
        self._in_job = threading.local()  # .on: this thread runs the job
        self._last_run: tuple[dict[str, int], datetime] | None = None  # writes, sealed target
        # With `exclusive`, where the job's next window starts: the oldest received_at of the
        # inserts under way when the last run began (or then, less a second for the clock), or
        # of any insert since then with an older one. Not a minute back, as when other
        # processes write: at 9,600 events/s, re-reading that minute made every run ~1 s.
        self._in_flight: dict[object, tuple[datetime, datetime | None]] = {}
        self._next_window: datetime | None = None
        # With `exclusive`, the oldest response time inserted since the last run began (None:
        # none): a run skips looking for late responses when none can be older than the cells.
        self._oldest_ts: datetime | None = None
        # With `exclusive`, the cells' watermarks as this process's job last set them, and the
        # job's marks not yet written: an INSERT costs 10-45 ms while merges run, so the only
        # writer writes its marks at most every MARKS_EVERY seconds (and on close). A mark
        # older after a crash only makes the first run redo more, which is idempotent.
        self._watermarks: dict[str, datetime] | None = None
        self._unsaved_marks: dict[tuple[str, str], tuple[datetime, int]] = {}
        self._marks_saved = 0.0

    # -- transport -------------------------------------------------------------------------
    @abstractmethod
    def _select(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table: ...

    @abstractmethod
    def _command(self, sql: str, params: Mapping[str, Any] | None = None) -> None: ...

    @abstractmethod
    def _insert(self, table: str, data: pa.Table) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def _rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._select(
            sql, {k: _param(v) for k, v in params.items()}
        ).to_pylist()
        return rows

    def _cell_dicts(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """`_rows` for results of many rows with few distinct values (statistics cells):
        the same rows, each distinct string or time converted once (`store/rows.py`)."""
        return to_dicts(self._select(sql, {k: _param(v) for k, v in params.items()}))

    def _exec(self, sql: str, **params: Any) -> None:
        self._command(sql, {k: _param(v) for k, v in params.items()})
        if not getattr(self._in_job, "on", False):  # the job's statements write its outputs
            self._wrote("")

    def _wrote(self, table: str) -> None:
        with self._writes_lock:
            self._writes[table] = self._writes.get(table, 0) + 1

    # -- schema ----------------------------------------------------------------------------
    def migrate(self, *, through: int | None = None) -> list[int]:
        """Apply every migration not yet recorded (up to version `through`, to rehearse an
        upgrade); return the versions applied now."""
        self._exec(MIGRATIONS_TABLE)
        done = {r["version"] for r in self._rows("SELECT version FROM schema_migrations FINAL")}
        applied = []
        for m in MIGRATIONS:
            if m.version in done or (through is not None and m.version > through):
                continue
            for statement in m.statements:
                self._exec(statement)
            if m.rebuild:
                rebuild.run(self, m.rebuild)
            self._exec(
                "INSERT INTO schema_migrations (version, name) VALUES ({v:UInt32}, {n:String})",
                v=m.version,
                n=m.name,
            )
            log.info("applied migration %d: %s", m.version, m.name)
            applied.append(m.version)
        return applied

    def applied_migrations(self) -> list[int]:
        rows = self._rows("SELECT version FROM schema_migrations FINAL ORDER BY version")
        return [r["version"] for r in rows]

    # -- ingest ----------------------------------------------------------------------------
    def insert(self, table: str, data: pa.Table, *, stamp: bool = False) -> None:
        """Write rows of a known arrow layout (schema.INSERTABLE) in one INSERT. `stamp`:
        received_at becomes now, set together with noting the insert as under way, so the
        scored-table job's window cannot pass it by (the group-commit writer stamps)."""
        expected = INSERTABLE.get(table)
        if expected is None or not data.schema.equals(expected):
            raise ValueError(f"rows for {table!r} do not match its arrow layout")
        if not data.num_rows:
            return
        i = data.schema.get_field_index("received_at")
        token = object()
        with self._writes_lock:
            if i >= 0:
                field = data.schema.field(i)
                if stamp:
                    now = pa.scalar(datetime.now(UTC), field.type)
                    data = data.set_column(i, field, pa.repeat(now, data.num_rows))
                oldest = pc.min(data.column(i)).as_py()
                ts = pc.min(data.column("ts")).as_py() if table == "responses" else None
                self._oldest_ts = _earliest(self._oldest_ts, ts)
                if oldest is not None:
                    self._in_flight[token] = (oldest, ts)  # oldest received_at, response time
                    if self._next_window is not None:
                        self._next_window = _earliest(self._next_window, oldest)
        try:
            self._insert(table, data)
        finally:
            with self._writes_lock:
                self._in_flight.pop(token, None)
        self._wrote(table)

    def insert_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert dicts into a table of a known arrow layout (small tables: incidents, alerts)."""
        self.insert(table, pa.Table.from_pylist(list(rows), schema=INSERTABLE[table]))

    def count(self, table: str, project_id: str) -> int:
        if table not in INSERTABLE:
            raise ValueError(f"unknown table {table!r}")
        rows = self._rows(
            f"SELECT count() AS n FROM {table} FINAL WHERE project_id = {{p:String}}",
            p=project_id,
        )
        return int(rows[0]["n"])

    # -- api keys --------------------------------------------------------------------------
    def put_api_key(self, key: ApiKeyRecord) -> None:
        self._exec(
            "INSERT INTO api_keys (key_id, project_id, secret_sha256, scopes, name, created_at,"
            " revoked, updated_at) VALUES ({k:String}, {p:String}, {h:String},"
            " JSONExtract({s:String}, 'Array(String)'), {n:String}, {c:DateTime64(3)},"
            " {r:UInt8}, now64(3))",
            k=key.key_id,
            p=key.project_id,
            h=key.secret_sha256,
            s=json.dumps(list(key.scopes)),
            n=key.name,
            c=key.created_at,
            r=int(key.revoked),
        )

    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        rows = self._rows("SELECT * FROM api_keys FINAL WHERE key_id = {k:String}", k=key_id)
        return _key_record(rows[0]) if rows else None

    def list_api_keys(self, project_id: str | None = None) -> list[ApiKeyRecord]:
        rows = self._rows(
            "SELECT * FROM api_keys FINAL WHERE {p:String} = '' OR project_id = {p:String}"
            " ORDER BY project_id, created_at",
            p=project_id or "",
        )
        return [_key_record(r) for r in rows]

    # -- prompt registry -------------------------------------------------------------------
    def get_prompt_version(
        self, project_id: str, prompt_id: str, version: str
    ) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT prompt_id, version, template, content_hash, author, labels, created_at"
            " FROM prompt_versions FINAL WHERE project_id = {p:String}"
            " AND prompt_id = {i:String} AND version = {v:String}",
            p=project_id,
            i=prompt_id,
            v=version,
        )
        return rows[0] if rows else None

    def put_prompt_version(
        self,
        project_id: str,
        *,
        prompt_id: str,
        version: str,
        template: str,
        content_hash: str,
        author: str,
        labels: Sequence[str],
        created_at: datetime,
    ) -> None:
        # an arrow insert, not parameters: a template of 1 MB would not fit a server's URL
        self.insert_rows(
            "prompt_versions",
            [
                {
                    "project_id": project_id,
                    "prompt_id": prompt_id,
                    "version": version,
                    "template": template,
                    "content_hash": content_hash,
                    "author": author,
                    "labels": list(labels),
                    "created_at": created_at,
                }
            ],
        )

    def list_prompt_versions(self, project_id: str, prompt_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT prompt_id, version, template, content_hash, author, labels, created_at"
            " FROM prompt_versions FINAL WHERE project_id = {p:String} AND prompt_id = {i:String}"
            " ORDER BY created_at, version",
            p=project_id,
            i=prompt_id,
        )

    # -- prompt labels and gate results ----------------------------------------------------
    _LABEL_WINNERS = (
        "SELECT * EXCEPT (project_id) FROM label_events WHERE project_id = {p:String}"
        " AND ({i:String} = '' OR prompt_id = {i:String})"
        " AND ({l:String} = '' OR label = {l:String})"
        " ORDER BY prompt_id, label, model, seq, claimed_at, token"
        " LIMIT 1 BY prompt_id, label, model, seq"
    )

    def label_history(
        self, project_id: str, prompt_id: str = "", label: str = ""
    ) -> list[dict[str, Any]]:
        """Every move that took effect (the winning claim of each seq), oldest first per
        pointer; all prompts when `prompt_id` is ''."""
        return self._rows(self._LABEL_WINNERS, p=project_id, i=prompt_id, l=label)

    def label_pointers(self, project_id: str, prompt_id: str = "") -> list[dict[str, Any]]:
        """Each pointer (prompt, label, model) with its newest winning move."""
        return self._rows(
            f"SELECT * FROM ({self._LABEL_WINNERS})"
            " ORDER BY prompt_id, label, model, seq DESC LIMIT 1 BY prompt_id, label, model",
            p=project_id,
            i=prompt_id,
            l="",
        )

    def claim_label_move(self, project_id: str, move: Mapping[str, Any]) -> bool:
        """Claim `move["seq"]` of its pointer; True when this claim won it."""
        keys = {"prompt_id": "String", "label": "String", "model": "String"}
        return self._claim("label_events", project_id, keys, move, _LABEL_EVENT_TYPES)

    def claim_rollout_event(self, project_id: str, event: Mapping[str, Any]) -> bool:
        """Claim `event["seq"]` of its rollout; True when this claim won it."""
        keys = {"rollout_id": "String"}
        return self._claim("rollout_events", project_id, keys, event, _ROLLOUT_EVENT_TYPES)

    def _claim(
        self,
        table: str,
        project_id: str,
        keys: Mapping[str, str],
        row: Mapping[str, Any],
        types: Mapping[str, str],
    ) -> bool:
        """Compare-and-set without row locks: insert a claim for (keys, seq), then read back
        which claim of that seq is the earliest (claimed_at, token). The database's clock
        stamps claimed_at, so whoever reads back after inserting sees the same winner as every
        later reader; a losing claim stays in the table and is never read as state."""
        columns = {**types, "seq": "UInt64", "token": "String"}
        names = ", ".join(columns)
        values = ", ".join(f"{{{c}:{t}}}" for c, t in columns.items())
        self._exec(
            f"INSERT INTO {table} (project_id, claimed_at, {names})"
            f" VALUES ({{project_id:String}}, now64(6), {values})",
            project_id=project_id,
            **{c: row[c] for c in columns},
        )
        where = " AND ".join(f"{c} = {{{c}:{t}}}" for c, t in keys.items())
        rows = self._rows(
            f"SELECT token FROM {table} WHERE project_id = {{project_id:String}} AND {where}"
            " AND seq = {seq:UInt64} ORDER BY claimed_at, token LIMIT 1",
            project_id=project_id,
            seq=row["seq"],
            **{c: row[c] for c in keys},
        )
        return bool(rows) and rows[0]["token"] == row["token"]

    _ROLLOUT_WINNERS = (
        "SELECT * EXCEPT (project_id, token) FROM rollout_events WHERE project_id = {p:String}"
        " AND ({r:String} = '' OR rollout_id = {r:String})"
        " ORDER BY rollout_id, seq, claimed_at, token LIMIT 1 BY rollout_id, seq"
    )

    def rollout_log(self, project_id: str, rollout_id: str) -> list[dict[str, Any]]:
        """Every transition of a rollout that took effect, oldest first."""
        return self._rows(self._ROLLOUT_WINNERS, p=project_id, r=rollout_id)

    def rollout_states(self, project_id: str, rollout_id: str = "") -> list[dict[str, Any]]:
        """The current state of each rollout (of one, when named), newest first."""
        return self._rows(
            f"SELECT * FROM ({self._ROLLOUT_WINNERS})"
            " ORDER BY rollout_id, seq DESC LIMIT 1 BY rollout_id",
            p=project_id,
            r=rollout_id,
        )

    def projects_with_rollouts(self) -> list[str]:
        rows = self._rows("SELECT DISTINCT project_id FROM rollout_events ORDER BY project_id")
        return [r["project_id"] for r in rows]

    def passing_gates(
        self, project_id: str, *, prompt_id: str, version: str, model: str = ""
    ) -> list[dict[str, Any]]:
        """Passing gate results with `version` as the candidate prompt version of `prompt_id`
        (and, when `model` is given, run on that model or model version), newest first."""
        return self._rows(
            "SELECT app, environment, baseline, candidate, candidate_run, models, ts"
            " FROM gate_results WHERE project_id = {p:String} AND compared = 'prompt_version'"
            " AND candidate = {v:String} AND verdict = 'pass' AND has(prompt_ids, {i:String})"
            " AND ({m:String} = '' OR has(models, {m:String}) OR has(model_versions, {m:String}))"
            " ORDER BY ts DESC",
            p=project_id,
            i=prompt_id,
            v=version,
            m=model,
        )

    # -- reads -----------------------------------------------------------------------------
    def list_responses(
        self,
        project_id: str,
        f: ResponseFilter,
        *,
        limit: int,
        before: tuple[datetime, str] | None = None,
        columns: Sequence[str] = (),
        search: str = "",
        score: tuple[str, float, float] | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; `before` is the (ts, event_id) of the last row of the previous page.

        `columns` (default: all) matters for cost: the texts of rows scattered over a large
        table are most of what a page reads (200 whole rows of 9M took 1.2 s, their ids 0.1 s).
        `search`: text in the input or output (case-insensitive); `score`: (metric, low, high),
        responses with a score of that name within [low, high].
        """
        unknown = set(columns) - set(RESPONSES_ARROW.names)
        if unknown:
            raise ValueError(f"not columns of responses: {sorted(unknown)}")
        wanted = ", ".join(columns) if columns else "* EXCEPT (project_id)"
        extra = ""
        if search:
            # lowerUTF8(...) LIKE '%text%' is what the text_ngrams index (migration 12) can
            # answer; the text's LIKE wildcards are escaped, so it matches as typed.
            extra += (
                " AND (lowerUTF8(input) LIKE lowerUTF8({q:String})"
                " OR lowerUTF8(output) LIKE lowerUTF8({q:String}))"
            )
        if score is not None:
            extra += (
                " AND event_id IN (SELECT event_id FROM scored WHERE project_id = {p:String}"
                " AND name = {sm:String} AND value >= {slo:Float64} AND value <= {shi:Float64}"
                # scored.ts is the response's ts: the window bounds this scan by scored's key
                f" AND {filter_sql()} AND ts >= {{wlo:DateTime64(3)}})"
            )
        params = dict(
            p=project_id,
            **filter_params(f),
            bts=before[0] if before else FAR_FUTURE,
            bid=before[1] if before else "",
            lim=limit,
            q=_like_pattern(search),
            sm=score[0] if score else "",
            slo=score[1] if score else 0.0,
            shi=score[2] if score else 0.0,
        )
        where = (
            f" WHERE project_id = {{p:String}} AND {filter_sql()}"
            " AND (ts, event_id) < ({bts:DateTime64(3)}, {bid:String})"
        )
        # Newest first, in widening windows from the newest candidate: a page is found in the
        # newest hours without FINAL merging (and the text filter reading) the whole table; a
        # window holding `limit` rows holds the page, as every row outside it is older.
        query = (
            f"SELECT {wanted} FROM responses FINAL{where}{extra}"
            " AND ts >= {wlo:DateTime64(3)}"
            " ORDER BY ts DESC, event_id DESC LIMIT {lim:UInt32}"
        )
        if f.since and f.until and f.until - f.since <= _BOUNDED:
            return self._rows(query, wlo=FAR_PAST, **params)  # the filter bounds it already
        # The anchor is only a hint (no FINAL, the cursor loosened to its ts: reading event ids
        # would cost more than the page); the ts_minmax index finds it from a few granules.
        newest = self._rows(
            f"SELECT ts FROM responses WHERE project_id = {{p:String}} AND {filter_sql()}"
            " AND ts <= {bts:DateTime64(3)} ORDER BY ts DESC LIMIT 1",
            **params,
        )
        if not newest:
            return []
        floor = f.since or FAR_PAST
        floor = floor if floor.tzinfo else floor.replace(tzinfo=UTC)
        for span in (*_PAGE_WINDOWS, None):
            start = FAR_PAST if span is None else newest[0]["ts"] - span
            rows = self._rows(query, wlo=start, **params)
            if len(rows) >= limit or start <= floor:
                return rows
        return rows

    def responses_by_id(self, project_id: str, event_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Whole rows of a few events (in no particular order; unknown ids are left out)."""
        if not event_ids:
            return []
        ids = {f"e{i}": e for i, e in enumerate(event_ids)}  # chDB takes no list parameters
        pairs = f"SELECT {{p:String}}, arrayJoin([{', '.join(f'{{{k}:String}}' for k in ids)}])"
        return self._rows(
            "SELECT * EXCEPT (project_id) FROM responses FINAL WHERE project_id = {p:String}"
            f" AND {_by_event(pairs)}",
            p=project_id,
            **ids,
        )

    def version_counts(self, project_id: str, f: ResponseFilter) -> list[dict[str, Any]]:
        """Per app × prompt/model version: responses, first and last seen."""
        rows_sql, windows = self._cell_rows(cells.response_rows, f.since, f.until)
        return self._rows(
            f"SELECT {_VERSION_KEY}, sum(n) AS responses, min(first_seen) AS first_seen,"
            f" max(last_seen) AS last_seen FROM ({rows_sql}) WHERE {filter_sql()}"
            f" GROUP BY {_VERSION_KEY} ORDER BY first_seen, {_VERSION_KEY}",
            p=project_id,
            **filter_params(f),
            **windows,
        )

    def _cell_rows(
        self,
        rows: Callable[..., tuple[str, dict[str, datetime]]],
        since: datetime | None,
        until: datetime | None,
        bucket_seconds: int = cells.HOUR,
    ) -> tuple[str, dict[str, datetime]]:
        """SQL of the rows of [since, until): summed hours from the cells, the rest raw. When
        cells are read, the scored-table job runs first (shared with concurrent readers):
        responses just acknowledged for a summed hour reach its cell there."""
        since, until = since or FAR_PAST, until or FAR_FUTURE
        sealed = self._sealed() if self.use_cells else FAR_PAST
        lo, hi = cells.split(since, until, bucket_seconds, sealed)
        if lo < hi:
            self.materialize_scores()
        return rows(since, until, lo, hi)

    def experiments(self, project_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
        """Per experiment: its arms, apps, responses, first and last seen, and the metrics
        scored on it (newest first)."""
        return self._rows(
            "SELECT r.experiment AS experiment, r.arms AS arms, r.apps AS apps,"
            " r.responses AS responses, r.first_seen AS first_seen, r.last_seen AS last_seen,"
            " arraySort(ifNull(s.metrics, [])) AS metrics FROM ("
            "  SELECT experiment, arraySort(groupUniqArray(variant)) AS arms,"
            "  arraySort(groupUniqArray(app)) AS apps, count() AS responses,"
            "  min(ts) AS first_seen, max(ts) AS last_seen FROM responses FINAL"
            "  WHERE project_id = {p:String} AND experiment != '' GROUP BY experiment) AS r"
            " LEFT JOIN (SELECT experiment, groupUniqArray(name) AS metrics FROM scored"
            "  WHERE project_id = {p:String} AND experiment != '' GROUP BY experiment) AS s"
            " ON r.experiment = s.experiment ORDER BY last_seen DESC LIMIT {lim:UInt32}",
            p=project_id,
            lim=limit,
        )

    def source_health(self, project_id: str) -> list[dict[str, Any]]:
        """Per score source: scores written and the newest, scoring errors and the newest one
        (an evaluator's health at a glance)."""
        return self._rows(
            "SELECT source, sum(n_s) AS scores, max(last_s) AS last_score,"
            " sum(n_e) AS errors, max(last_e) AS last_error_at,"
            " argMax(err, last_e) AS last_error FROM ("
            "  SELECT source, count() AS n_s, max(ts) AS last_s, toUInt64(0) AS n_e,"
            "  toDateTime64(0, 3, 'UTC') AS last_e, '' AS err FROM scores"
            "  WHERE project_id = {p:String} GROUP BY source"
            "  UNION ALL SELECT source, toUInt64(0), toDateTime64(0, 3, 'UTC'), count(), max(ts),"
            "  argMax(error, ts) FROM score_errors FINAL WHERE project_id = {p:String}"
            "  GROUP BY source) GROUP BY source ORDER BY source",
            p=project_id,
        )

    def dimension_values(self, project_id: str) -> list[dict[str, Any]]:
        """The distinct (app, prompt_id, prompt_version, model) of the project's responses:
        suggestions for filters (no FINAL: a duplicate row changes no distinct value)."""
        return self._rows(
            "SELECT DISTINCT app, prompt_id, prompt_version, model FROM responses"
            " WHERE project_id = {p:String}",
            p=project_id,
        )

    def score_names(self, project_id: str) -> list[str]:
        rows = self._rows(
            "SELECT DISTINCT name FROM scored WHERE project_id = {p:String} ORDER BY name",
            p=project_id,
        )
        return [r["name"] for r in rows]

    def response_scores(self, project_id: str, event_id: str) -> list[dict[str, Any]]:
        """Every score of one response, from every source."""
        return self._rows(
            "SELECT name, source, value, comment, ts FROM scores FINAL"
            " WHERE project_id = {p:String} AND event_id = {e:String} ORDER BY name, source",
            p=project_id,
            e=event_id,
        )

    def scores_of(self, project_id: str, event_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Every score of a few responses (event_id, name, source, value)."""
        if not event_ids:
            return []
        ids = {f"e{i}": e for i, e in enumerate(event_ids)}  # chDB takes no list parameters
        return self._rows(
            "SELECT event_id, name, source, value FROM scores FINAL WHERE project_id = {p:String}"
            f" AND event_id IN ({', '.join(f'{{{k}:String}}' for k in ids)})"
            " ORDER BY event_id, name, source",
            p=project_id,
            **ids,
        )

    def case_responses(
        self, project_id: str, *, app: str, case_id: str, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The newest responses of one eval case of an app (every version that answered it)."""
        return self._rows(
            "SELECT * EXCEPT (project_id) FROM responses FINAL WHERE project_id = {p:String}"
            " AND app = {a:String} AND case_id = {c:String}"
            " ORDER BY ts DESC, event_id DESC LIMIT {lim:UInt32}",
            p=project_id,
            a=app,
            c=case_id,
            lim=limit,
        )

    def response_errors(self, project_id: str, event_id: str) -> list[dict[str, Any]]:
        """The evaluators that failed on one response, with their errors."""
        return self._rows(
            "SELECT source, error, ts FROM score_errors FINAL"
            " WHERE project_id = {p:String} AND event_id = {e:String} ORDER BY source",
            p=project_id,
            e=event_id,
        )

    def version_score_sums(
        self, project_id: str, f: ResponseFilter, *, metric: str, source: str = ""
    ) -> list[dict[str, Any]]:
        """Sufficient statistics (n, sum, sum of squares) of a metric per version. From the
        cells when one source scored the metric (several: each response counts once with their
        mean, which sums per source cannot give)."""
        sources = [source] if source else self.score_sources(project_id, metric)
        if metric not in BUILTIN_METRICS and len(sources) == 1:
            rows_sql, windows = self._cell_rows(cells.score_rows, f.since, f.until)
            return self._rows(
                f"SELECT {_VERSION_KEY}, sum(n) AS n, sum(total) AS total,"
                f" sum(total_sq) AS total_sq FROM ({rows_sql}) WHERE {filter_sql()}"
                f" GROUP BY {_VERSION_KEY}",
                p=project_id,
                m=metric,
                src=sources[0],
                app="",
                **filter_params(f),
                **windows,
            )
        values = metric_values_sql(metric, source=source, columns=_VERSION_KEY, where=filter_sql())
        return self._rows(
            f"SELECT {_VERSION_KEY}, count() AS n, sum(value) AS total,"
            f" sum(value * value) AS total_sq FROM ({values}) GROUP BY {_VERSION_KEY}",
            p=project_id,
            m=metric,
            src=source,
            **filter_params(f),
        )

    # -- evaluators and scoring --------------------------------------------------------------
    def evaluators(self, project_id: str) -> list[dict[str, Any]]:
        """Every evaluator the project's config ever named (removed ones flagged)."""
        return self._rows(
            "SELECT * EXCEPT (project_id) FROM evaluators FINAL WHERE project_id = {p:String}"
            " ORDER BY name",
            p=project_id,
        )

    def evaluator_versions(self, project_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT * EXCEPT (project_id) FROM evaluator_versions FINAL"
            " WHERE project_id = {p:String} ORDER BY name, version",
            p=project_id,
        )

    def put_evaluator(self, project_id: str, row: Mapping[str, Any], *, new_version: bool) -> None:
        """Store an evaluator's current definition (and, if new, the version's definition)."""
        current = {
            **row,
            "project_id": project_id,
            "enabled": int(row["enabled"]),
            "removed": int(row["removed"]),
        }
        if new_version:
            version = {f.name: current.get(f.name) for f in EVALUATOR_VERSIONS_ARROW}
            self.insert_rows("evaluator_versions", [{**version, "created_at": row["updated_at"]}])
        self.insert_rows("evaluators", [current])

    def projects_with_evaluators(self) -> list[str]:
        rows = self._rows(
            "SELECT DISTINCT project_id FROM evaluators FINAL WHERE enabled AND NOT removed"
            " ORDER BY project_id"
        )
        return [r["project_id"] for r in rows]

    def max_received_at(self, project_id: str) -> datetime | None:
        rows = self._rows(
            "SELECT max(received_at) AS ts, count() AS n FROM responses"
            " WHERE project_id = {p:String}",
            p=project_id,
        )
        return rows[0]["ts"] if rows[0]["n"] else None

    def scoring_candidates(self, project_id: str, targets: Sequence[ScoringTarget]) -> pa.Table:
        """(event_id, received_at, want_<i> per target) of the responses some target still has
        to score, by event_id. Short columns only: texts are read chunk by chunk
        (`scoring_rows`)."""
        params: dict[str, Any] = {"p": project_id}
        wants = []
        for i, t in enumerate(targets):
            params.update(target_params(t, f"t{i}"))
            wants.append(f"{target_sql(f't{i}')} AS want_{i}")
        return self._select(
            f"SELECT event_id, received_at, {', '.join(wants)} FROM responses FINAL"
            " WHERE project_id = {p:String}"
            f" AND ({' OR '.join(f'want_{i}' for i in range(len(targets)))}) ORDER BY event_id",
            {k: _param(v) for k, v in params.items()},
        )

    def scoring_rows(self, project_id: str, event_ids: Sequence[str]) -> pa.Table:
        """What evaluators read of these responses, by event_id."""
        pairs = f"SELECT {{p:String}}, {json_rows('ids', 'String')}"
        return self._select(
            f"SELECT {_SCORING_COLUMNS} FROM responses FINAL WHERE project_id = {{p:String}}"
            f" AND {_by_event(pairs)} ORDER BY event_id",
            {"p": project_id, "ids": json.dumps(list(event_ids))},
        )

    def job_cursor(self, job: str, key: str) -> datetime | None:
        rows = self._rows(
            "SELECT ts FROM job_state FINAL WHERE job = {j:String} AND key = {k:String}",
            j=job,
            k=key,
        )
        return rows[0]["ts"] if rows else None

    def set_job_cursor(self, job: str, key: str, ts: datetime, n: int = 0) -> None:
        self._exec(
            "INSERT INTO job_state (job, key, ts, n) VALUES ({j:String}, {k:String},"
            " {ts:DateTime64(3)}, {n:UInt64})",
            j=job,
            k=key,
            ts=ts,
            n=n,
        )

    def record_job_run(
        self,
        job: str,
        *,
        project_id: str = "",
        started_at: datetime,
        duration_s: float,
        status: str,
        rows: int = 0,
        error: str = "",
    ) -> None:
        self._exec(
            "INSERT INTO job_runs (job, project_id, started_at, duration_s, status, rows, error)"
            " VALUES ({j:String}, {p:String}, {s:DateTime64(3)}, {d:Float64}, {st:String},"
            " {r:UInt64}, {e:String})",
            j=job,
            p=project_id,
            s=started_at,
            d=duration_s,
            st=status,
            r=rows,
            e=error[:4000],
        )

    def last_job_runs(self, project_id: str) -> list[dict[str, Any]]:
        """Per job: the last run (global jobs, and this project's own), plus failures in the
        last 24 hours."""
        return self._rows(
            "SELECT job, max(started_at) AS last_started_at,"
            " argMax(duration_s, started_at) AS last_duration_s,"
            " argMax(status, started_at) AS last_status, argMax(rows, started_at) AS last_rows,"
            " argMax(error, started_at) AS last_error,"
            " countIf(status = 'failed' AND started_at > now64(3) - INTERVAL 1 DAY)"
            "  AS failures_24h"
            " FROM job_runs WHERE project_id IN ('', {p:String}) GROUP BY job ORDER BY job",
            p=project_id,
        )

    # -- detection, incidents, alerts --------------------------------------------------------
    def projects_with_scores(self, since: datetime) -> list[str]:
        rows = self._rows(
            "SELECT DISTINCT project_id FROM scored WHERE ts >= {since:DateTime64(3)}"
            " ORDER BY project_id",
            since=since,
        )
        return [r["project_id"] for r in rows]

    def projects_with_responses(self, since: datetime) -> list[str]:
        rows = self._rows(
            "SELECT DISTINCT project_id FROM responses WHERE ts >= {since:DateTime64(3)}"
            " ORDER BY project_id",
            since=since,
        )
        return [r["project_id"] for r in rows]

    def attribution_cells(
        self,
        project_id: str,
        *,
        since: datetime,
        until: datetime,
        bucket_seconds: int,
        app: str = "",
        metric: str = "",
        source: str = "",
        detail: bool = True,
    ) -> list[dict[str, Any]]:
        """Scored series in one scan (all of the project's, or the one app / metric / source
        given): per app, score name, source, time bucket (by response time, so late scores
        land in their response's bucket), route, environment, prompt and model — n, total,
        total_sq, non_binary. `prompt` is prompt_id@prompt_version, `model_label` the model
        with its version when that differs. Whole sealed hours come from `score_cells`, the
        rest from raw rows: the same numbers (tests compare with use_cells off).
        `detail=False`: per series and bucket only, for charts of a whole series (a fraction
        of the rows)."""
        rows_sql, windows = self._cell_rows(cells.score_rows, since, until, bucket_seconds)
        dims, by = (
            (f"{_CELL_DIMS},", ", route, environment, prompt, model_label") if detail else ("", "")
        )
        return self._cell_dicts(
            f"SELECT app, name AS metric, source, {_BUCKET} AS bucket, {dims}"
            " sum(n) AS n, sum(total) AS total, sum(total_sq) AS total_sq,"
            f" sum(non_binary) AS non_binary FROM ({rows_sql})"
            f" GROUP BY app, metric, source, bucket{by}"
            " ORDER BY app, metric, source, bucket",
            p=project_id,
            bs=bucket_seconds,
            app=app,
            m=metric,
            src=source,
            **windows,
        )

    def _sealed(self) -> datetime:
        """Hours before this are summed in the cells (FAR_PAST: none yet)."""
        rows = self._rows("SELECT ts FROM job_state FINAL WHERE job = 'cells' AND key = 'sealed'")
        return rows[0]["ts"] if rows else FAR_PAST

    def series_ends(self, project_id: str, *, since: datetime, until: datetime) -> list[datetime]:
        """The newest response time of each scored series (app, metric, source) with data in
        [since, until), or the start of its hour when that hour is summed, so a page can bound
        its scan to the windows it shows."""
        rows_sql, windows = self._cell_rows(cells.end_rows, since, until)
        rows = self._rows(
            f"SELECT max(ts) AS last FROM ({rows_sql}) GROUP BY app, name, source",
            p=project_id,
            **windows,
        )
        return [r["last"] for r in rows]

    def builtin_cells(
        self, project_id: str, *, since: datetime, until: datetime, bucket_seconds: int
    ) -> list[dict[str, Any]]:
        """The built-in metrics of every response (no score needed), in the cells of
        `attribution_cells` (app, bucket, route, environment, prompt, model_label): responses
        `n` and errors `errors` (status 'error'), and count / sum / sum of squares of
        latency_ms and cost_usd where present."""
        rows_sql, windows = self._cell_rows(cells.response_rows, since, until, bucket_seconds)
        return self._cell_dicts(
            f"SELECT app, {_BUCKET} AS bucket, {_CELL_DIMS},"
            " sum(n) AS n, sum(errors) AS errors, sum(latency_n) AS latency_n,"
            " sum(latency_total) AS latency_total, sum(latency_total_sq) AS latency_total_sq,"
            " sum(cost_n) AS cost_n, sum(cost_total) AS cost_total,"
            f" sum(cost_total_sq) AS cost_total_sq FROM ({rows_sql})"
            " GROUP BY app, bucket, route, environment, prompt, model_label"
            " ORDER BY app, bucket",
            p=project_id,
            bs=bucket_seconds,
            **windows,
        )

    def incidents(
        self, project_id: str, *, status: str = "", limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest shift first; `status` open / acknowledged / resolved, or "" for all."""
        return self._rows(
            "SELECT * EXCEPT (project_id) FROM incidents FINAL WHERE project_id = {p:String}"
            " AND ({st:String} = '' OR status = {st:String})"
            " ORDER BY shift_start DESC, incident_id LIMIT {lim:UInt32}",
            p=project_id,
            st=status,
            lim=limit,
        )

    def incident(self, project_id: str, incident_id: str) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT * EXCEPT (project_id) FROM incidents FINAL"
            " WHERE project_id = {p:String} AND incident_id = {i:String}",
            p=project_id,
            i=incident_id,
        )
        return rows[0] if rows else None

    def incident_revisions(self, project_id: str, incident_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT * EXCEPT (project_id, incident_id) FROM incident_revisions FINAL"
            " WHERE project_id = {p:String} AND incident_id = {i:String} ORDER BY revision",
            p=project_id,
            i=incident_id,
        )

    def incidents_since(self, project_id: str, since: datetime) -> list[dict[str, Any]]:
        """Every incident whose shift is at or after `since`, oldest shift first."""
        return self._rows(
            "SELECT * EXCEPT (project_id) FROM incidents FINAL WHERE project_id = {p:String}"
            " AND shift_start >= {since:DateTime64(3)} ORDER BY shift_start",
            p=project_id,
            since=since,
        )

    def alert_config(self, project_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT section, name, definition, content_hash, removed, updated_at"
            " FROM alert_config FINAL WHERE project_id = {p:String} ORDER BY section, name",
            p=project_id,
        )

    def projects_with_alert_rules(self) -> list[str]:
        rows = self._rows(
            "SELECT DISTINCT project_id FROM alert_config FINAL"
            " WHERE section = 'rule' AND NOT removed ORDER BY project_id"
        )
        return [r["project_id"] for r in rows]

    def alerts(
        self, project_id: str, *, incident_id: str = "", limit: int = 100
    ) -> list[dict[str, Any]]:
        """Alerts sent or attempted, newest first."""
        return self._rows(
            "SELECT * EXCEPT (project_id) FROM alerts WHERE project_id = {p:String}"
            " AND ({i:String} = '' OR incident_id = {i:String})"
            " ORDER BY sent_at DESC LIMIT {lim:UInt32}",
            p=project_id,
            i=incident_id,
            lim=limit,
        )

    def alert_history(self, project_id: str) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Per (incident, rule, channel): what was delivered — latest revision, last time,
        whether the opening and the resolution were sent. Failed attempts do not count."""
        rows = self._rows(
            "SELECT incident_id, rule, channel, max(revision) AS revision,"
            " max(sent_at) AS last_sent, countIf(event = 'opened') > 0 AS opened,"
            " countIf(event = 'resolved') > 0 AS resolved FROM alerts"
            " WHERE project_id = {p:String} AND status = 'sent'"
            " GROUP BY incident_id, rule, channel",
            p=project_id,
        )
        return {(r["incident_id"], r["rule"], r["channel"]): r for r in rows}

    # -- analysis aggregates ---------------------------------------------------------------
    def materialize_scores(self, *, overlap: timedelta = timedelta(seconds=60)) -> bool:
        """Bring `scored` up to date with scores and responses received since the last run.

        Both directions are joined: new scores to their responses, and new responses to older
        scores that arrived before them. Work is keyed by received_at (stamped just before the
        INSERT) with an overlap, so rows written while a run was under way are caught by the
        next: `overlap` when other processes write, else from the oldest insert this process
        had under way when the last run began. Re-inserted rows collapse by key, so running
        twice is harmless.
        Skips (returns False) when neither table changed, or when a run that began after this
        call did (it saw every row acknowledged before the call: concurrent readers share runs),
        or, inside `reads_share_one_job_run`, one that began after the block did, or, when
        this process is the only writer, nothing was written and no hour passed since the last
        run (the check for changes costs a read every request otherwise).
        """
        called = min(time.monotonic(), _reads_began.get())
        with self._materialize_lock:
            if self._materialized_from > called:
                return False
            started = time.monotonic()
            with self._writes_lock:
                state = (dict(self._writes), cells.sealed_target(datetime.now(UTC)))
            if self.exclusive and state == self._last_run:
                self._materialized_from = started
                return False
            self._in_job.on = True
            try:
                changed = self._run_job(overlap, self._written_since_last_run(state[0]))
            finally:
                self._in_job.on = False
            self._last_run = state
            self._materialized_from = started
            return changed

    def _written_since_last_run(self, writes: dict[str, int]) -> set[str] | None:
        """The tables the job reads that this process wrote since the last run began (None:
        not known — another process may write, no run yet, or a statement wrote what it did)."""
        if not self.exclusive or self._last_run is None:
            return None
        before = self._last_run[0]
        changed = {t for t, n in writes.items() if before.get(t) != n}
        return None if "" in changed else changed & {"responses", "scores"}

    def _run_job(self, overlap: timedelta, written: set[str] | None) -> bool:
        """One run of `materialize_scores` (under its lock)."""
        with self._writes_lock:  # before any read: what commits later is newer than this
            window, oldest_ts = self._next_window, self._oldest_ts
            under_way = self._in_flight.values()
            self._next_window = min(
                [*(r for r, _ in under_way), datetime.now(UTC) - timedelta(seconds=1)]
            )
            self._oldest_ts = min((t for _, t in under_way if t is not None), default=None)
        if written is None:  # a statement may have changed the marks: read them again
            self._watermarks, self._unsaved_marks = None, {}
        try:
            if window is None or written is None:
                return self._run_job_from(window, overlap)
            return self._run_job_known(window, written, oldest_ts)
        except BaseException:
            with self._writes_lock:  # the next run takes this one's window too
                self._next_window = _earliest(self._next_window, window)
                self._oldest_ts = _earliest(self._oldest_ts, oldest_ts)
            raise

    def _run_job_from(self, window: datetime | None, overlap: timedelta) -> bool:
        """The run, over rows received from `window` (None: from the last run's newest less
        `overlap`)."""
        last = self._rows(
            "SELECT ts, n FROM job_state FINAL WHERE job = 'scored' AND key = 'received_at'"
        )
        # the newest receipt, looked for only after the last run's (skips most parts)
        now = self._rows(
            "SELECT greatest({t:DateTime64(3)},"
            " (SELECT max(received_at) FROM scores WHERE received_at >= {t:DateTime64(3)}),"
            " (SELECT max(received_at) FROM responses WHERE received_at >= {t:DateTime64(3)}))"
            " AS ts, (SELECT count() FROM scores) + (SELECT count() FROM responses) AS n,"
            " now64(3) AS clock",
            t=last[0]["ts"] if last else FAR_PAST,
        )[0]
        changed = not last or (last[0]["ts"], last[0]["n"]) != (now["ts"], now["n"])
        since = last[0]["ts"] - overlap if last else FAR_PAST
        if self.exclusive and window is not None:
            since = window
        tables = {"responses", "scores"} if changed else set()
        return self._materialize(since, tables, now["clock"], (now["ts"], now["n"]))

    def _run_job_known(
        self, window: datetime, written: set[str], oldest_ts: datetime | None
    ) -> bool:
        """The run when this process is the only writer: it knows which tables changed and
        where their new rows begin, so it looks for neither (two queries) and joins only the
        new rows of the tables written (under ingest of responses alone, no new scores)."""
        return self._materialize(window, written, datetime.now(UTC), (window, 0), oldest_ts)

    def _materialize(
        self,
        since: datetime,
        tables: set[str],
        clock: datetime,
        mark: tuple[datetime, int],
        oldest_ts: datetime | None = FAR_PAST,
    ) -> bool:
        """Join the rows of `tables` received from `since` into `scored`, bring the cells up
        to date, and note how far it got: `mark` (the newest receipt and the row count, which
        the next run compares) and when this run began (`clock`), in one INSERT. `oldest_ts`:
        the oldest time of the new responses, when known (FAR_PAST: not known)."""
        wrote_scored = "scores" in tables
        if "responses" in tables:
            self._drop_moved_responses(since)
        if wrote_scored:
            self._exec(_SCORED_FROM_NEW_SCORES, since=since)
        if "responses" in tables:
            wrote_scored |= self._scored_from_new_responses(since)
        marks = [("scored", "received_at", *mark)] if tables else []
        known = oldest_ts != FAR_PAST  # the only writer's run: nothing else wrote those tables
        received = since if tables else None
        look_scored = wrote_scored or not known
        if self._update_cells(clock, received=received, scored=look_scored, oldest=oldest_ts):
            marks.append(("cells", "started", clock, 0))
        if marks:
            self._note_marks(marks)
        return bool(tables)

    def _note_marks(self, marks: Sequence[tuple[str, str, datetime, int]]) -> None:
        """Write the job's marks (job, key, ts, n) in one INSERT; the only writer keeps them
        and writes them at most every MARKS_EVERY seconds."""
        if self.exclusive:
            self._unsaved_marks.update({(j, k): (t, n) for j, k, t, n in marks})
            if self._watermarks is not None:
                self._watermarks.update({k: t for j, k, t, _ in marks if j == "cells"})
            if time.monotonic() - self._marks_saved >= MARKS_EVERY:
                self._write_unsaved_marks()
            return
        self._write_marks(marks)

    def save_marks(self) -> None:
        """Write the marks the only writer kept (before it closes)."""
        with self._materialize_lock:
            if self._unsaved_marks:
                self._write_unsaved_marks()

    def _write_unsaved_marks(self) -> None:
        marks = [(j, k, t, n) for (j, k), (t, n) in self._unsaved_marks.items()]
        self._unsaved_marks = {}
        self._write_marks(marks)

    def _write_marks(self, marks: Sequence[tuple[str, str, datetime, int]]) -> None:
        self._exec(
            "INSERT INTO job_state (job, key, ts, n) VALUES "
            + ", ".join(
                f"({{j{i}:String}}, {{k{i}:String}}, {{t{i}:DateTime64(3)}}, {{n{i}:UInt64}})"
                for i in range(len(marks))
            ),
            **{
                f"{c}{i}": v
                for i, row in enumerate(marks)
                for c, v in zip("jktn", row, strict=True)
            },
        )
        self._marks_saved = time.monotonic()

    def _scored_from_new_responses(self, since: datetime) -> bool:
        """Join new responses to scores of their events (usually none: scores come later) and
        drop those events' scored rows under an app or time the response no longer has (the
        scored key holds both, so a re-sent event's old row would stay beside the new one).
        True when it wrote scored rows."""
        found = self._rows(_SCORED_EVENTS_OF_NEW_RESPONSES, since=since)
        if not found:
            return False
        where = {"pairs": json.dumps([[r["project_id"], r["event_id"]] for r in found])}
        self._exec(_SCORED_FROM_EVENTS, **where)
        self._delete_scored(_STALE_SCORED, **where)
        return True

    def _delete_scored(self, where: str, **params: Any) -> None:
        """Delete the scored rows `where` selects and recompute the summed cells they were in."""
        held = self._rows(
            f"SELECT DISTINCT {cells.CELL_OF_ROW} FROM scored WHERE {where}", **params
        )
        if not held:
            return
        self._exec(f"DELETE FROM scored WHERE {where}", **params)
        sealed = self._sealed().timestamp()
        self._recompute_cells(cells.RECOMPUTE, [r for r in held if r["h"] < sealed])

    def _drop_moved_responses(self, since: datetime) -> None:
        """An event sent again with its ts in another hour is a second row under the
        time-first key (a retry, with the same ts, collapses by key). Keep the one received
        last, as FINAL keeps a key's last write, and drop the others with their scored rows,
        recomputing the summed cells they were in."""
        moved = self._rows(_MOVED_EVENTS, since=since)
        if not moved:
            return
        pairs = json.dumps([[r["project_id"], r["event_id"]] for r in moved])
        rows = self._rows(_HOURS_OF_EVENTS, pairs=pairs)
        kept = {}
        for r in rows:  # ordered by receipt: the last one of each event stays
            kept[r["project_id"], r["event_id"]] = r["h"]
        stale = [r for r in rows if kept[r["project_id"], r["event_id"]] != r["h"]]
        if not stale:
            return
        where = {"stale": json.dumps([[r["project_id"], r["h"], r["event_id"]] for r in stale])}
        self._delete_scored(_stale("toStartOfHour(ts)"), **where)
        self._exec(f"DELETE FROM responses WHERE {_stale('toStartOfHour(ts)')}", **where)
        self._exec(f"DELETE FROM response_keys WHERE {_stale('hour')}", **where)
        sealed = self._sealed().timestamp()
        responses = {(r["project_id"], r["app"], r["h"]) for r in stale if r["h"] < sealed}
        self._recompute_cells(
            cells.RECOMPUTE_RESPONSES,
            [{"project_id": p, "name": "", "app": a, "h": h} for p, a, h in responses],
        )

    def _update_cells(
        self,
        clock: datetime,
        *,
        received: datetime | None,
        scored: bool = True,
        oldest: datetime | None = FAR_PAST,
    ) -> bool:
        """Sum the hours that passed since the last run and, when the job took new rows
        (`received`: its window), recompute the summed cells those rows land in: scored rows
        written since the last run began (a minute's overlap covers another process's run under
        way then; not looked for when `scored` is False: none were) and responses received in
        the window (not when `oldest`, the new responses' oldest time, is None or in an hour
        not summed). True when the caller is to note `clock` as when the last run that looked
        began."""
        marks = self._watermarks
        if marks is None:
            marks = {r["key"]: r["ts"] for r in self._rows(cells.WATERMARKS)}
            self._watermarks = marks if self.exclusive else None
        sealed = marks.get("sealed", FAR_PAST)
        target = cells.sealed_target(clock)
        if target > sealed:
            self._exec(cells.SEAL, lo=sealed, hi=target)
            self._exec(cells.SEAL_RESPONSES, lo=sealed, hi=target)
            self._exec(cells.SET_WATERMARK, k="sealed", ts=target)
            marks["sealed"] = target
        # The first summing read every row written so far: the caller marks it (True), or the
        # first run with new rows would take every row written before it as touched (9 s at 10M).
        if received is None and sealed > FAR_PAST:
            return False
        if sealed > FAR_PAST:  # hours summed before this run (later ones were just summed)
            # another process's run may have been under way then; this one's runs are not
            overlap = timedelta(seconds=0 if self.exclusive else 60)
            since = marks.get("started", FAR_PAST + overlap) - overlap
            if scored:
                touched = self._rows(cells.TOUCHED, since=since, sealed=sealed)
                self._recompute_cells(cells.RECOMPUTE, touched)
            if oldest is not None and oldest < sealed:
                late = self._rows(cells.TOUCHED_RESPONSES, since=received, sealed=sealed)
                self._recompute_cells(cells.RECOMPUTE_RESPONSES, late)
        return True

    def _recompute_cells(self, sql: str, touched: Sequence[Mapping[str, Any]]) -> None:
        """Recompute the named summed cells (rows of project_id, name, app, h: hour in epoch s)."""
        keys = [(r["project_id"], r["name"], r["app"], r["h"]) for r in touched]
        for lo in range(0, len(keys), 5000):
            chunk = keys[lo : lo + 5000]
            hours = [h for *_, h in chunk]
            self._exec(
                sql,
                cells=json.dumps(chunk),
                lo=datetime.fromtimestamp(min(hours), UTC),
                hi=datetime.fromtimestamp(max(hours) + cells.HOUR, UTC),
            )

    def score_sources(self, project_id: str, metric: str) -> list[str]:
        """The sources that scored `metric` in this project."""
        rows = self._rows(
            "SELECT DISTINCT source FROM scored WHERE project_id = {p:String} AND name = {m:String}"
            " ORDER BY source",
            p=project_id,
            m=metric,
        )
        return [r["source"] for r in rows]

    def group_moments(
        self,
        project_id: str,
        groups: Mapping[str, ResponseFilter],
        *,
        metric: str,
        source: str = "",
        sample: int = 0,
    ) -> dict[str, dict[str, Any]]:
        """Per named group: n, total, total_sq, non_binary (values other than 0/1), overlap,
        and with `sample` > 0 a seeded reservoir sample of at most that many raw values (for
        rank tests and shape checks) taken in the same scan.

        A response matching several groups counts in the first and in `overlap` of the others.
        """
        names = list(groups)
        conds = [filter_sql(f"g{i}") for i in range(len(names))]
        label = "multiIf(" + ", ".join(f"{c}, {i}" for i, c in enumerate(conds)) + ", -1)"
        overlap = " + ".join(f"toUInt8({c})" for c in conds) + " > 1"
        params: dict[str, Any] = {}
        for i, name in enumerate(names):
            params.update(filter_params(groups[name], f"g{i}"))
        values = metric_values_sql(
            metric,
            source=source,
            columns=f"{_ALL_DIMS}, {label} AS grp, {overlap} AS overlapping",
            where=" OR ".join(conds),
        )
        rows = self._rows(
            "SELECT grp, count() AS n, sum(value) AS total, sum(value * value) AS total_sq,"
            " countIf(value NOT IN (0, 1)) AS non_binary, countIf(overlapping) AS overlap,"
            f" groupArraySample({int(max(sample, 1))}, 20261124)(value) AS sample"
            f" FROM ({values}) GROUP BY grp",
            p=project_id,
            m=metric,
            src=source,
            **params,
        )
        empty = {"n": 0, "total": 0.0, "total_sq": 0.0, "non_binary": 0, "overlap": 0}
        out: dict[str, dict[str, Any]] = {name: {**empty, "sample": []} for name in names}
        for r in rows:
            if not sample:
                r["sample"] = []
            out[names[r.pop("grp")]] = r
        return out

    def paired_values(
        self,
        project_id: str,
        a: ResponseFilter,
        b: ResponseFilter,
        *,
        metric: str,
        source: str = "",
    ) -> list[dict[str, Any]]:
        """(case_id, a, b): the mean value of each eval case under each group, for cases
        present in both (responses without a case_id are ignored)."""
        side = (
            "SELECT case_id, avg(value) AS v FROM ({values}) WHERE case_id != '' GROUP BY case_id"
        )
        va = metric_values_sql(metric, source=source, columns="case_id", where=filter_sql("a"))
        vb = metric_values_sql(metric, source=source, columns="case_id", where=filter_sql("b"))
        return self._rows(
            f"SELECT case_id, x.v AS a, y.v AS b FROM ({side.format(values=va)}) AS x"
            f" INNER JOIN ({side.format(values=vb)}) AS y USING (case_id) ORDER BY case_id",
            p=project_id,
            m=metric,
            src=source,
            **filter_params(a, "a"),
            **filter_params(b, "b"),
        )

    # -- eval runs (the CI gate) -----------------------------------------------------------
    def eval_runs(self, project_id: str, run: EvalRun) -> list[dict[str, Any]]:
        """The eval runs (tag run_id; '' when untagged) of `run`'s version, whatever its
        run_id, newest first, with the other version columns' values (a second change riding
        along would confound the gate)."""
        others = ", ".join(
            f"arraySort(groupUniqArray({c})) AS {c}s"
            for c in EVAL_VERSION_COLUMNS
            if c != run.column
        )
        return self._rows(
            "SELECT tags['run_id'] AS run_id, count() AS responses,"
            " uniqExactIf(case_id, case_id != '') AS cases,"
            " countIf(case_id = '') AS without_case, min(ts) AS first_ts, max(ts) AS last_ts,"
            f" {others}, arraySort(groupUniqArray(prompt_id)) AS prompt_ids"
            f" FROM responses FINAL WHERE {run.sql(any_run=True)}"
            " GROUP BY run_id ORDER BY last_ts DESC, run_id",
            p=project_id,
            **run.params(),
        )

    def eval_cases(
        self, project_id: str, run: EvalRun, *, excerpt: int = 300
    ) -> list[dict[str, Any]]:
        """Per eval case of one run: responses, and the latest input/output cut to `excerpt`
        characters (shown next to a regressed case)."""
        return self._rows(
            "SELECT case_id, count() AS responses,"
            " argMax(substringUTF8(input, 1, {x:UInt32}), ts) AS input,"
            " argMax(substringUTF8(output, 1, {x:UInt32}), ts) AS output"
            f" FROM responses FINAL WHERE {run.sql()} GROUP BY case_id ORDER BY case_id",
            p=project_id,
            x=excerpt,
            **run.params(),
        )

    def eval_case_scores(
        self, project_id: str, run: EvalRun, *, builtin: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """(case_id, name, source, value, n): each case's mean of every score (straight from
        `scores`: a CI gate runs right after ingest, before the scored table catches up) and
        of the named built-in response metrics (source '')."""
        events = f"SELECT event_id, case_id FROM responses FINAL WHERE {run.sql()}"
        parts = [
            "SELECT r.case_id AS case_id, s.name AS name, s.source AS source, s.value AS value"
            " FROM (SELECT event_id, name, source, value FROM scores FINAL"
            f" WHERE project_id = {{p:String}} AND event_id IN (SELECT event_id FROM ({events})))"
            f" AS s INNER JOIN ({events}) AS r USING (event_id)"
        ]
        parts += [
            f"SELECT case_id, {{b{i}:String}} AS name, '' AS source, {BUILTIN_METRICS[m]} AS value"
            f" FROM responses FINAL WHERE {run.sql()} AND isNotNull(value)"
            for i, m in enumerate(builtin)
        ]
        return self._rows(
            "SELECT case_id, name, source, avg(value) AS value, count() AS n FROM ("
            + " UNION ALL ".join(parts)
            + ") GROUP BY case_id, name, source ORDER BY name, source, case_id",
            p=project_id,
            **run.params(),
            **{f"b{i}": m for i, m in enumerate(builtin)},
        )

    def metric_series(
        self,
        project_id: str,
        f: ResponseFilter,
        *,
        metric: str,
        source: str = "",
        bucket_seconds: int,
    ) -> list[dict[str, Any]]:
        """Per time bucket (by response time, not score arrival): n, total, total_sq."""
        values = metric_values_sql(metric, source=source, columns="ts", where=filter_sql())
        return self._rows(
            f"SELECT {_BUCKET} AS bucket, count() AS n, sum(value) AS total,"
            " sum(value * value) AS total_sq, countIf(value NOT IN (0, 1)) AS non_binary"
            f" FROM ({values}) GROUP BY bucket ORDER BY bucket",
            p=project_id,
            m=metric,
            src=source,
            bs=bucket_seconds,
            **filter_params(f),
        )

    def group_counts(self, project_id: str, f: ResponseFilter, *, by: str) -> dict[str, int]:
        """Responses per value of one filter column (e.g. per variant, for SRM checks)."""
        if by not in FILTER_COLUMNS:
            raise ValueError(f"cannot group by {by!r}")
        rows_sql, windows = self._cell_rows(cells.response_rows, f.since, f.until)
        rows = self._rows(
            f"SELECT {by} AS k, sum(n) AS n FROM ({rows_sql}) WHERE {filter_sql()} GROUP BY k",
            p=project_id,
            **filter_params(f),
            **windows,
        )
        return {r["k"]: int(r["n"]) for r in rows}

    # -- human review (queues, labels) -------------------------------------------------------
    def review_config(self, project_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT * EXCEPT (project_id) FROM review_config FINAL WHERE project_id = {p:String}"
            " ORDER BY section, name",
            p=project_id,
        )

    def review_candidates(
        self, project_id: str, f: ResponseFilter, *, stratum: str, limit: int
    ) -> list[tuple[str, str]]:
        """(event_id, stratum value) of the newest `limit` responses passing the filter."""
        if stratum and stratum not in FILTER_COLUMNS:
            raise ValueError(f"cannot stratify by {stratum!r}")
        column = stratum or "''"
        rows = self._rows(
            f"SELECT event_id, {column} AS s FROM responses FINAL"
            f" WHERE project_id = {{p:String}} AND {filter_sql()}"
            " ORDER BY ts DESC, event_id DESC LIMIT {lim:UInt32}",
            p=project_id,
            lim=limit,
            **filter_params(f),
        )
        return [(r["event_id"], r["s"]) for r in rows]

    def review_items(self, project_id: str, queue: str) -> list[dict[str, Any]]:
        """A queue's items by rank."""
        return self._rows(
            "SELECT event_id, stratum, rank, needed, added_at FROM review_items FINAL"
            " WHERE project_id = {p:String} AND queue = {q:String} ORDER BY rank, event_id",
            p=project_id,
            q=queue,
        )

    def is_review_item(self, project_id: str, queue: str, event_id: str) -> bool:
        rows = self._rows(
            "SELECT count() AS n FROM review_items WHERE project_id = {p:String}"
            " AND queue = {q:String} AND event_id = {e:String}",
            p=project_id,
            q=queue,
            e=event_id,
        )
        return bool(rows[0]["n"])

    def review_answers(
        self, project_id: str, queue: str = "", *, event_id: str = ""
    ) -> list[dict[str, Any]]:
        """The latest answer of each reviewer on each item (label, skip, lease or undone), in
        the order they were given; '' = every queue / every item."""
        return self._rows(
            "SELECT queue, event_id, reviewer, action, labels, comment, key_id, ts"
            " FROM review_labels FINAL WHERE project_id = {p:String}"
            " AND ({q:String} = '' OR queue = {q:String})"
            " AND ({e:String} = '' OR event_id = {e:String}) ORDER BY ts, event_id, reviewer",
            p=project_id,
            q=queue,
            e=event_id,
        )

    def reviewed_scores(self, project_id: str, metric: str) -> list[dict[str, Any]]:
        """(event_id, source, value) of every non-human score of `metric` on a labelled
        response: what the human labels are compared with."""
        return self._rows(
            "SELECT event_id, source, value FROM scores FINAL WHERE project_id = {p:String}"
            " AND name = {m:String} AND NOT startsWith(source, 'human:')"
            " AND event_id IN (SELECT event_id FROM review_labels FINAL"
            "  WHERE project_id = {p:String} AND action = 'label')"
            " ORDER BY source, event_id",
            p=project_id,
            m=metric,
        )

    def delete_score(self, project_id: str, event_id: str, name: str, source: str) -> None:
        """Remove one score (an undone human label with no other reviewer's to take its
        place) from scores and from the analysis table built of them (and its cell)."""
        where = (
            "project_id = {p:String} AND event_id = {e:String} AND name = {n:String}"
            " AND source = {s:String}"
        )
        key = {"p": project_id, "e": event_id, "n": name, "s": source}
        with self._materialize_lock:
            self._exec(f"DELETE FROM scores WHERE {where}", **key)
            self._delete_scored(where, **key)


def _by_event(pairs: str) -> str:
    """The condition on `responses` selecting the events of the (project_id, event_id) pairs
    that `pairs` selects: each one's hour from `response_keys` (keyed by id), then the
    time-first key finds the row (the key alone cannot find an id without its hour)."""
    return (
        "(project_id, toStartOfHour(ts), event_id) IN (SELECT project_id, hour, event_id"
        f" FROM response_keys WHERE (project_id, event_id) IN ({pairs}))"
    )


def _stale(hour: str) -> str:
    """The condition selecting the (project_id, hour in epoch seconds, event_id) triples of the
    {stale:String} parameter (JSON), `hour` being the table's expression of the hour."""
    return (
        f"(project_id, {hour}, event_id) IN (SELECT t.1, toDateTime(t.2, 'UTC'), t.3 FROM"
        f" (SELECT {json_rows('stale', 'Tuple(String, Int64, String)')} AS t))"
    )


_SCORED_COLUMNS = (
    "s.project_id, s.name, s.source, s.event_id, s.value, s.ts, r.ts, r.app, r.route,"
    " r.environment, r.prompt_id, r.prompt_version, r.model, r.model_version, r.provider,"
    " r.experiment, r.variant, r.case_id, now64(3)"
)
_RESPONSE_DIMS = (
    "SELECT project_id, event_id, ts, app, route, environment, prompt_id, prompt_version, model,"
    " model_version, provider, experiment, variant, case_id FROM responses FINAL"
)
_SCORE_COLUMNS = "SELECT project_id, event_id, name, source, value, ts FROM scores FINAL"
# The (project_id, event_id) pairs of the {pairs:String} parameter (JSON).
_PAIRS = f"SELECT t.1, t.2 FROM (SELECT {json_rows('pairs', 'Tuple(String, String)')} AS t)"
_NEW_SCORES = "SELECT project_id, event_id FROM scores WHERE received_at >= {since:DateTime64(3)}"
_NEW_RESPONSES = (
    "SELECT project_id, event_id FROM responses WHERE received_at >= {since:DateTime64(3)}"
)
_MOVED_EVENTS = (  # new responses whose event id has rows in more than one hour
    "SELECT project_id, event_id FROM response_keys"
    f" WHERE (project_id, event_id) IN ({_NEW_RESPONSES})"
    " GROUP BY project_id, event_id HAVING uniqExact(hour) > 1"
)
# Each hour of those events, with its app, in order of receipt (the hour received last last).
_HOURS_OF_EVENTS = (
    "SELECT project_id, event_id, toInt64(toUnixTimestamp(toStartOfHour(ts))) AS h,"
    " argMax(app, received_at) AS app, max(received_at) AS got FROM responses WHERE "
    + _by_event(_PAIRS)
    + " GROUP BY project_id, event_id, h ORDER BY got, h"
)

# New scores without FINAL (which cannot skip parts by received_at: it merged the whole table,
# ~0.6 s at 10M rows, on every run): the newest of each key's new rows. A retried older score
# (a lower ts) is written too and loses to the kept one in `scored`, as it does in `scores`:
# both are ReplacingMergeTree with the score's ts as the version.
_NEW_SCORE_ROWS = (
    "SELECT project_id, event_id, name, source, latest.1 AS value, latest.2 AS ts FROM ("
    " SELECT project_id, event_id, name, source,"
    "  argMax(tuple(value, ts), (ts, received_at)) AS latest"
    " FROM scores WHERE received_at >= {since:DateTime64(3)}"
    " GROUP BY project_id, event_id, name, source)"
)
_SCORED_FROM_NEW_SCORES = (
    f"INSERT INTO scored SELECT {_SCORED_COLUMNS}"
    f" FROM ({_NEW_SCORE_ROWS}) AS s"
    f" INNER JOIN ({_RESPONSE_DIMS} WHERE {_by_event(_NEW_SCORES)})"
    " AS r ON s.project_id = r.project_id AND s.event_id = r.event_id"
)
# New responses' events that have scores, received at any time: a score received within the
# window was joined by its own run only if its response was there then.
_SCORED_EVENTS_OF_NEW_RESPONSES = (
    f"SELECT DISTINCT project_id, event_id FROM scores WHERE (project_id, event_id) IN"
    f" ({_NEW_RESPONSES})"
)
_SCORED_FROM_EVENTS = (
    f"INSERT INTO scored SELECT {_SCORED_COLUMNS}"
    f" FROM ({_SCORE_COLUMNS} WHERE (project_id, event_id) IN ({_PAIRS})) AS s"
    f" INNER JOIN ({_RESPONSE_DIMS} WHERE {_by_event(_PAIRS)}) AS r"
    " ON s.project_id = r.project_id AND s.event_id = r.event_id"
)
# Scored rows of those events under another app or time than their response's now (a move to
# another hour is the moved-event step's: these are the response's hour).
_STALE_SCORED = (
    f"{_by_event(_PAIRS)} AND (project_id, event_id, app, ts) NOT IN"
    f" (SELECT project_id, event_id, app, ts FROM responses FINAL WHERE {_by_event(_PAIRS)})"
)
_SCORING_COLUMNS = (
    "event_id, ts, received_at, app, route, environment, prompt_id, prompt_version, model,"
    " model_version, case_id, input, output, expected_output, latency_ms, input_tokens,"
    " output_tokens, cost_usd, status, error_type, tags"
)


_VERSION_KEY = "app, prompt_id, prompt_version, model, model_version"
_BUCKET = "toDateTime64(toStartOfInterval(ts, toIntervalSecond({bs:UInt32})), 3, 'UTC')"
# The dimensions of a cell as attribution reads them: prompt is prompt_id@version, model_label
# the model with its version when that differs.
_CELL_DIMS = (
    "route, environment,"
    " if(prompt_id = '' AND prompt_version = '', '', concat(prompt_id, '@', prompt_version))"
    "  AS prompt,"
    " if(model_version IN ('', model), model, concat(model, '@', model_version)) AS model_label"
)

_ALL_DIMS = ", ".join([*FILTER_COLUMNS, "ts"])


_LABEL_EVENT_TYPES = {
    "prompt_id": "String",
    "label": "String",
    "model": "String",
    "from_version": "String",
    "to_version": "String",
    "key_id": "String",
    "reason": "String",
    "forced": "UInt8",
    "incident_id": "String",
}
_ROLLOUT_EVENT_TYPES = {
    "rollout_id": "String",
    "prompt_id": "String",
    "label": "String",
    "model": "String",
    "incumbent": "String",
    "candidate": "String",
    "config": "String",
    "state": "String",
    "step": "Int32",
    "step_started_at": "DateTime64(3)",
    "action": "String",
    "reason": "String",
    "detail": "String",
    "key_id": "String",
}


def _key_record(row: Mapping[str, Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row["key_id"],
        project_id=row["project_id"],
        secret_sha256=row["secret_sha256"],
        scopes=tuple(row["scopes"]),
        name=row["name"],
        created_at=row["created_at"],
        revoked=bool(row["revoked"]),
    )


# The explorer's windows back from the newest matching response (then everything). A window
# costs the parts it touches, not its length (time is not in the sorting key, so a part's
# granules span the part's whole time range), and the newest parts span hours to a day: a first
# window shorter than that buys nothing, and each further step reads those parts again.
_PAGE_WINDOWS = (timedelta(hours=6), timedelta(days=2), timedelta(days=14))
_BOUNDED = timedelta(days=1)  # a filter's time range this short is read in one query


def _like_pattern(text: str) -> str:
    """`text` anywhere, as typed: LIKE's wildcards and escape character escaped (the SQL
    lowers the pattern with the same lowerUTF8 as the columns)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
