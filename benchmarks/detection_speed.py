"""Detection speed: one detection-and-attribution pass over 10M stored responses and 50 series.

Builds, in an embedded store, 14 days of traffic: 10 apps x 3 routes, 10M responses, each scored
under one of 5 metrics (so 10 x 5 = 50 series of ~200k scores). App 0's prompt v2 replaces v1 on
day 10 with a 10-point regression on metric m0. Then times `run_detection` (cells query per
series, change points on the aggregate and per route, attribution, incident writes) and prints
PASS/MISS against the target: <= 10 s.

Run: .venv/bin/python benchmarks/detection_speed.py [--rows 10000000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from promptblame.analysis.detection import run_detection
from promptblame.settings import Settings
from promptblame.store import open_store
from promptblame.store.schema import RESPONSES_ARROW, SCORES_ARROW

DAYS = 14
APPS = [f"app{i}" for i in range(10)]
ROUTES = ["billing", "refunds", "shipping"]
METRICS = [f"m{i}" for i in range(5)]
CHUNK = 500_000
TARGET_S = 10.0
END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START = END - timedelta(days=DAYS)


def chunk(
    rng: np.random.Generator, lo: int, n: int, window: tuple[float, float]
) -> tuple[pa.Table, pa.Table]:
    secs = rng.uniform(*window, n)
    ts = np.datetime64(START.replace(tzinfo=None), "ms") + (secs * 1000).astype("int64")
    app = rng.integers(0, len(APPS), n)
    route = rng.integers(0, len(ROUTES), n)
    metric = rng.integers(0, len(METRICS), n)
    v2 = (app == 0) & (secs >= 10 * 86400)
    p = 0.85 - 0.10 * (v2 & (metric == 0))
    value = (rng.random(n) < p).astype("float64")
    ids = pa.array([f"e{i}" for i in range(lo, lo + n)])
    tsa = pa.array(ts.astype("datetime64[ms]"), pa.timestamp("ms", tz="UTC"))
    received = pa.array(
        (ts + np.timedelta64(2, "s")).astype("datetime64[ms]"), pa.timestamp("ms", tz="UTC")
    )
    cols = {
        "project_id": pa.array(["bench"] * n),
        "event_id": ids,
        "ts": tsa,
        "app": pa.array(np.array(APPS)[app]),
        "route": pa.array(np.array(ROUTES)[route]),
        "environment": pa.array(["prod"] * n),
        "prompt_id": pa.array(["answer"] * n),
        "prompt_version": pa.array(np.where(v2, "v2", "v1")),
        "model": pa.array(["gpt-4o"] * n),
        "status": pa.array(["ok"] * n),
        "tags": pa.array([[]] * n, RESPONSES_ARROW.field("tags").type),
        "received_at": received,
    }
    empty = pa.array([""] * n)
    responses = pa.Table.from_arrays(
        [
            cols[f.name].cast(f.type)
            if f.name in cols
            else pa.nulls(n, f.type)
            if pa.types.is_floating(f.type) or pa.types.is_integer(f.type)
            else empty
            for f in RESPONSES_ARROW
        ],
        schema=RESPONSES_ARROW,
    )
    scores = pa.Table.from_arrays(
        [
            cols["project_id"],
            ids,
            pa.array(np.array(METRICS)[metric]),
            pa.array(["app"] * n),
            pa.array(value),
            empty,
            tsa,
            received,
        ],
        schema=SCORES_ARROW,
    )
    return responses, scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pb-detect-"))
    settings = Settings(data_dir=tmp, database="bench", detection_window_days=DAYS)
    store = open_store(settings)
    try:
        rng = np.random.default_rng(20261124)
        t = time.perf_counter()
        slices = max(1, args.rows // CHUNK)
        for k in range(slices):
            lo, hi = k * args.rows // slices, (k + 1) * args.rows // slices
            window = (k * DAYS * 86400 / slices, (k + 1) * DAYS * 86400 / slices)
            responses, scores = chunk(rng, lo, hi - lo, window)
            store.insert("responses", responses)
            store.insert("scores", scores)
            store.materialize_scores()
        print(f"stored {args.rows:,} responses + scores in {time.perf_counter() - t:.0f} s")
        times = []
        for i in range(3):
            t = time.perf_counter()
            run = run_detection(store, settings, project_id="bench", now=END)
            times.append(time.perf_counter() - t)
            if i == 0:
                first = run
        print(
            f"series analysed: {first.series}; incidents opened: {first.opened}"
            f" (later passes: {run.opened} new, {run.revised} revised)"
        )
        for inc in store.incidents("bench"):
            print(f"  {inc['app']}/{inc['route'] or '*'} {inc['metric']}: {inc['summary'][:150]}")
        best = min(times)
        verdict = "PASS" if times[0] <= TARGET_S else "MISS"
        later = ", ".join(f"{x:.2f}" for x in times[1:])
        print(
            f"detection pass: first {times[0]:.2f} s, then {later} s"
            f" (target <= {TARGET_S:.0f} s: {verdict}; best {best:.2f} s)"
        )
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
