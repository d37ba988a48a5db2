"""A small Python client for apps: log responses and scores without ever waiting on the network.

    from promptblame.ingest.client import Client

    pb = Client("http://127.0.0.1:8000", api_key="pb_...", app="support-bot")
    with pb.trace(model="gpt-4o", prompt_id="answer", prompt_version="v7", input=q) as t:
        t.output = call_the_model(q)
    pb.log_score(t.event_id, "thumbs_up", 1)

Why it is built this way:

- `log_response` / `log_score` only append to a bounded in-memory buffer and return: an LLM
  app must not slow down, or fall over, because its logging backend is slow or down.
- The buffer is bounded (`max_queue` events). When it is full the **newest** event is dropped
  and counted in `stats().dropped` (and a warning is logged, at most once a minute): memory
  stays bounded and the events already waiting keep their order.
- One background thread sends batches of up to `batch_size` events, or whatever is waiting
  after `flush_interval` seconds, gzipped.
- Event ids are made here (uuid4 unless given) before the first attempt, so a retried batch
  is the same batch: the server keeps one row per event id, retries never double-count.
- Connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff and full
  jitter, never sooner than the server's `Retry-After`, for at most `retry_for` seconds per
  batch; then the batch is counted as `failed`. Other 4xx mean the events themselves are
  wrong: not retried, counted as `rejected` and logged with the server's reasons (events
  rejected one by one in a 207 are logged and counted the same way). A 413 (batch over the
  server's size limit) is resent in halves.
- `flush(timeout)` waits until everything logged so far was answered; `close()` flushes and
  stops the thread; an `atexit` hook closes every open client (bounded by `exit_timeout`).
"""

from __future__ import annotations

import atexit
import functools
import gzip
import inspect
import json
import logging
import random
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

import httpx

from promptblame.ingest.prompt_cache import Prompt, PromptCache

log = logging.getLogger("promptblame.client")

F = TypeVar("F", bound=Callable[..., Any])
_RETRY_STATUS = frozenset({408, 429})
_KINDS = {"responses": "/v1/responses", "scores": "/v1/scores"}


@dataclass(frozen=True)
class ClientStats:
    """Counts of events since the client started."""

    queued: int  # waiting in the buffer or being sent now
    sent: int  # acknowledged by the server (stored)
    dropped: int  # refused because the buffer was full (drop newest)
    rejected: int  # refused by the server (invalid event, 4xx); never retried
    failed: int  # given up after `retry_for` seconds of retries, or unsent at close()
    retries: int  # request attempts that were retried


class Client:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        app: str | None = None,
        defaults: dict[str, Any] | None = None,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        timeout: float = 10.0,
        retry_for: float = 300.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        exit_timeout: float = 5.0,
        prompt_cache_ttl: float = 60.0,
        prompt_timeout: float = 2.0,
        prompt_fallback_file: str | Path | None = None,
    ) -> None:
        """`app` and `defaults` fill fields that a logged response leaves out. `prompt_*`:
        see `get_prompt`."""
        if not 1 <= batch_size <= 10_000 or max_queue < 1:
            raise ValueError("batch_size must be 1-10,000 and max_queue at least 1")
        self._defaults = dict(defaults or {})
        if app:
            self._defaults["app"] = app
        self._max_queue, self._batch_size = max_queue, batch_size
        self._interval, self._retry_for = flush_interval, retry_for
        self._backoff_base, self._backoff_max = backoff_base, backoff_max
        self._exit_timeout = exit_timeout
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            },
        )
        self._prompts = PromptCache(
            httpx.Client(
                base_url=url.rstrip("/"),
                timeout=prompt_timeout,
                headers={"Authorization": f"Bearer {api_key}"},
            ),
            ttl=prompt_cache_ttl,
            timeout=prompt_timeout,
            fallback_file=prompt_fallback_file,
        )
        self._cond = threading.Condition()
        self._buffer: deque[tuple[str, dict[str, Any]]] = deque()
        self._in_flight = 0
        self._flushers = 0
        self._closing = False
        self._abort = threading.Event()  # close() timed out: stop retrying now
        self._counts = dict.fromkeys(("sent", "dropped", "rejected", "failed", "retries"), 0)
        self._last_drop_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="promptblame-client", daemon=True)
        self._thread.start()
        _OPEN.add(self)

    # ---- logging (never blocks on the network) ----------------------------------------------

    def get_prompt(
        self,
        prompt_id: str,
        *,
        label: str = "production",
        model: str | None = None,
        unit: str | None = None,
        fallback: str | None = None,
    ) -> Prompt:
        """The version `label` serves (to `model`), from a cache refreshed in the background;
        waits at most `prompt_timeout` s on a miss, then serves the last good copy, the
        bundled `prompt_fallback_file`, or `fallback` (flagged `is_fallback`). Raises
        PromptNotFound when the server says there is no such prompt or label."""
        return self._prompts.get(
            prompt_id, label=label, model=model or "", unit=unit or "", fallback=fallback
        )

    def log_response(self, **fields: Any) -> str:
        """Queue one response event; returns its event id (made here unless given).
        `prompt=` a Prompt from `get_prompt` logs exactly the prompt id, version and variant
        that were served (and a fallback is tagged as one)."""
        event = {**self._defaults, **_with_prompt(fields)}
        event.setdefault("event_id", uuid.uuid4().hex)
        event.setdefault("ts", datetime.now(UTC))
        self._put("responses", event)
        return str(event["event_id"])

    def log_score(
        self,
        event_id: str,
        name: str,
        value: float,
        *,
        source: str = "app",
        comment: str = "",
        ts: datetime | None = None,
    ) -> None:
        """Queue one score of a response (it may be logged before or after the response)."""
        score: dict[str, Any] = {"event_id": event_id, "name": name, "value": value}
        score.update(source=source, comment=comment, ts=ts or datetime.now(UTC))
        self._put("scores", score)

    def trace(self, **fields: Any) -> Trace:
        """Time one LLM call and log it on exit: as `with client.trace(...) as t:` (set
        `t.output`, or any field with `t.set(...)`), or as a decorator, where a `str` return
        value becomes the output. An exception logs status "error" and is re-raised."""
        return Trace(self, fields)

    def _put(self, kind: str, item: dict[str, Any]) -> None:
        with self._cond:
            if self._closing:
                self._counts["dropped"] += 1
                return
            if len(self._buffer) >= self._max_queue:
                self._counts["dropped"] += 1
                now = time.monotonic()
                warn = now - self._last_drop_warning > 60
                if warn:
                    self._last_drop_warning = now
            else:
                warn = False
                self._buffer.append((kind, item))
                if len(self._buffer) >= self._batch_size:
                    self._cond.notify_all()
        if warn:
            log.warning(
                "promptblame client buffer full (%d events): dropping new events", self._max_queue
            )

    # ---- flush / close ---------------------------------------------------------------------

    def stats(self) -> ClientStats:
        with self._cond:
            return ClientStats(queued=len(self._buffer) + self._in_flight, **self._counts)

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is buffered now and wait until it was answered. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushers += 1
            self._cond.notify_all()
            try:
                while self._buffer or self._in_flight:
                    if not self._thread.is_alive():
                        return False
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left if left is not None else 1.0)
                return True
            finally:
                self._flushers -= 1

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to `timeout` s, default `exit_timeout`), then stop. Events still unsent
        are counted as failed. Idempotent."""
        timeout = self._exit_timeout if timeout is None else timeout
        if self._thread.is_alive():
            self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._abort.set()
        self._thread.join(max(timeout, 1.0))
        with self._cond:
            self._counts["failed"] += len(self._buffer)
            self._buffer.clear()
        self._http.close()
        self._prompts.close()
        _OPEN.discard(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the sender thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: (
                        self._closing
                        or (
                            self._buffer
                            and (self._flushers or len(self._buffer) >= self._batch_size)
                        )
                    ),
                    timeout=self._interval,
                )
                if self._closing and (self._abort.is_set() or not self._buffer):
                    return
                batch = [
                    self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
                ]
                self._in_flight = len(batch)
            try:
                for kind in _KINDS:
                    items = [item for k, item in batch if k == kind]
                    if items:
                        self._send(kind, items)
            except Exception:  # never let the thread die: count and go on
                log.exception("promptblame client: unexpected error while sending")
                self._count("failed", len(batch))
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()

    def _send(self, kind: str, items: list[dict[str, Any]]) -> None:
        body = gzip.compress(json.dumps({kind: items}, default=_json_default).encode(), 5)
        give_up = time.monotonic() + self._retry_for
        attempt = 0
        while True:
            wait: float | None
            try:
                r = self._http.post(_KINDS[kind], content=body)
            except httpx.HTTPError as exc:
                reason, wait = f"{type(exc).__name__}: {exc}", None
            else:
                if r.status_code < 300:
                    self._settle(kind, items, r)
                    return
                if r.status_code == 413 and len(items) > 1:  # too big: send it in halves
                    half = len(items) // 2
                    self._send(kind, items[:half])
                    self._send(kind, items[half:])
                    return
                if r.status_code < 500 and r.status_code not in _RETRY_STATUS:
                    self._count("rejected", len(items))
                    log.error(
                        "promptblame refused %d %s (HTTP %d, not retried): %s",
                        len(items),
                        kind,
                        r.status_code,
                        r.text[:2000],
                    )
                    return
                reason, wait = f"HTTP {r.status_code}", _retry_after(r)
            delay = random.uniform(0, min(self._backoff_max, self._backoff_base * 2**attempt))
            delay = max(delay, wait or 0.0)
            if time.monotonic() + delay > give_up or self._abort.is_set():
                self._count("failed", len(items))
                log.error("promptblame: gave up on %d %s after %s", len(items), kind, reason)
                return
            self._count("retries", 1)
            attempt += 1
            if self._abort.wait(delay):  # close() ran out of time
                self._count("failed", len(items))
                return

    def _settle(self, kind: str, items: list[dict[str, Any]], r: httpx.Response) -> None:
        rejected = r.json().get("rejected", []) if r.status_code == 207 else []
        self._count("sent", len(items) - len(rejected))
        if rejected:
            self._count("rejected", len(rejected))
            log.error(
                "promptblame rejected %d of %d %s: %s",
                len(rejected),
                len(items),
                kind,
                json.dumps(rejected)[:2000],
            )

    def _count(self, name: str, n: int) -> None:
        with self._cond:
            self._counts[name] += n


class Trace:
    """One timed LLM call; see `Client.trace`."""

    def __init__(self, client: Client, fields: dict[str, Any]) -> None:
        self._client = client
        self.fields = _with_prompt(fields)
        self.fields.setdefault("event_id", uuid.uuid4().hex)
        self.event_id: str = str(self.fields["event_id"])
        self._start = 0.0

    @property
    def output(self) -> str:
        return str(self.fields.get("output", ""))

    @output.setter
    def output(self, text: str) -> None:
        self.fields["output"] = text

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)

    def __enter__(self) -> Trace:
        self.fields.setdefault("ts", datetime.now(UTC))
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.fields.setdefault("latency_ms", (time.perf_counter() - self._start) * 1000)
        if exc_type is not None:
            self.fields["status"] = "error"
            self.fields.setdefault("error_type", exc_type.__name__)
        self._client.log_response(**self.fields)

    def __call__(self, func: F) -> F:
        """As a decorator: a fresh trace (and event id) per call."""
        fields = {k: v for k, v in self.fields.items() if k != "event_id"}

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with Trace(self._client, fields) as t:
                    result = await func(*args, **kwargs)
                    if isinstance(result, str):
                        t.output = result
                    return result

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with Trace(self._client, fields) as t:
                result = func(*args, **kwargs)
                if isinstance(result, str):
                    t.output = result
                return result

        return cast(F, run)


def _with_prompt(fields: dict[str, Any]) -> dict[str, Any]:
    """`prompt=` a served Prompt → the response fields that say exactly what was served."""
    out = dict(fields)
    prompt: Prompt | None = out.pop("prompt", None)
    if prompt is None:
        return out
    out["prompt_id"] = prompt.prompt_id
    extra = {"prompt_label": prompt.label} if prompt.label else {}
    if prompt.version:
        out["prompt_version"] = prompt.version
    if prompt.variant:
        out["variant"] = prompt.variant
    if prompt.experiment:
        out["experiment"] = prompt.experiment
    if prompt.is_fallback:
        extra["prompt_fallback"] = "true"
    if extra:
        out["tags"] = {**(out.get("tags") or {}), **extra}
    return out


def _json_default(v: object) -> str:
    """Dates as ISO 8601; anything else as its text, for the server to accept or reject per
    event (one odd value must not sink the whole batch here)."""
    return v.isoformat() if isinstance(v, datetime | date) else str(v)


def _retry_after(r: httpx.Response) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    value = r.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


_OPEN: weakref.WeakSet[Client] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for client in list(_OPEN):
        client.close()
