"""Group-commit writer: every request's rows wait in one queue; a single thread writes all that
is queued in one INSERT per table, then acknowledges each request.

ClickHouse wants few large inserts (each INSERT is a new part: ~5 ms whatever its size, and every
part is merged again later), so batch size grows with load by itself while a lone request waits
only for its own insert. Requests still being read or decoded announce themselves (`incoming`):
while more of them are on their way than are queued, the writer waits for them, up to `linger`
seconds, so a busy service writes fewer, larger parts. A request is acknowledged only after the
INSERT holding its rows returned: a 2xx means the rows are stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa

from promptblame.errors import QueueFull, StoreUnavailable

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    table: str
    rows: pa.Table
    done: Future[None] = field(default_factory=Future)


@dataclass
class WriterStats:
    """Read by /metrics; updated only by the writer thread (and submit for rejections)."""

    queued_rows: int = 0
    inserts: int = 0
    rows_written: int = 0
    failures: int = 0
    rejected_full: int = 0
    last_batch_rows: int = 0
    observe: Callable[[str, int, float], None] | None = None  # (table, rows, seconds)


class GroupCommitWriter:
    def __init__(
        self,
        insert: Callable[[str, pa.Table], None],
        *,
        max_queue_rows: int,
        max_batch_rows: int,
        linger: float = 0.0,
        stats: WriterStats | None = None,
    ) -> None:
        self._insert = insert
        self._max_queue_rows = max_queue_rows
        self._max_batch_rows = max_batch_rows
        self._linger = linger
        self.stats = stats or WriterStats()
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._incoming = 0
        self._thread = threading.Thread(target=self._run, name="group-commit-writer", daemon=True)
        self._thread.start()

    def submit(self, table: str, rows: pa.Table) -> Future[None]:
        """Queue rows; the future resolves once they are written (or fails with the reason)."""
        item = _Pending(table, rows)
        if rows.num_rows == 0:
            item.done.set_result(None)
            return item.done
        with self._cond:
            if self._closing:
                raise StoreUnavailable("the writer is shutting down")
            queued = self.stats.queued_rows  # includes rows being inserted right now
            # a lone request larger than the cap still goes through when nothing waits
            if queued and queued + rows.num_rows > self._max_queue_rows:
                self.stats.rejected_full += 1
                raise QueueFull(f"{self.stats.queued_rows} rows are waiting to be written")
            self._queue.append(item)
            self.stats.queued_rows += rows.num_rows
            self._cond.notify()
        return item.done

    @contextmanager
    def incoming(self) -> Iterator[None]:
        """Wrap the reading and decoding of a request up to its `submit` (not the wait after
        it): the writer may wait for it to join the next INSERT."""
        with self._cond:
            self._incoming += 1
        try:
            yield
        finally:
            with self._cond:
                self._incoming -= 1
                self._cond.notify()

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, write what is queued, stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def _take(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            # Wait for requests on their way while they outnumber the queued ones: under load
            # the INSERT grows, at most half the work in flight waits, a lone request never does.
            deadline = time.monotonic() + self._linger
            while (
                self._incoming > len(self._queue)
                and self.stats.queued_rows < self._max_batch_rows
                and not self._closing
                and (left := deadline - time.monotonic()) > 0
            ):
                self._cond.wait(left)
            batch: list[_Pending] = []
            rows = 0
            while self._queue and (
                not batch or rows + self._queue[0].rows.num_rows <= self._max_batch_rows
            ):
                item = self._queue.popleft()
                batch.append(item)
                rows += item.rows.num_rows
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            by_table: dict[str, list[_Pending]] = {}
            for item in batch:
                by_table.setdefault(item.table, []).append(item)
            for table, items in by_table.items():
                self._write(table, items)

    def _write(self, table: str, items: list[_Pending]) -> None:
        n = sum(i.rows.num_rows for i in items)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            data = pa.concat_tables([i.rows for i in items]) if len(items) > 1 else items[0].rows
            self._insert(table, data)
        except BaseException as exc:  # every waiter must hear about it
            error = exc
            log.exception("insert of %d rows into %s failed", n, table)
        elapsed = time.perf_counter() - started
        with self._cond:
            self.stats.queued_rows -= n
            if error is None:
                self.stats.inserts += 1
                self.stats.rows_written += n
                self.stats.last_batch_rows = n
            else:
                self.stats.failures += 1
        if error is None and self.stats.observe:
            self.stats.observe(table, n, elapsed)
        for item in items:
            if error is None:
                item.done.set_result(None)
            else:
                item.done.set_exception(
                    error if isinstance(error, StoreUnavailable) else StoreUnavailable(str(error))
                )
