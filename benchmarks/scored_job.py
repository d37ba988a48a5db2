"""The scored-table job under ingest, on a store built by `read_speed.py build` (issue 18).

Every aggregate read runs the scored-table job first (read your writes), so its cost under
ingest is on the path of every request. This inserts `--batches` batches of `--rows` new
responses and their scores (received now, timed now) and times the job run after each, with its
slowest statements. `--ids uuid` gives the events random ids (UUID4, as many apps send) instead
of ids that sort in time order: new ids are looked up in id-ordered tables (`scores`,
`response_keys`), where random ids touch nearly every granule.

    .venv/bin/python benchmarks/scored_job.py --keep COPY [--batches 4 --rows 2000 --ids uuid]

It writes into the directory: run it on a copy.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import analysis_speed
import read_speed

from promptblame.store.embedded import EmbeddedStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keep", type=Path, required=True, help="a copy of a read_speed.py store")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--rows", type=int, default=2000, help="responses (and scores) a batch")
    ap.add_argument("--ids", choices=["ordered", "uuid"], default="ordered")
    args = ap.parse_args()

    store = EmbeddedStore(args.keep, "promptblame")
    store.migrate()
    log: list[tuple[float, str]] = []
    for name in ("_select", "_command"):
        call = getattr(store, name)

        def timed(sql: str, params: Any = None, _call: Any = call) -> Any:
            t = time.perf_counter()
            try:
                return _call(sql, params)
            finally:
                log.append((time.perf_counter() - t, " ".join(sql.split())))

        setattr(store, name, timed)

    def run(label: str) -> float:
        log.clear()
        t = time.perf_counter()
        store.materialize_scores()
        took = time.perf_counter() - t
        print(f"{label}: job run {took * 1000:.0f} ms")
        for d, sql in sorted(log, reverse=True)[:3]:
            print(f"    {d * 1000:6.0f} ms  {sql[:110]}")
        return took

    run("before any new rows (sums the cells on a fresh copy)")
    rng = np.random.default_rng(1)
    times = []
    for k in range(args.batches):
        now = datetime.now(UTC)
        offset = (now - analysis_speed.START).total_seconds()
        responses, scores = read_speed.build_chunk(rng, 0, args.rows, (offset - 1, offset))
        if args.ids == "uuid":
            ids = [str(uuid.uuid4()) for _ in range(args.rows)]
        else:
            ids = [f"n{now:%Y%m%d%H%M%S%f}-{i:06d}" for i in range(args.rows)]
        received = pa.array([now] * args.rows, pa.timestamp("ms", tz="UTC"))
        for table in ("responses", "scores"):
            t = responses if table == "responses" else scores
            t = t.set_column(1, "event_id", pa.array(ids))
            t = t.set_column(t.schema.get_field_index("received_at"), "received_at", received)
            store.insert(table, t)
        times.append(run(f"after batch {k + 1} of {args.rows} {args.ids} ids"))
    times.sort()
    print(
        f"job run after each batch: median {times[len(times) // 2] * 1000:.0f} ms,"
        f" max {times[-1] * 1000:.0f} ms ({args.batches} batches of {args.rows}, {args.ids} ids)"
    )
    store.close()


if __name__ == "__main__":
    main()
