"""The Store: every SQL statement promptblame runs, over one of two transports.

Subclasses supply only the transport (`_select`, `_command`, `_insert`); the SQL is written once
here, in ClickHouse dialect, with user values passed as server-side `{name:Type}` parameters.
Reads of `responses` and `scores` say FINAL so a retried event never counts twice.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from promptblame.store.schema import INSERTABLE, MIGRATIONS, MIGRATIONS_TABLE

log = logging.getLogger(__name__)

_FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)


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


@dataclass(frozen=True)
class ResponseFilter:
    app: str = ""
    route: str = ""
    prompt_id: str = ""
    prompt_version: str = ""
    model: str = ""
    model_version: str = ""
    since: datetime | None = None
    until: datetime | None = None


class Store(ABC):
    """One door to ClickHouse. Thread-safe; `kind` names the transport."""

    kind: str = "abstract"

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

    def _exec(self, sql: str, **params: Any) -> None:
        self._command(sql, {k: _param(v) for k, v in params.items()})

    # -- schema ----------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply every migration not yet recorded; return the versions applied now."""
        self._exec(MIGRATIONS_TABLE)
        done = {r["version"] for r in self._rows("SELECT version FROM schema_migrations FINAL")}
        applied = []
        for m in MIGRATIONS:
            if m.version in done:
                continue
            for statement in m.statements:
                self._exec(statement)
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
    def insert(self, table: str, data: pa.Table) -> None:
        """Write rows of a known arrow layout (schema.INSERTABLE) in one INSERT."""
        expected = INSERTABLE.get(table)
        if expected is None or not data.schema.equals(expected):
            raise ValueError(f"rows for {table!r} do not match its arrow layout")
        if data.num_rows:
            self._insert(table, data)

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
        self._exec(
            "INSERT INTO prompt_versions (project_id, prompt_id, version, template, content_hash,"
            " author, labels, created_at) VALUES ({p:String}, {i:String}, {v:String},"
            " {t:String}, {h:String}, {a:String}, JSONExtract({l:String}, 'Array(String)'),"
            " {c:DateTime64(3)})",
            p=project_id,
            i=prompt_id,
            v=version,
            t=template,
            h=content_hash,
            a=author,
            l=json.dumps(list(labels)),
            c=created_at,
        )

    def list_prompt_versions(self, project_id: str, prompt_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT prompt_id, version, template, content_hash, author, labels, created_at"
            " FROM prompt_versions FINAL WHERE project_id = {p:String} AND prompt_id = {i:String}"
            " ORDER BY created_at, version",
            p=project_id,
            i=prompt_id,
        )

    # -- reads -----------------------------------------------------------------------------
    def list_responses(
        self,
        project_id: str,
        f: ResponseFilter,
        *,
        limit: int,
        before: tuple[datetime, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; `before` is the (ts, event_id) of the last row of the previous page."""
        return self._rows(
            "SELECT * EXCEPT (project_id) FROM responses FINAL"
            f" WHERE project_id = {{p:String}} AND {_FILTER_SQL}"
            " AND (ts, event_id) < ({bts:DateTime64(3)}, {bid:String})"
            " ORDER BY ts DESC, event_id DESC LIMIT {lim:UInt32}",
            p=project_id,
            **_filter_params(f),
            bts=before[0] if before else _FAR_FUTURE,
            bid=before[1] if before else "",
            lim=limit,
        )

    def version_counts(self, project_id: str, f: ResponseFilter) -> list[dict[str, Any]]:
        """Per app × prompt/model version: responses, first and last seen."""
        return self._rows(
            f"SELECT {_VERSION_KEY}, count() AS responses, min(ts) AS first_seen,"
            " max(ts) AS last_seen FROM responses FINAL"
            f" WHERE project_id = {{p:String}} AND {_FILTER_SQL}"
            f" GROUP BY {_VERSION_KEY} ORDER BY first_seen, {_VERSION_KEY}",
            p=project_id,
            **_filter_params(f),
        )

    def version_score_sums(
        self, project_id: str, f: ResponseFilter, *, metric: str, source: str = ""
    ) -> list[dict[str, Any]]:
        """Sufficient statistics (n, sum, sum of squares) of a metric per version.

        A response scored by several sources counts once, with the mean of its scores.
        """
        return self._rows(
            f"SELECT {_VERSION_KEY}, count() AS n, sum(value) AS total,"
            " sum(value * value) AS total_sq"
            " FROM (SELECT event_id, avg(value) AS value FROM scores FINAL"
            "       WHERE project_id = {p:String} AND name = {m:String}"
            "         AND ({src:String} = '' OR source = {src:String}) GROUP BY event_id) AS s"
            f" INNER JOIN (SELECT event_id, {_VERSION_KEY} FROM responses FINAL"
            f"       WHERE project_id = {{p:String}} AND {_FILTER_SQL}) AS r USING (event_id)"
            f" GROUP BY {_VERSION_KEY}",
            p=project_id,
            m=metric,
            src=source,
            **_filter_params(f),
        )


_VERSION_KEY = "app, prompt_id, prompt_version, model, model_version"

_FILTER_SQL = " AND ".join(
    [
        *(
            f"({{f_{c}:String}} = '' OR {c} = {{f_{c}:String}})"
            for c in ("app", "route", "prompt_id", "prompt_version", "model", "model_version")
        ),
        "ts >= {f_since:DateTime64(3)}",
        "ts < {f_until:DateTime64(3)}",
    ]
)


def _filter_params(f: ResponseFilter) -> dict[str, Any]:
    return {
        "f_app": f.app,
        "f_route": f.route,
        "f_prompt_id": f.prompt_id,
        "f_prompt_version": f.prompt_version,
        "f_model": f.model,
        "f_model_version": f.model_version,
        "f_since": f.since or _FAR_PAST,
        "f_until": f.until or _FAR_FUTURE,
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
