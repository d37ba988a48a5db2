"""Per-key rate limiting: one token bucket per API key id.

Each request takes a token; a bucket holds at most `burst` tokens and refills at `rate` per
second. An empty bucket means 429 with `Retry-After` (whole seconds until a token is back), so
one runaway client slows down alone instead of starving the others. In-process: with several
api processes each enforces the limit on its own share of the traffic.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from promptblame.errors import RateLimited

_MAX_BUCKETS = 10_000


class TokenBuckets:
    def __init__(
        self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """Take a token: 0.0 when allowed, else the seconds until one is available."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._buckets) > _MAX_BUCKETS:
                self._forget_full(now)
        return wait

    def check(self, key: str) -> None:
        """Raise RateLimited (→ 429 + Retry-After) when `key` is over its rate."""
        wait = self.take(key)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise RateLimited(
                f"API key {key} is over its rate limit of {self.rate:g} requests/s"
                f" (burst {self.burst}; PROMPTBLAME_RATE_LIMIT_PER_SECOND,"
                f" PROMPTBLAME_RATE_LIMIT_BURST); retry in {retry_after} s",
                retry_after=retry_after,
            )

    def _forget_full(self, now: float) -> None:
        """Buckets that have refilled completely carry no state worth keeping."""
        full = [
            k
            for k, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
