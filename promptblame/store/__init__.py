"""The one door to ClickHouse: `open_store(settings)` picks the transport and migrates."""

from __future__ import annotations

from promptblame.settings import Settings
from promptblame.store.base import ApiKeyRecord, Store
from promptblame.store.filters import BUILTIN_METRICS, ResponseFilter

__all__ = [
    "BUILTIN_METRICS",
    "ApiKeyRecord",
    "ResponseFilter",
    "Store",
    "open_store",
    "store_exists",
]


def store_exists(settings: Settings) -> bool:
    """Whether the embedded data directory already holds promptblame's database (a server
    store always counts: its database is the operator's to create). Read-only commands check
    this so that a wrong directory is an error, not a new empty store."""
    if settings.clickhouse_url:
        return True
    return (settings.data_dir / "metadata" / f"{settings.database}.sql").is_file()


def open_store(settings: Settings, *, migrate: bool = True) -> Store:
    """The server store when a ClickHouse URL is set, else the embedded chDB store."""
    store: Store
    if settings.clickhouse_url:
        from promptblame.store.server import ServerStore

        store = ServerStore(
            settings.clickhouse_url, settings.database, cluster=settings.clickhouse_cluster
        )
    else:
        from promptblame.store.embedded import EmbeddedStore

        store = EmbeddedStore(settings.data_dir, settings.database)
    if migrate:
        try:
            store.migrate()
        except Exception:
            store.close()
            raise
    return store
