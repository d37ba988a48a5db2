"""The refresh-ahead cache behind resolve and the key check: a key in use is re-read before it
expires, in the background, and never served older than its ttl."""

from __future__ import annotations

import threading

import pytest

from promptblame.refresh_ahead import Miss, RefreshAhead


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Source:
    """What the store would answer: a value per key that a test changes, and the reads made."""

    def __init__(self) -> None:
        self.value = "v1"
        self.reads: list[str] = []
        self.gate: threading.Event | None = None  # set: a read waits for it

    def load(self, key: str) -> str:
        self.reads.append(key)
        if self.gate is not None:
            assert self.gate.wait(5)
        return self.value


def settle(cache: RefreshAhead[str, str]) -> None:
    """Waits until the background re-reads queued so far are done."""
    if cache._worker is not None:
        cache._worker.submit(lambda: None).result(5)


def test_a_key_in_use_is_reread_in_the_background_and_never_older_than_ttl() -> None:
    clock, src = Clock(), Source()
    cache = RefreshAhead(10.0, src.load, clock=clock)
    with pytest.raises(Miss):
        cache.get("a", block=False)  # cold: the caller must wait elsewhere
    assert cache.get("a") == "v1" and src.reads == ["a"]
    clock.now = 4.9
    assert cache.get("a", block=False) == "v1" and src.reads == ["a"]  # first half: no read
    src.value = "v2"
    clock.now = 6.0  # second half: answers at once with what it has, re-reads behind
    assert cache.get("a", block=False) == "v1"
    settle(cache)
    assert src.reads == ["a", "a"]
    assert cache.get("a", block=False) == "v2"  # the re-read value, aged from its read
    clock.now = 6.0 + 10.0  # nobody asked for a whole ttl: expired, not served stale
    with pytest.raises(Miss):
        cache.get("a", block=False)


def test_one_reread_at_a_time_per_key() -> None:
    clock, src = Clock(), Source()
    cache = RefreshAhead(10.0, src.load, clock=clock)
    cache.get("a")
    src.gate = threading.Event()
    clock.now = 7.0
    for _ in range(50):
        assert cache.get("a", block=False) == "v1"
    src.gate.set()
    settle(cache)
    assert src.reads == ["a", "a"]


def test_a_read_begun_before_an_invalidation_is_not_kept() -> None:
    """A label move invalidates while a background re-read holds the old pointer: keeping it
    would serve the moved-away version for another ttl."""
    clock, src = Clock(), Source()
    cache = RefreshAhead(10.0, src.load, clock=clock)
    cache.get("a")
    src.gate = threading.Event()
    clock.now = 7.0
    cache.get("a", block=False)  # the re-read starts and waits, holding "v1"
    cache.invalidate("a")
    src.value = "v2"
    src.gate.set()
    settle(cache)
    with pytest.raises(Miss):
        cache.get("a", block=False)
    src.gate = None
    assert cache.get("a") == "v2"


def test_a_failed_reread_keeps_the_value_until_it_expires() -> None:
    clock, src = Clock(), Source()
    calls = []

    def flaky(key: str) -> str:
        calls.append(key)
        if len(calls) > 1:
            raise ConnectionError("store down")
        return src.load(key)

    cache = RefreshAhead(10.0, flaky, clock=clock)
    cache.get("a")
    clock.now = 8.0
    assert cache.get("a", block=False) == "v1"
    settle(cache)
    assert len(calls) == 2 and cache.get("a", block=False) == "v1"
    clock.now = 10.0
    with pytest.raises(ConnectionError):
        cache.get("a")


def test_ttl_zero_reads_every_time() -> None:
    src = Source()
    cache = RefreshAhead(0.0, src.load)
    cache.get("a")
    cache.get("a")
    assert src.reads == ["a", "a"]
