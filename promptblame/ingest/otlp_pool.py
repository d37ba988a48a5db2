"""OTLP exports decoded and mapped in worker processes, beside the event loop and the writer.

Mapping a span is ~30 µs of Python. In the server process that work holds the interpreter lock
which the event loop and the writer's INSERT calls need as well: under OTLP load the lock, not
the two cores, was the limit (benchmarks/README.md, "OTLP trace ingest"). Here the body goes to a
worker process and the Arrow rows come back (`otlp.export_rows`).

Workers are spawned, not forked (the server process runs chDB's threads), on the first export;
they keep what they imported out of the GC's passes and exit with the server, also after a
kill -9, by watching their parent. A worker that dies mid-export fails only the exports it
held, with a retryable 503 (nothing of them was stored); the next export starts a fresh pool.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from promptblame.errors import WorkerLost
from promptblame.ingest import otlp
from promptblame.ingest.contracts import IngestLimits


class OtlpPool:
    """`processes` = 0 runs the mapping in the caller (the event loop) instead."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None

    async def rows(
        self, body: bytes, is_json: bool, project_id: str, limits: IngestLimits
    ) -> otlp.Rows:
        if not self.processes:
            return otlp.export_rows(body, is_json, project_id, limits)
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_started,
                initargs=(os.getpid(),),
            )
        executor = self._executor
        try:
            return await asyncio.get_running_loop().run_in_executor(
                executor, otlp.export_rows, body, is_json, project_id, limits
            )
        except BrokenProcessPool:
            if self._executor is executor:
                self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)
            raise WorkerLost(
                "the worker process decoding this export died; nothing of it was stored, retry"
            ) from None

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _worker_started(parent: int) -> None:
    gc.collect()
    gc.freeze()  # imports live as long as the worker: keep them out of every GC pass
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    """A worker whose server was killed would otherwise wait for work forever."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
