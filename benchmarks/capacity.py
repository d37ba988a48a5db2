"""Per-event costs for the capacity model (docs/scaling.md): everything it derives from.

Stores `--rows` realistic responses (ingest.py's generator: ~600 characters of input, ~700 of
output, 3-4 tags, its mix of apps/routes/versions; ids unique, texts from --templates distinct
batches) and one judge score each in an embedded store, in 10,000-row INSERTs as the writer does
under load, runs the scored-table job, and prints:

* ingest CPU per 1,000 events, split into decode + validate + arrow (what an api process does)
  and the INSERT plus the background merges it causes (what ClickHouse does), process CPU;
* bytes on disk per response, per score and per `scored` row (system.parts, active parts, after
  the merges settled), the largest columns, and the skip indexes;
* dimension cells per hour (distinct app x route x environment x prompt/model version at this
  traffic mix): what one metric's hourly statistics tables hold per hour;
* query costs at half and at all of the rows (a FINAL group-by of versions, the explorer's
  newest page, a text search): how raw reads grow with data;
* the process's peak RSS.

Run: .venv/bin/python benchmarks/capacity.py [--rows 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import PROJECT, make_bodies

from promptblame.ingest.decode import decode_batch
from promptblame.ingest.rows import responses_table
from promptblame.store import ResponseFilter
from promptblame.store.embedded import EmbeddedStore
from promptblame.store.schema import SCORES_ARROW

BATCH = 1_000  # events per request body
INSERT_ROWS = 10_000


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def wait_for_merges(store: EmbeddedStore) -> None:
    while store._rows("SELECT count() AS n FROM system.merges")[0]["n"]:
        time.sleep(0.2)
    while store._rows("SELECT count() AS n FROM system.mutations WHERE NOT is_done")[0]["n"]:
        time.sleep(0.2)


def sizes(store: EmbeddedStore, table: str) -> tuple[int, int, int]:
    r = store._rows(
        "SELECT sum(rows) AS rows, sum(bytes_on_disk) AS disk, sum(data_uncompressed_bytes) AS raw"
        " FROM system.parts WHERE database = currentDatabase() AND table = {t:String} AND active",
        t=table,
    )[0]
    return int(r["rows"] or 0), int(r["disk"] or 0), int(r["raw"] or 0)


def timed(fn: object, repeats: int = 3) -> float:
    """Median ms of `repeats` runs after one warm-up (the query condition cache off)."""
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times[1:])


def query_costs(store: EmbeddedStore) -> dict[str, float]:
    for conn in store._readers:  # the reading connections
        conn.query("SET use_query_condition_cache = 0", "Null")
    f = ResponseFilter()
    return {
        "versions (FINAL group-by)": timed(lambda: store.version_counts(PROJECT, f)),
        "explorer newest page": timed(
            lambda: store.list_responses(PROJECT, f, limit=51, columns=("event_id", "ts"))
        ),
        "explorer text search (rare)": timed(
            lambda: store.list_responses(
                PROJECT, f, limit=51, columns=("event_id", "ts"), search="zz-not-there-zz"
            )
        ),
        "count() FINAL": timed(
            lambda: store._rows(
                "SELECT count() FROM responses FINAL SETTINGS use_query_condition_cache = 0"
            )
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--templates", type=int, default=50, help="distinct 1,000-event batches")
    ap.add_argument("--keep", type=Path, help="build the store here and keep it")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp()) if args.keep is None else args.keep
    rng = random.Random(11)
    bodies = make_bodies(rng, run="cap", n=args.templates, batch=BATCH)
    print(f"{args.rows:,} responses of ~{bodies.mean_event_bytes:,.0f} bytes of JSON each")
    store = EmbeddedStore(tmp / "data")
    try:
        store.migrate()
        decode_cpu = insert_cpu = 0.0
        pending: list[object] = []
        half: dict[str, float] = {}
        t0 = time.perf_counter()
        for seq in range(args.rows // BATCH):
            c = cpu()
            pending += decode_batch(bodies.body(seq), "responses", max_events=10**6).events
            if len(pending) >= INSERT_ROWS:
                table = responses_table(PROJECT, pending, datetime.now(UTC))  # type: ignore[arg-type]
                pending.clear()
                c2 = cpu()
                decode_cpu += c2 - c
                store.insert("responses", table)
                scores = pa.table(
                    {
                        "project_id": table["project_id"],
                        "event_id": table["event_id"],
                        "name": pa.array(["quality"] * table.num_rows),
                        "source": pa.array(["evaluator:judge@1"] * table.num_rows),
                        "value": pa.array([rng.random() for _ in range(table.num_rows)]),
                        "comment": pa.array([""] * table.num_rows),
                        "ts": table["ts"],
                        "received_at": table["received_at"],
                    },
                    schema=SCORES_ARROW,
                )
                store.insert("scores", scores)
                insert_cpu += cpu() - c2
            else:
                decode_cpu += cpu() - c
            if (seq + 1) * BATCH == args.rows // 2:
                wait_for_merges(store)
                half = query_costs(store)
        c = cpu()
        wait_for_merges(store)
        insert_cpu += cpu() - c  # the merges the inserts caused
        build_s = time.perf_counter() - t0
        c = cpu()
        store.materialize_scores()
        wait_for_merges(store)
        scored_cpu = cpu() - c
        n = args.rows
        print(f"built in {build_s:.0f} s")
        print("\ningest CPU per 1,000 events (process CPU, all threads)")
        print(f"  decode + validate + arrow (api process)   {decode_cpu / n * 1e6:6.1f} ms")
        print(f"  INSERT responses+scores + merges (engine) {insert_cpu / n * 1e6:6.1f} ms")
        print(f"  scored-table job (join, insert, merges)   {scored_cpu / n * 1e6:6.1f} ms")
        print("\non disk (active parts, merges settled)")
        for table in ("responses", "scores", "scored"):
            rows, disk, raw = sizes(store, table)
            if rows:
                print(
                    f"  {table:<10} {rows:>10,} rows  {disk / rows:7.1f} bytes/row on disk"
                    f"  ({raw / rows:7.1f} uncompressed, x{raw / max(disk, 1):.1f})"
                )
        for col in store._rows(
            "SELECT name, sum(data_compressed_bytes) AS b FROM system.columns"
            " WHERE database = currentDatabase() AND table = 'responses'"
            " GROUP BY name ORDER BY b DESC LIMIT 4"
        ):
            print(f"    responses.{col['name']:<16} {col['b'] / n:7.1f} bytes/row")
        for i in store._rows(
            "SELECT name, data_compressed_bytes AS b FROM system.data_skipping_indices"
            " WHERE database = currentDatabase() AND table = 'responses'"
        ):
            print(f"    index {i['name']:<20} {i['b'] / n:7.1f} bytes/row")
        cells = store._rows(
            "SELECT avg(c) AS cells FROM (SELECT toStartOfHour(ts) AS h, uniqExact(app, route,"
            " environment, prompt_id, prompt_version, model, model_version, provider) AS c"
            " FROM responses GROUP BY h)"
        )[0]["cells"]
        print(f"\ndimension cells per hour at this mix: {cells:,.0f}")
        full = query_costs(store)
        print(f"\nquery ms (median of 3)      at {n // 2:>9,} rows  at {n:>9,} rows")
        for name, ms in full.items():
            print(f"  {name:<28} {half.get(name, float('nan')):14.0f} {ms:14.0f}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak RSS of this process: {peak:,.0f} MiB")
    finally:
        store.close()
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
