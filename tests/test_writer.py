"""The group-commit writer coalesces concurrent submissions and never acks a failed insert."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from promptblame.errors import QueueFull, StoreUnavailable
from promptblame.ingest.contracts import ResponseEvent
from promptblame.ingest.rows import responses_table
from promptblame.ingest.writer import GroupCommitWriter
from promptblame.store import Store
from tests.helpers import event


def rows(lo: int, n: int) -> pa.Table:
    evs = [ResponseEvent.model_validate(event(i)) for i in range(lo, lo + n)]
    return responses_table("p", evs, datetime.now(UTC))


def test_submissions_queued_while_an_insert_runs_go_out_in_one_insert(embedded_store):
    gate = threading.Event()
    busy = threading.Event()
    sizes: list[int] = []

    def insert(table: str, data: pa.Table) -> None:
        busy.set()
        gate.wait(10)
        sizes.append(data.num_rows)
        embedded_store.insert(table, data)

    w = GroupCommitWriter(insert, max_queue_rows=10_000, max_batch_rows=10_000)
    first = w.submit("responses", rows(0, 5))
    assert busy.wait(10)  # the writer is inside the first INSERT; the rest queue behind it
    rest = [w.submit("responses", rows(5 + 10 * k, 10)) for k in range(8)]
    gate.set()
    for f in [first, *rest]:
        f.result(10)
    w.close()
    assert sizes == [5, 80]
    assert embedded_store.count("responses", "p") == 85


def test_batches_are_capped_at_max_batch_rows(embedded_store):
    gate = threading.Event()
    sizes: list[int] = []

    def insert(table: str, data: pa.Table) -> None:
        gate.wait(10)
        sizes.append(data.num_rows)

    w = GroupCommitWriter(insert, max_queue_rows=10_000, max_batch_rows=25)
    futures = [w.submit("responses", rows(10 * k, 10)) for k in range(6)]
    gate.set()
    for f in futures:
        f.result(10)
    w.close()
    assert max(sizes) <= 25 and sum(sizes) == 60


def test_a_failed_insert_fails_every_waiter_and_counts_the_failure():
    def insert(table: str, data: pa.Table) -> None:
        raise RuntimeError("disk full")

    w = GroupCommitWriter(insert, max_queue_rows=100, max_batch_rows=100)
    f = w.submit("responses", rows(0, 3))
    with pytest.raises(StoreUnavailable, match="disk full"):
        f.result(10)
    w.close()
    assert w.stats.failures == 1 and w.stats.queued_rows == 0


def test_a_full_queue_refuses_before_queueing_anything():
    gate = threading.Event()

    def insert(table: str, data: pa.Table) -> None:
        gate.wait(10)

    w = GroupCommitWriter(insert, max_queue_rows=15, max_batch_rows=100)
    a = w.submit("responses", rows(0, 10))
    with pytest.raises(QueueFull):
        w.submit("responses", rows(10, 10))
    gate.set()
    a.result(10)
    w.close()
    assert w.stats.rejected_full == 1


def test_close_writes_what_is_queued_then_refuses_new_work(embedded_store):
    w = GroupCommitWriter(embedded_store.insert, max_queue_rows=1000, max_batch_rows=1000)
    f = w.submit("responses", rows(0, 7))
    w.close()
    assert f.done() and f.exception() is None
    assert embedded_store.count("responses", "p") == 7
    with pytest.raises(StoreUnavailable):
        w.submit("responses", rows(7, 1))


def recording(store: Store) -> tuple[Callable[[str, pa.Table], None], list[int]]:
    """An insert that writes to the real store and records each INSERT's row count."""
    sizes: list[int] = []

    def insert(table: str, data: pa.Table) -> None:
        sizes.append(data.num_rows)
        store.insert(table, data)

    return insert, sizes


def test_a_lone_request_is_written_at_once_however_long_the_linger(embedded_store):
    insert, sizes = recording(embedded_store)
    w = GroupCommitWriter(insert, max_queue_rows=10_000, max_batch_rows=10_000, linger=5.0)
    with w.incoming():
        done = w.submit("responses", rows(0, 3))
    started = time.monotonic()
    done.result(10)
    assert time.monotonic() - started < 2.0  # nothing else was on its way: no waiting
    w.close()
    assert sizes == [3]


def test_requests_on_their_way_join_the_insert_while_they_outnumber_the_queued(embedded_store):
    insert, sizes = recording(embedded_store)
    w = GroupCommitWriter(insert, max_queue_rows=10_000, max_batch_rows=10_000, linger=5.0)
    all_announced = threading.Barrier(3)
    go = threading.Event()
    futures = []

    def request(k: int) -> None:
        with w.incoming():
            all_announced.wait(10)
            if k:  # the others are still being read when the first one is queued
                go.wait(10)
            futures.append(w.submit("responses", rows(10 * k, 10)))

    threads = [threading.Thread(target=request, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # request 0 is queued; 2 more on their way outnumber it: the writer waits
    assert sizes == []
    go.set()
    for t in threads:
        t.join(10)
    for f in futures:
        f.result(10)
    w.close()
    # once two were queued and one was still on its way the writer went: at most two INSERTs
    assert sum(sizes) == 30 and len(sizes) <= 2 and sizes[0] >= 20
    assert embedded_store.count("responses", "p") == 30


def test_the_linger_is_bounded_when_an_announced_request_never_arrives(embedded_store):
    insert, sizes = recording(embedded_store)
    w = GroupCommitWriter(insert, max_queue_rows=10_000, max_batch_rows=10_000, linger=0.2)
    release = threading.Event()
    stuck_entered = threading.Event()

    def stuck() -> None:  # a slow client: announced, still sending its body
        with w.incoming():
            stuck_entered.set()
            release.wait(10)

    a, b = threading.Thread(target=stuck), threading.Thread(target=stuck)
    a.start()
    b.start()
    assert stuck_entered.wait(10)
    time.sleep(0.05)
    started = time.monotonic()
    w.submit("responses", rows(0, 4)).result(10)
    assert 0.1 <= time.monotonic() - started < 2.0  # waited for them, but only `linger`
    release.set()
    a.join(10)
    b.join(10)
    w.close()
    assert sizes == [4]
