"""A read-through cache whose hot keys are re-read in the background before they expire.

Resolve and the API-key check run on every app request, in the event loop. A plain TTL cache
makes one request per key and TTL wait for the store (a thread hop and a query: tens of
milliseconds under load), which is the whole p99. Here a value is trusted for `ttl` seconds; a hit
in its second half still answers at once and hands the key to one background thread to re-read,
so a key in steady use is never waited for and never older than `ttl` (Caffeine's
refreshAfterWrite below expireAfterWrite). Only a cold or expired key waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Miss(Exception):
    """The key has no usable value and the caller asked not to wait for the store."""


class RefreshAhead(Generic[K, V]):
    def __init__(
        self,
        ttl: float,
        load: Callable[[K], V],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self.ttl = ttl
        self._load = load
        self._clock = clock
        self._max = max_entries
        self._entries: dict[K, tuple[float, V]] = {}  # key → (read at, value)
        self._refreshing: set[K] = set()
        self._generation = 0  # bumped by invalidate: a read begun before it is not kept
        self._lock = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None

    def get(self, key: K, *, block: bool = True) -> V:
        """The key's value; with block=False raises Miss instead of reading the store."""
        hit = self._entries.get(key)
        if hit is not None:
            age = self._clock() - hit[0]
            if age < self.ttl:
                if age >= self.ttl / 2:
                    self._refresh_later(key)
                return hit[1]
        if not block:
            raise Miss
        return self.read(key)

    def read(self, key: K) -> V:
        """Reads the key now and keeps the value (unless invalidated meanwhile)."""
        with self._lock:
            generation = self._generation
        started = self._clock()
        value = self._load(key)
        with self._lock:
            if generation == self._generation:
                if len(self._entries) >= self._max and key not in self._entries:
                    self._entries.clear()  # bounded: unknown keys are cached too
                self._entries[key] = (started, value)
        return value

    def invalidate(self, key: K) -> None:
        with self._lock:
            self._generation += 1
            self._entries.pop(key, None)

    def _refresh_later(self, key: K) -> None:
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="refresh-ahead")
        self._worker.submit(self._refresh, key)

    def _refresh(self, key: K) -> None:
        try:
            self.read(key)
        except Exception:  # the old value stays until it expires; then a request reads it
            log.warning("background re-read of %r failed", key, exc_info=True)
        finally:
            with self._lock:
                self._refreshing.discard(key)
