"""Analysis speed over 10M stored responses: one comparison and one change-point series.

Builds a 30-day, 10M-response project in an embedded store (4 apps x 3 routes, hourly traffic
with day/night swings, every response scored), where prompt v2 replaces v1 on one route on day
20 with a 5-point regression. Then times, on that store:
  * the scored-table backfill and an incremental run after a small new batch,
  * POST /v1/compare's work (auto test, v1 vs v2 on the regressed app+route),
  * GET /v1/series' work (hourly series of the route + change-point detection),
and prints PASS/MISS against the target: comparison + change points for one series <= 1 s.

Run: .venv/bin/python benchmarks/analysis_speed.py [--rows 10000000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from promptblame.analysis.service import CompareSpec, compare_groups, series_with_change_points
from promptblame.store import ResponseFilter
from promptblame.store.embedded import EmbeddedStore
from promptblame.store.schema import RESPONSES_ARROW, SCORES_ARROW

START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 30
APPS = ["support-bot", "search", "summarizer", "coder"]
ROUTES = ["billing", "refunds", "shipping"]
CHUNK = 500_000
TARGET_S = 1.0


def chunk(
    rng: np.random.Generator,
    lo: int,
    n: int,
    now: datetime | None,
    window: tuple[float, float] = (0.0, DAYS * 86400.0),
) -> tuple[pa.Table, pa.Table]:
    """n responses (and their scores) with times in `window` (seconds from START)."""
    idx = np.arange(lo, lo + n)
    # time: uniform over the window, thinned at night (day/night traffic swing)
    secs = rng.uniform(*window, n)
    hour = (secs // 3600) % 24
    keep = rng.random(n) < np.where((hour >= 8) & (hour < 20), 1.0, 0.35)
    secs = np.where(keep, secs, rng.uniform(*window, n))
    ts = (np.datetime64(START.replace(tzinfo=None), "ms") + (secs * 1000).astype("int64")).astype(
        "datetime64[ms]"
    )
    app = rng.integers(0, len(APPS), n)
    route = rng.integers(0, len(ROUTES), n)
    regressed = (app == 0) & (route == 1)
    v2 = regressed & (secs >= 20 * 86400)
    version = np.where(v2, "v2", "v1")
    quality = np.clip(
        rng.normal(0.8 - 0.05 * v2 + 0.02 * np.sin(2 * np.pi * hour / 24), 0.15), 0, 1
    )
    ids = pa.array([f"e{i}" for i in idx])
    cols: dict[str, pa.Array] = {
        "project_id": pa.array(["bench"] * n),
        "event_id": ids,
        "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
        "app": pa.array(np.array(APPS)[app]),
        "route": pa.array(np.array(ROUTES)[route]),
        "environment": pa.array(["prod"] * n),
        "prompt_id": pa.array(["answer"] * n),
        "prompt_version": pa.array(version),
        "model": pa.array(["gpt-4o"] * n),
        "model_version": pa.array(["2024-08-06"] * n),
        "provider": pa.array(["openai"] * n),
        "input": pa.array(["How do I get a refund for order 1234?"] * n),
        "output": pa.array(["You can request a refund from the orders page."] * n),
        "latency_ms": pa.array(rng.lognormal(6, 0.4, n)),
        "input_tokens": pa.array(rng.integers(20, 400, n).astype("uint32")),
        "output_tokens": pa.array(rng.integers(20, 600, n).astype("uint32")),
        "cost_usd": pa.array(rng.uniform(0.0001, 0.01, n)),
        "status": pa.array(["ok"] * n),
        "tags": pa.array([[("tier", "free")]] * n, RESPONSES_ARROW.field("tags").type),
        # received a few seconds after the response happened, or `now` for a fresh batch
        "received_at": pa.array(
            ts + np.timedelta64(2, "s") if now is None else [now] * n,
            pa.timestamp("ms", tz="UTC"),
        ),
    }
    empty = pa.array([""] * n)
    responses = pa.Table.from_arrays(
        [cols.get(f.name, empty).cast(f.type) for f in RESPONSES_ARROW], schema=RESPONSES_ARROW
    )
    scores = pa.Table.from_arrays(
        [
            cols["project_id"],
            ids,
            pa.array(["quality"] * n),
            pa.array(["evaluator:judge@1"] * n),
            pa.array(quality),
            empty,
            cols["ts"],
            cols["received_at"],
        ],
        schema=SCORES_ARROW,
    )
    return responses, scores


def timed(fn: Callable[[], object], repeats: int = 3) -> tuple[float, float]:
    """(first run, median of the following runs) in seconds."""
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times[0], statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pb-analysis-"))
    store = EmbeddedStore(tmp / "data", "bench")
    try:
        store.migrate()
        rng = np.random.default_rng(20261124)
        t = time.perf_counter()
        # The month arrives in time order, and the scored-table job runs after each slice, as
        # it would in production (every 30 s), so parts cover successive time ranges.
        slices = max(1, args.rows // CHUNK)
        job_s = 0.0
        for k in range(slices):
            lo, hi = k * args.rows // slices, (k + 1) * args.rows // slices
            window = (k * DAYS * 86400 / slices, (k + 1) * DAYS * 86400 / slices)
            responses, scores = chunk(rng, lo, hi - lo, None, window)
            store.insert("responses", responses)
            store.insert("scores", scores)
            j = time.perf_counter()
            store.materialize_scores()
            job_s += time.perf_counter() - j
        took = time.perf_counter() - t
        print(
            f"generated and inserted {args.rows:,} responses + scores in {took:.0f} s"
            f" ({slices} slices; the scored-table job took {job_s:.1f} s in all)"
        )
        responses, scores = chunk(rng, args.rows, 1000, datetime.now(UTC))
        store.insert("responses", responses)
        store.insert("scores", scores)
        t = time.perf_counter()
        store.materialize_scores()
        incremental = time.perf_counter() - t
        t = time.perf_counter()
        store.materialize_scores()
        idle = time.perf_counter() - t

        scope = ResponseFilter(app="support-bot", route="refunds")
        spec = CompareSpec(
            metric="quality",
            a=ResponseFilter(app="support-bot", route="refunds", prompt_version="v1"),
            b=ResponseFilter(app="support-bot", route="refunds", prompt_version="v2"),
            sequential=True,
        )
        answer = compare_groups(store, "bench", spec)
        series = series_with_change_points(
            store, "bench", scope, metric="quality", bucket_seconds=3600
        )

        def both() -> None:
            compare_groups(store, "bench", spec)
            series_with_change_points(store, "bench", scope, metric="quality", bucket_seconds=3600)

        first_cmp, cmp_s = timed(lambda: compare_groups(store, "bench", spec))
        first_ser, ser_s = timed(
            lambda: series_with_change_points(
                store, "bench", scope, metric="quality", bucket_seconds=3600
            )
        )
        first_both, both_s = timed(both)
        lat_spec = CompareSpec(
            metric="response.latency_ms",
            a=spec.a,
            b=spec.b,
        )
        first_lat, lat_s = timed(lambda: compare_groups(store, "bench", lat_spec))
        c = answer.comparison
        print(
            f"\ncomparison: {c.test}, effect {c.effect:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}],"
            f" p={c.p_value:.2g}, n={c.n_a:,} vs {c.n_b:,}"
        )
        cps = series["change_points"]
        print(
            f"series: {len(series['buckets'])} hourly buckets, change points at "
            + ", ".join(f"{x['start']:%Y-%m-%d %H:%M} ({x['effect']:+.3f})" for x in cps)
        )
        print(f"\n{'figure':<52}{'first':>9}{'median':>9}")
        for name, first, med in [
            ("compare (auto test + sequential), score metric", first_cmp, cmp_s),
            ("series + change points, score metric", first_ser, ser_s),
            ("compare + series together", first_both, both_s),
            ("compare, built-in latency metric", first_lat, lat_s),
        ]:
            print(f"{name:<52}{first:>8.3f}s{med:>8.3f}s")
        print(f"{'scored table: incremental run after 1,000 new rows':<52}{incremental:>8.3f}s")
        print(f"{'scored table: run with nothing new':<52}{idle:>8.3f}s")
        verdict = "PASS" if both_s <= TARGET_S else "MISS"
        print(
            f"\ntarget: comparison + change points for one series <= {TARGET_S:.0f} s"
            f" over {args.rows:,} responses: {both_s:.3f} s  {verdict}"
        )
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
