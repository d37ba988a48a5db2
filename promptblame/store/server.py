"""ServerStore: the same SQL over HTTP to a ClickHouse server, through clickhouse-connect.

With a cluster name, schema statements are rewritten by store/cluster.py (ON CLUSTER,
Replicated engines, Distributed fronts) as they pass through `_command`, so migrations and any
runtime DELETE reach every shard; selects and inserts name the same tables as on one node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlparse

import clickhouse_connect
import pyarrow as pa

from promptblame.errors import StoreUnavailable
from promptblame.store.base import Store
from promptblame.store.cluster import CLUSTER_SESSION_SETTINGS, ClusterSchema

# A quorum insert refused because the previous one has not reached its quorum yet (inserts into
# a compare-and-set table are linearized on a cluster): wait a moment and insert again.
_QUORUM_BUSY = "UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE"
_QUORUM_RETRIES = 20


class ServerStore(Store):
    kind = "server"

    def __init__(
        self,
        url: str,
        database: str = "promptblame",
        *,
        cluster: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        super().__init__()
        u = urlparse(url)
        self.database = database
        self.cluster = ClusterSchema.from_migrations(cluster, database) if cluster else None
        if self.cluster:
            client_kwargs["settings"] = {
                **CLUSTER_SESSION_SETTINGS,
                **client_kwargs.get("settings", {}),
            }
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
            on_cluster = f" ON CLUSTER {cluster}" if cluster else ""
            admin.command(f"CREATE DATABASE IF NOT EXISTS {database}{on_cluster}")
            admin.close()
            self._client = clickhouse_connect.get_client(database=database, **conn)
        except Exception as exc:
            raise StoreUnavailable(f"cannot reach ClickHouse at {u.hostname}: {exc}") from exc
        # A clickhouse-connect client holds one HTTP session; keep calls on it one at a time.
        self._lock = threading.Lock()

    def _select(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        settings = dict(self.cluster.consistency_settings(sql)) if self.cluster else {}
        with self._lock:
            try:
                return self._client.query_arrow(
                    sql, parameters=dict(params or {}), settings=settings
                )
            except Exception as exc:
                raise StoreUnavailable(str(exc).strip()[:500]) from exc

    def _command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        if self.cluster is None:
            self._run(sql, params, {})
            return
        for statement in self.cluster.statements(sql):
            self._run(statement, params, self.cluster.consistency_settings(statement))

    def _run(self, sql: str, params: Mapping[str, Any] | None, settings: Mapping[str, Any]) -> None:
        self._retrying(
            lambda: self._client.command(
                sql, parameters=dict(params or {}), settings=dict(settings)
            )
        )

    def _retrying(self, call: Any) -> None:
        for attempt in range(_QUORUM_RETRIES + 1):
            with self._lock:
                try:
                    call()
                    return
                except Exception as exc:
                    if _QUORUM_BUSY not in str(exc) or attempt == _QUORUM_RETRIES:
                        raise StoreUnavailable(str(exc).strip()[:500]) from exc
            time.sleep(0.005 * (attempt + 1))

    def _insert(self, table: str, data: pa.Table) -> None:
        settings = (
            dict(self.cluster.consistency_settings(f"INSERT INTO {table}")) if self.cluster else {}
        )
        self._retrying(lambda: self._client.insert_arrow(table, data, settings=settings))

    def close(self) -> None:
        self._client.close()
