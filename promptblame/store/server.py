"""ServerStore: the same SQL over HTTP to a ClickHouse server, through clickhouse-connect."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlparse

import clickhouse_connect
import pyarrow as pa

from promptblame.errors import StoreUnavailable
from promptblame.store.base import Store


class ServerStore(Store):
    kind = "server"

    def __init__(self, url: str, database: str = "promptblame", **client_kwargs: Any) -> None:
        super().__init__()
        u = urlparse(url)
        self.database = database
        conn = dict(
            host=u.hostname or "localhost",
            port=u.port or (8443 if u.scheme == "https" else 8123),
            username=unquote(u.username or "default"),
            password=unquote(u.password or ""),
            secure=u.scheme == "https",
            **client_kwargs,
        )
        try:
            admin = clickhouse_connect.get_client(**conn)
            admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")
            admin.close()
            self._client = clickhouse_connect.get_client(database=database, **conn)
        except Exception as exc:
            raise StoreUnavailable(f"cannot reach ClickHouse at {u.hostname}: {exc}") from exc
        # A clickhouse-connect client holds one HTTP session; keep calls on it one at a time.
        self._lock = threading.Lock()

    def _select(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        with self._lock:
            try:
                return self._client.query_arrow(sql, parameters=dict(params or {}))
            except Exception as exc:
                raise StoreUnavailable(str(exc).strip()[:500]) from exc

    def _command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            try:
                self._client.command(sql, parameters=dict(params or {}))
            except Exception as exc:
                raise StoreUnavailable(str(exc).strip()[:500]) from exc

    def _insert(self, table: str, data: pa.Table) -> None:
        with self._lock:
            try:
                self._client.insert_arrow(table, data)
            except Exception as exc:
                raise StoreUnavailable(str(exc).strip()[:500]) from exc

    def close(self) -> None:
        self._client.close()
