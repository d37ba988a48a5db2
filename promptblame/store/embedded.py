"""EmbeddedStore: the ClickHouse engine in-process (chDB) over a data directory.

chDB lets one process own one data path. We take an flock on the directory first so a second
process gets a clear `DataDirLocked` (chDB's own error says only "Error initializing").
Connections to the path run in parallel: one for the writer, so a large insert never stalls
the API's queries, and `READERS` for reads, so two reads (two requests, or a page's two
threads) run at once: a connection runs one query at a time.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import chdb
import pyarrow as pa

from promptblame.errors import DataDirLocked, StoreUnavailable
from promptblame.store.base import Store

_LOCK_NAME = "promptblame.lock"
READERS = 2  # read connections: one per core of the machines we measure on
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n"})

log = logging.getLogger(__name__)


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """chDB reads parameter values as escaped text, as the HTTP interface does."""
    return {
        k: v.translate(_ESCAPES) if isinstance(v, str) else v for k, v in (params or {}).items()
    }


class EmbeddedStore(Store):
    kind = "embedded"
    exclusive = True  # the directory's lock: no other process writes to it

    def __init__(self, data_dir: Path, database: str = "promptblame") -> None:
        super().__init__()
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.database = database
        self._lockfile = _take_lock(self.data_dir)
        try:
            self._write = chdb.connect(str(self.data_dir))  # type: ignore[no-untyped-call]
            self._readers = [chdb.connect(str(self.data_dir)) for _ in range(READERS)]  # type: ignore[no-untyped-call]
        except Exception as exc:
            self._lockfile.close()
            raise StoreUnavailable(f"cannot open chDB at {self.data_dir}: {exc}") from exc
        self._write_lock = threading.Lock()
        self._write.query(f"CREATE DATABASE IF NOT EXISTS {database}")
        self._write.query(f"USE {database}")
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()  # read connections not in use
        for conn in self._readers:
            conn.query(f"USE {database}")
            self._idle.put(conn)

    def _select(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        conn = self._idle.get()
        try:
            return conn.query(sql, "Arrowtable", params=_params(params))
        except Exception as exc:
            raise _translate(exc) from exc
        finally:
            self._idle.put(conn)

    def _command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        with self._write_lock:
            try:
                self._write.query(sql, "Null", params=_params(params))
            except Exception as exc:
                raise _translate(exc) from exc

    def _insert(self, table: str, data: pa.Table) -> None:
        # chDB's Python() table function reads the local variable named `data` by reference.
        # The arrow layout is the table's column order (schema.INSERTABLE), so no column list;
        # one thread: a batch this size gains nothing from a parallel pipeline's set-up.
        sql = f"INSERT INTO {table} SELECT * FROM Python(data) SETTINGS max_threads = 1"
        with self._write_lock:
            try:
                self._write.query(sql, "Null")
            except Exception as exc:
                raise _translate(exc) from exc

    def close(self) -> None:
        try:
            self.save_marks()
        except Exception:  # an older mark only makes the next start's first run redo more
            log.warning("could not write the scored-table job's marks on close", exc_info=True)
        with self._write_lock:
            busy = [self._idle.get() for _ in self._readers]  # waits for reads under way
            for conn in (*busy, self._write):
                try:
                    conn.close()
                except Exception:  # noqa: S112 - closing is best effort
                    continue
            self._lockfile.close()


def _take_lock(data_dir: Path) -> IO[str]:
    f = (data_dir / _LOCK_NAME).open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise DataDirLocked(
            f"the data directory {data_dir} is in use by {holder} (usually a running"
            " `promptblame serve`). Stop it first, or run this against that server's API."
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    return f


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, ValueError | TypeError):
        return exc
    return StoreUnavailable(str(exc).strip().splitlines()[0][:500])
