"""The response explorer at 10M responses: one filtered page (50 rows) per query shape.

Builds the 30-day, 10M-response project of `analysis_speed.py` (4 apps x 3 routes, every
response scored), with texts that differ per response, in an embedded store; runs the scored-
table job; then times the explorer's page (`reports.data.responses_view`: the page's rows, the
filter suggestions and the metric names, the same work `/reports/responses` does before its
HTML) for: no filter; app + route + one day; text search within an app; a score range within an
app and a week; and the second page of the last. First run and median of 3, against <= 500 ms.

Run: .venv/bin/python benchmarks/explorer_speed.py [--rows 10000000] [--keep DIR]
(--keep DIR builds the store in DIR and keeps it; a later run with the same DIR reuses it, after
applying any migration added since, e.g. a new index.)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from analysis_speed import CHUNK, DAYS, START, chunk

from promptblame.reports.data import responses_view
from promptblame.store import ResponseFilter
from promptblame.store.embedded import EmbeddedStore
from promptblame.store.filters import filter_params, filter_sql

TARGET_MS = 500.0
WORDS = np.array(
    [
        "refund",
        "order",
        "invoice",
        "shipping",
        "delay",
        "card",
        "charged",
        "twice",
        "cancel",
        "plan",
        "upgrade",
        "password",
    ]
)


def varied(responses: pa.Table, rng: np.random.Generator, lo: int) -> pa.Table:
    """Inputs and outputs that differ per response (a text search must read them)."""
    n = responses.num_rows
    w = WORDS[rng.integers(0, len(WORDS), (n, 3))]
    inputs = [f"Hi, about {a} {b} for order A-{lo + i}: {c}?" for i, (a, b, c) in enumerate(w)]
    outputs = [
        f"Thanks for asking about {a}; your {b} ({lo + i}) is handled."
        for i, (a, b, _) in enumerate(w)
    ]
    for name, values in (("input", inputs), ("output", outputs)):
        i = responses.schema.get_field_index(name)
        responses = responses.set_column(
            i, name, pa.array(values, responses.schema.field(name).type)
        )
    return responses


def old_keys(store: EmbeddedStore, f: ResponseFilter, search: str = "", **_: object) -> int:
    """The page's keys as list_responses read them before migration 12 and the windows (one
    query over the whole table under FINAL, position() search): the paired baseline."""
    sql = (
        "SELECT event_id, ts FROM responses FINAL WHERE project_id = {p:String} AND "
        + filter_sql()
        + (
            " AND (positionCaseInsensitiveUTF8(input, {q:String}) > 0"
            " OR positionCaseInsensitiveUTF8(output, {q:String}) > 0)"
            if search
            else ""
        )
        + " ORDER BY ts DESC, event_id DESC LIMIT 51"
    )
    return len(store._rows(sql, p="bench", q=search, **filter_params(f)))


def paired(store: EmbeddedStore, shapes: dict[str, dict[str, object]], repeats: int) -> None:
    """Old and new page keys alternately, same store, same minutes: a ratio that holds when
    other work loads the machine (absolute times do not)."""
    print(f"\npaired, page keys only, alternating, median of {repeats} (query condition cache off)")
    for conn in store._readers:  # the reading connections
        conn.query("SET use_query_condition_cache = 0", "Null")
    for name, kw in shapes.items():
        if "score" in kw:
            continue
        old, new = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            old_keys(store, **kw)  # type: ignore[arg-type]
            old.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            store.list_responses(
                "bench",
                limit=51,
                columns=("event_id", "ts"),
                **kw,  # type: ignore[arg-type]
            )
            new.append((time.perf_counter() - t) * 1000)
        o, n = statistics.median(old), statistics.median(new)
        print(f"{name:<30} before {o:6.0f} ms, now {n:6.0f} ms ({o / n:4.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--keep", type=Path, help="build the store here and keep it")
    ap.add_argument("--paired", type=int, default=0, help="also time old vs new keys, N pairs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp()) if args.keep is None else args.keep
    store = EmbeddedStore(tmp / "data")
    try:
        t0 = time.perf_counter()
        applied = store.migrate()
        built = store.count("responses", "bench")
        if built:
            print(f"reusing {built:,} responses in {tmp}; migrations applied now: {applied}")
        # index materialization (migration 12) runs as background mutations: time them too
        while store._rows(
            "SELECT count() AS n FROM system.mutations WHERE database = currentDatabase()"
            " AND NOT is_done"
        )[0]["n"]:
            time.sleep(0.5)
        if built:
            print(f"  migrating, with index materialization, took {time.perf_counter() - t0:.0f} s")
        rng = np.random.default_rng(7)
        for lo in range(0, 0 if built else args.rows, CHUNK):
            n = min(CHUNK, args.rows - lo)
            day = DAYS * 86400.0 * lo / args.rows
            end = DAYS * 86400.0 * (lo + n) / args.rows
            responses, scores = chunk(rng, lo, n, None, (day, end))
            store.insert("responses", varied(responses, rng, lo))
            store.insert("scores", scores)
            store.materialize_scores()
        if not built:
            print(f"built {args.rows:,} responses in {time.perf_counter() - t0:.0f} s")
        day = START + timedelta(days=21)
        shapes = {
            "no filter": dict(f=ResponseFilter()),
            "app + route + one day": dict(
                f=ResponseFilter(
                    app="support-bot", route="refunds", since=day, until=day + timedelta(days=1)
                )
            ),
            "text search in an app": dict(f=ResponseFilter(app="search"), search="cancel plan"),
            "rare text (an order id)": dict(f=ResponseFilter(), search="order A-1234567:"),
            "score range, app, one week": dict(
                f=ResponseFilter(app="support-bot", since=day, until=day + timedelta(days=7)),
                score=("quality", 0.0, 0.3),
            ),
        }
        worst = 0.0
        for name, kw in shapes.items():
            times = []
            view = None
            for _ in range(4):
                t = time.perf_counter()
                view = responses_view(store, "bench", query={}, **kw)  # type: ignore[arg-type]
                times.append((time.perf_counter() - t) * 1000)
            med = statistics.median(times[1:])
            worst = max(worst, med)
            rows = len(view.rows) if view else 0
            print(f"{name:<30} first {times[0]:5.0f} ms, median {med:5.0f} ms ({rows} rows)")
            if name.startswith("score") and view and view.rows:
                last = view.rows[-1]
                t = time.perf_counter()
                responses_view(
                    store, "bench", query={}, before=(last["ts"], last["event_id"]), **kw
                )  # type: ignore[arg-type]
                print(f"{'  its next page':<30} {(time.perf_counter() - t) * 1000:5.0f} ms")
        if args.paired:
            paired(store, shapes, args.paired)  # type: ignore[arg-type]
        verdict = "PASS" if worst <= TARGET_MS else "MISS"
        print(
            f"{verdict}: slowest filtered page median {worst:.0f} ms, target <= {TARGET_MS:.0f} ms"
        )
    finally:
        store.close()
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
