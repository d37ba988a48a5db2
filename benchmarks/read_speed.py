"""Read speed at 10M responses: every read endpoint and report page, quiet and under ingest load,
and the detection pass over 50 series.

Data: the 30-day builder of `analysis_speed.py` (day/night traffic, prompt v2 regressing one
route of one app on day 20), widened to 10 apps and 5 score metrics (m0..m4, one per response),
so there are 50 score series; app `app1` runs an experiment (arms a/b). The build runs the
scored-table job after every 500k-row slice, as production would, and takes minutes: build once
with `--keep DIR` and measure on it as often as needed.

Measuring: `promptblame serve` on the data directory; each endpoint/page is requested `--repeats`
times one after another (p50/p99 of the server round trip), first quiet, then while
`benchmarks/ingest.py`-style clients post events at half the capacity measured just before (a
short full-speed burst). The detection pass runs in-process after the server stops.

Run:
  .venv/bin/python benchmarks/read_speed.py build --keep /tmp/pb-read-10m [--rows 10000000]
  .venv/bin/python benchmarks/read_speed.py measure --keep /tmp/pb-read-10m [--repeats 30]
  .venv/bin/python benchmarks/read_speed.py cells --keep /tmp/pb-read-10m [--repeats 5]
  .venv/bin/python benchmarks/read_speed.py detection --keep /tmp/pb-read-10m [--repeats 3]
      [--cold] [--split] [--dump FILE] [--profile N]   (the detection pass alone, no server)
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import statistics
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's promptblame

import analysis_speed
import ingest

APPS = [f"app{i}" for i in range(10)]
METRICS = [f"m{i}" for i in range(5)]
PROJECT = ingest.PROJECT
END = analysis_speed.START + timedelta(days=analysis_speed.DAYS)
TARGET_P50, TARGET_P99, TARGET_DETECTION = 0.3, 1.0, 2.0


def build_chunk(
    rng: np.random.Generator, lo: int, n: int, window: tuple[float, float]
) -> tuple[pa.Table, pa.Table]:
    """analysis_speed's rows, re-labelled: 10 apps, 5 metrics, an experiment on app1."""
    analysis_speed.APPS = APPS
    responses, scores = analysis_speed.chunk(rng, lo, n, None, window)
    responses = responses.set_column(0, "project_id", pa.array([PROJECT] * n))
    scores = scores.set_column(0, "project_id", pa.array([PROJECT] * n))
    app = responses.column("app").to_numpy(zero_copy_only=False)
    in_exp = app == "app1"
    arm = np.where(rng.random(n) < 0.5, "a", "b")
    for name, values in (
        ("experiment", np.where(in_exp, "exp1", "")),
        ("variant", np.where(in_exp, arm, "")),
    ):
        i = responses.schema.get_field_index(name)
        responses = responses.set_column(i, name, pa.array(values))
    metric = np.array(METRICS)[rng.integers(0, len(METRICS), n)]
    scores = scores.set_column(2, "name", pa.array(metric))
    return responses, scores


def build(data_dir: Path, rows: int) -> None:
    from promptblame.store.embedded import EmbeddedStore

    store = EmbeddedStore(data_dir, "promptblame")
    try:
        store.migrate()
        rng = np.random.default_rng(20261206)
        t = time.perf_counter()
        slices = max(1, rows // analysis_speed.CHUNK)
        days = analysis_speed.DAYS
        for k in range(slices):
            lo, hi = k * rows // slices, (k + 1) * rows // slices
            window = (k * days * 86400 / slices, (k + 1) * days * 86400 / slices)
            responses, scores = build_chunk(rng, lo, hi - lo, window)
            store.insert("responses", responses)
            store.insert("scores", scores)
            store.materialize_scores()
            print(f"  slice {k + 1}/{slices}: {time.perf_counter() - t:.0f} s", flush=True)
        print(f"built {rows:,} responses + scores in {time.perf_counter() - t:.0f} s")
    finally:
        store.close()


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------


def q(path: str, **params: str) -> str:
    return f"{path}?{urllib.parse.urlencode(params)}" if params else path


def endpoints(incident_id: str) -> list[tuple[str, str, str, bytes | None]]:
    """(name, method, path, body) of every read endpoint and report page measured."""
    a, b = "/reports/compare", "/v1/compare"
    cmp_body = (
        b'{"metric":"m0","a":{"app":"app0","route":"refunds","prompt_version":"v1"},'
        b'"b":{"app":"app0","route":"refunds","prompt_version":"v2"}}'
    )
    out: list[tuple[str, str, str, bytes | None]] = [
        ("GET /v1/versions?metric=m0", "GET", q("/v1/versions", metric="m0"), None),
        ("GET /v1/versions (counts only)", "GET", "/v1/versions", None),
        (
            "GET /v1/series (app0/refunds, m0, 1h)",
            "GET",
            q("/v1/series", app="app0", route="refunds", metric="m0"),
            None,
        ),
        ("POST /v1/compare (v1 vs v2, m0)", "POST", b, cmp_body),
        (
            "GET /v1/experiments/exp1?metric=m0",
            "GET",
            q("/v1/experiments/exp1", metric="m0", control="a"),
            None,
        ),
        (
            "GET /v1/responses (filtered page)",
            "GET",
            q("/v1/responses", app="app3", limit="50"),
            None,
        ),
        ("GET /reports/ (overview)", "GET", "/reports/", None),
        (
            "GET /reports/compare (v1 vs v2)",
            "GET",
            q(
                a,
                metric="m0",
                a_app="app0",
                a_route="refunds",
                a_prompt_version="v1",
                b_app="app0",
                b_route="refunds",
                b_prompt_version="v2",
            ),
            None,
        ),
        (
            "GET /reports/experiments/exp1",
            "GET",
            "/reports/experiments/exp1?metric=m0&control=a",
            None,
        ),
        (
            "GET /reports/responses (filtered page)",
            "GET",
            q("/reports/responses", app="app3", route="billing"),
            None,
        ),
    ]
    if incident_id:
        out += [
            ("GET /v1/incidents/{id}", "GET", f"/v1/incidents/{incident_id}", None),
            ("GET /reports/incidents/{id}", "GET", f"/reports/incidents/{incident_id}", None),
        ]
    return out


def first_incident(port: int, key: str) -> str:
    """The id of the store's first incident ("" if none): the incident endpoints' subject."""
    status, data = ingest.request(port, "GET", "/v1/incidents", key=key)
    if status != 200:
        return ""
    items = json.loads(data)
    items = items.get("incidents", items) if isinstance(items, dict) else items
    return str(items[0]["incident_id"]) if items else ""


def call(port: int, method: str, path: str, body: bytes | None, key: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(ingest.HOST, port, timeout=300)
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def time_endpoints(
    port: int, key: str, eps: list[tuple[str, str, str, bytes | None]], repeats: int
) -> dict[str, tuple[float, float]]:
    out = {}
    for name, method, path, body in eps:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            status, data = call(port, method, path, body, key)
            times.append(time.perf_counter() - t)
            if status != 200:
                print(f"  {name}: HTTP {status}: {data[:300]!r}")
                break
        if len(times) < repeats:
            out[name] = (float("nan"), float("nan"))
            continue
        out[name] = (statistics.median(times), ingest.percentile(times, 99))
        print(
            f"  {name:<44}{out[name][0] * 1000:>8.0f} ms{out[name][1] * 1000:>8.0f} ms", flush=True
        )
    return out


class PacedLoad:
    """ingest.py's clients, paced to `rate` events/s (a body of `batch` events per tick)."""

    def __init__(self, port: int, key: str, bodies: ingest.Bodies, rate: float, clients: int):
        self.port, self.key, self.bodies, self.rate, self.clients = port, key, bodies, rate, clients
        self.stop = threading.Event()
        self.acked = 0
        self.seqs = itertools.count(10_000_000)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]
        self.started = 0.0

    def _client(self) -> None:
        interval = self.bodies.batch * self.clients / self.rate
        nxt = time.perf_counter()
        while not self.stop.is_set():
            with self.lock:
                seq = next(self.seqs)
            status, _ = call(self.port, "POST", "/v1/responses", self.bodies.body(seq), self.key)
            if status == 200:
                with self.lock:
                    self.acked += self.bodies.batch
            nxt += interval
            time.sleep(max(0.0, nxt - time.perf_counter()))

    def __enter__(self) -> PacedLoad:
        self.started = time.perf_counter()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    @property
    def achieved(self) -> float:
        return self.acked / max(1e-9, time.perf_counter() - self.started)


def capacity(port: int, key: str, bodies: ingest.Bodies, seconds: float) -> float:
    res = ingest.run_load(
        port,
        key,
        bodies,
        itertools.count(20_000_000),
        clients=8,
        seconds=seconds,
        max_requests=10**9,
    )
    return res.acked_events / res.elapsed


def detection_pass(data_dir: Path) -> tuple[float, list[float], int]:
    from promptblame.analysis.detection import run_detection
    from promptblame.settings import Settings
    from promptblame.store import open_store

    settings = Settings(data_dir=data_dir)
    store = open_store(settings)
    try:
        store.migrate()
        t = time.perf_counter()
        store.materialize_scores()  # what the data directory has not materialized yet
        print(f"scored-table job before the first pass: {time.perf_counter() - t:.1f} s")
        times = []
        found = 0
        for _ in range(3):
            t = time.perf_counter()
            run = run_detection(store, settings, project_id=PROJECT, now=END)
            times.append(time.perf_counter() - t)
            found = max(found, run.series)
        return times[0], times[1:], found
    finally:
        store.close()


def cells_vs_raw(data_dir: Path, repeats: int) -> None:
    """The reads the statistics cells serve, in-process, each timed with the cells and with raw
    rows (Store.use_cells) alternately on the same store, so both see the same machine."""
    from promptblame.analysis.detection import run_detection
    from promptblame.reports.data import overview_view
    from promptblame.settings import Settings
    from promptblame.store import open_store

    settings = Settings(data_dir=data_dir)
    store = open_store(settings)
    try:
        store.migrate()
        t = time.perf_counter()
        store.materialize_scores()  # on a directory from before migration 21: sums every hour
        print(f"scored-table job, first run: {time.perf_counter() - t:.1f} s")
        since = END - timedelta(days=30)
        cases: dict[str, Callable[[], object]] = {
            "attribution cells, 30 days hourly, 50 series": lambda: store.attribution_cells(
                PROJECT, since=since, until=END, bucket_seconds=3600
            ),
            "overview page data": lambda: overview_view(store, PROJECT, now=END, settings=settings),
            "detection pass, 60 series": lambda: run_detection(
                store, settings, project_id=PROJECT, now=END
            ),
        }
        print(f"\n{'read (median of ' + str(repeats) + ')':<48}{'cells':>9}{'raw':>9}{'ratio':>8}")
        for name, read in cases.items():
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(repeats):
                for use in (True, False):
                    store.use_cells = use
                    t = time.perf_counter()
                    read()
                    times[use].append(time.perf_counter() - t)
            c, r = (statistics.median(times[u]) for u in (True, False))
            print(f"  {name:<46}{c:>8.2f}s{r:>8.2f}s{r / c:>7.1f}x")
    finally:
        store.use_cells = True
        store.close()


def split_cpu(store: Any, settings: Any, detection: Any, repeats: int = 3) -> None:
    """CPU seconds of a pass's two halves (median of `repeats`): the reads (`_series_rows`: the
    cell reads and their rows per series) and `shifts` over every series (change points and
    attribution, called directly: nothing remembered); and the attribution cells' rows by
    `to_pylist` against the rows this checkout's store builds."""

    bs = settings.detection_bucket_seconds
    until = datetime.fromtimestamp(END.timestamp() // bs * bs, UTC)
    since = until - timedelta(days=settings.detection_window_days)
    reads, analysis = [], []
    for _ in range(repeats):
        c = time.process_time()
        by = detection._series_rows(store, settings, PROJECT, since=since, until=until)
        moves = store.label_history(PROJECT)
        c1 = time.process_time()
        for key, cells in by.items():
            detection.shifts(
                cells,
                since=since,
                bucket_seconds=bs,
                higher_is_better=key[2] != detection.BUILTIN,
                label_moves=moves,
            )
        reads.append(c1 - c)
        analysis.append(time.process_time() - c1)
    kept: list[pa.Table] = []
    select = store._select

    def keeping(sql: str, params: Any = None) -> pa.Table:
        kept.append(select(sql, params))
        return kept[-1]

    store._select = keeping
    try:
        rows = store.attribution_cells(PROJECT, since=since, until=until, bucket_seconds=bs)
    finally:
        store._select = select
    c = time.process_time()
    plain = kept[-1].to_pylist()
    c1 = time.process_time()
    assert plain == rows
    by_column = ""
    try:
        from promptblame.store.rows import to_dicts  # this branch's conversion, if present

        c2 = time.process_time()
        assert to_dicts(kept[-1]) == plain
        by_column = f", store/rows.py {time.process_time() - c2:.3f} s"
    except ImportError:
        pass
    print(
        f"cpu: reads {statistics.median(reads):.3f} s, shifts over {len(by)} series"
        f" {statistics.median(analysis):.3f} s (medians of {repeats}); attribution cells"
        f" {len(rows):,} rows: to_pylist {c1 - c:.3f} s{by_column}"
    )


def _workers_cpu(detection: Any) -> float:
    """CPU seconds the detection job's worker processes (`detection._pool`, when this checkout
    has them and they run) have used so far, from /proc: they are not this process's children
    (the forkserver's), and they live on, so `getrusage` does not count them."""
    pool = getattr(detection, "_pool", None)
    if pool is None:
        return 0.0
    ticks = 0
    for pid in list(pool[1]._processes or {}):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(stat[11]) + int(stat[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def detection_only(
    data_dir: Path,
    repeats: int,
    dump: Path | None,
    profile: int,
    cold: bool = False,
    split: bool = False,
) -> None:
    """The detection pass alone, in-process, `repeats` times after one untimed scored-table job
    (the first run on a copied directory sums cells). The first pass finds every series' verdicts;
    later ones reuse those of series whose inputs did not change (`detection._last_shifts`),
    unless `cold`: then that memory is emptied before each pass. `dump`: every series' verdicts (the
    `(route, verdict)` list each pass hands to `incidents.merge`, as repr: every number) and
    the run's counts, written to FILE so two code versions can be compared byte for byte.
    `profile`: print the N heaviest functions (cumulative) of one more pass under cProfile.
    CPU seconds are this process's, plus the detection worker processes' when the pass used
    them (`PROMPTBLAME_DETECTION_PROCESSES=1`: none, every series analysed in-process)."""

    from promptblame.analysis import detection
    from promptblame.settings import Settings
    from promptblame.store import open_store

    settings = Settings(data_dir=data_dir)
    store = open_store(settings)
    try:
        store.migrate()
        t = time.perf_counter()
        store.materialize_scores()
        print(f"scored-table job before the passes (untimed): {time.perf_counter() - t:.1f} s")
        times, cpu, workers = [], [], []
        reused = getattr(detection, "_last_shifts", {})  # absent before this memory existed
        for _ in range(repeats):
            if cold:
                reused.clear()
            t, c, w = time.perf_counter(), time.process_time(), _workers_cpu(detection)
            run = detection.run_detection(store, settings, project_id=PROJECT, now=END)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            workers.append(_workers_cpu(detection) - w)
        load = os.getloadavg()
        print(
            f"detection pass{' (cold)' if cold else ''}, {run.series} series: "
            f"{', '.join(f'{x:.2f}' for x in times)} s (median {statistics.median(times):.2f} s;"
            f" cpu {', '.join(f'{x:.2f}' for x in cpu)} s"
            + (
                f" + worker processes {', '.join(f'{x:.2f}' for x in workers)} s"
                if any(workers)
                else ""
            )
            + ")"
            f"  load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
            f"  {'PASS' if statistics.median(times) <= TARGET_DETECTION else 'MISS'}"
            f" (target <= {TARGET_DETECTION} s)"
        )
        if dump is not None:
            from promptblame.analysis.incidents import merge

            seen: list[str] = []

            def recording(series, existing, found, **kw):  # type: ignore[no-untyped-def]
                seen.append(f"{series!r}\n" + "".join(f"  {r!r}: {v!r}\n" for r, v in found))
                return merge(series, existing, found, **kw)

            detection.__dict__["merge"] = recording  # what run_detection calls
            reused.clear()  # found afresh, not remembered
            try:
                run = detection.run_detection(store, settings, project_id=PROJECT, now=END)
            finally:
                detection.__dict__["merge"] = merge
            dump.write_text(
                "".join(sorted(seen))
                + f"series {run.series} opened {run.opened} revised {run.revised}"
                f" resolved {run.resolved}\nnot analysed {run.not_analysed!r}\n"
            )
            print(f"verdicts of {len(seen)} series written to {dump}")
        if split:
            split_cpu(store, settings, detection)
        if profile:
            import cProfile
            import pstats

            if cold:
                reused.clear()
            prof = cProfile.Profile()
            prof.enable()
            detection.run_detection(store, settings, project_id=PROJECT, now=END)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(profile)
    finally:
        store.close()


def measure(
    data_dir: Path, repeats: int, load_repeats: int, skip_load: bool, load_rate: float
) -> None:
    first, then, series = detection_pass(data_dir)
    print(
        f"detection pass over the project's series (now = {END:%Y-%m-%d}): first {first:.2f} s,"
        f" then {', '.join(f'{x:.2f}' for x in then)} s; series analysed: {series}"
        f"  {'PASS' if min(then) <= TARGET_DETECTION else 'MISS'} (target <= {TARGET_DETECTION} s)"
    )
    server = ingest.Server(data_dir, data_dir.parent / f"{data_dir.name}-server.log")
    key = server.create_key()
    server.start()
    try:
        eps = endpoints(first_incident(server.port, key))
        for _, method, path, body in eps:  # warm caches once
            call(server.port, method, path, body, key)
        print(f"\nquiet ({repeats} requests each)          {'p50':>12}{'p99':>11}")
        quiet = time_endpoints(server.port, key, eps, repeats)
        if skip_load:
            return
        bodies = ingest.make_bodies(random.Random(1), run=f"rs{time.time_ns()}", n=8, batch=1000)
        if load_rate:
            rate = load_rate
        else:
            cap = capacity(server.port, key, bodies, 10)
            rate = cap / 2
            print(f"\ningest capacity (10 s burst, 8 clients x 1000 events): {cap:,.0f} events/s")
        with PacedLoad(server.port, key, bodies, rate, clients=4) as load:
            time.sleep(3)
            print(f"under load at {rate:,.0f} events/s")
            loaded = time_endpoints(server.port, key, eps, load_repeats)
            print(f"  (achieved {load.achieved:,.0f} events/s)")
        print(f"\n{'endpoint / page':<44}{'quiet p50':>10}{'p99':>8}{'load p50':>10}{'p99':>8}")
        for name, _, _, _ in eps:
            (qp50, qp99), (lp50, lp99) = quiet[name], loaded[name]
            ok = (
                qp50 <= TARGET_P50
                and qp99 <= TARGET_P99
                and lp50 <= 2 * max(qp50, 0.05)
                and lp99 <= 2 * max(qp99, 0.05)
            )
            print(
                f"{name:<44}{qp50 * 1000:>8.0f}ms{qp99 * 1000:>6.0f}ms"
                f"{lp50 * 1000:>8.0f}ms{lp99 * 1000:>6.0f}ms  {'PASS' if ok else 'MISS'}"
            )
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("command", choices=["build", "measure", "cells", "detection"])
    ap.add_argument("--keep", type=Path, required=True, help="data directory to build / measure")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--load-repeats", type=int, default=10, help="requests each, under load")
    ap.add_argument("--quiet-only", action="store_true")
    ap.add_argument("--dump", type=Path, help="detection: write every series' verdicts here")
    ap.add_argument("--profile", type=int, default=0, help="detection: top N of a cProfile")
    ap.add_argument(
        "--split", action="store_true", help="detection: cpu of reads and of shifts apart"
    )
    ap.add_argument(
        "--cold", action="store_true", help="detection: forget the last run's verdicts each pass"
    )
    ap.add_argument(
        "--load-rate", type=float, default=0, help="events/s under load (default: half capacity)"
    )
    args = ap.parse_args()
    if args.command == "build":
        if args.keep.exists():
            raise SystemExit(f"{args.keep} exists: measure it, or remove it to build again")
        build(args.keep, args.rows)
    elif args.command == "detection":
        detection_only(args.keep, args.repeats, args.dump, args.profile, args.cold, args.split)
    elif args.command == "cells":
        cells_vs_raw(args.keep, args.repeats)
    else:
        measure(args.keep, args.repeats, args.load_repeats, args.quiet_only, args.load_rate)


if __name__ == "__main__":
    main()
