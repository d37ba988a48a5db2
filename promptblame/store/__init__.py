"""The one door to ClickHouse: `open_store(settings)` picks the transport and migrates."""

from __future__ import annotations

from promptblame.settings import Settings
from promptblame.store.base import ApiKeyRecord, Store
from promptblame.store.filters import BUILTIN_METRICS, ResponseFilter

__all__ = ["BUILTIN_METRICS", "ApiKeyRecord", "ResponseFilter", "Store", "open_store"]


def open_store(settings: Settings, *, migrate: bool = True) -> Store:
    """The server store when a ClickHouse URL is set, else the embedded chDB store."""
    store: Store
    if settings.clickhouse_url:
        from promptblame.store.server import ServerStore

        store = ServerStore(settings.clickhouse_url, settings.database)
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
