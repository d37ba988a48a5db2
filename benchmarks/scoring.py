"""Scoring throughput: responses/s scored end to end (select -> evaluate -> write) by the
deterministic evaluators over 1M stored responses in the embedded store.

Stores N responses (default 1,000,000; outputs ~0.3-1.5 KB: JSON answers, prose, refusals,
code fences) from the last 6 days, applies six deterministic evaluators (json_valid, regex,
contains, length, refusal, latency) at sample rate 1, and times one scoring-job pass that scores
them all. Target: >= 20,000 responses/s on a 2-core machine.

Run: .venv/bin/python benchmarks/scoring.py [--rows 1000000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from promptblame.analysis.scoring.catalog import apply
from promptblame.analysis.scoring.config import validate
from promptblame.analysis.scoring.job import run_scoring
from promptblame.settings import Settings
from promptblame.store import Store, open_store
from promptblame.store.schema import RESPONSES_ARROW

TARGET = 20_000
CHUNK = 200_000

EVALUATORS: list[dict[str, Any]] = [
    {"name": "json_ok", "kind": "json_valid", "params": {"strip_code_fence": True}},
    {"name": "has_order", "kind": "regex", "params": {"pattern": r"order #\d{4,}"}},
    {"name": "mentions", "kind": "contains", "params": {"values": ["refund", "order"]}},
    {"name": "short", "kind": "length", "params": {"max": 1200}},
    {"name": "no_refusal", "kind": "refusal"},
    {"name": "fast", "kind": "latency", "params": {"max_ms": 2000}},
]


def texts(rng: np.random.Generator, k: int = 2000) -> list[str]:
    """A pool of varied outputs: JSON, fenced JSON, prose, refusals."""
    words = "refund order shipping account invoice delay policy customer support days".split()  # noqa: SIM905
    out = []
    for i in range(k):
        body = " ".join(rng.choice(words, int(rng.integers(40, 220))))
        kind = i % 5
        if kind == 0:
            out.append(json.dumps({"answer": body, "order": f"order #{1000 + i}", "ok": True}))
        elif kind == 1:
            out.append("```json\n" + json.dumps({"answer": body}) + "\n```")
        elif kind == 2:
            out.append("I'm sorry, but I can't help with that. " + body[:200])
        else:
            out.append(f"Thanks for reaching out about order #{1000 + i}. {body}")
    return out


def fill(store: Store, rows: int, rng: np.random.Generator) -> None:
    pool = np.array(texts(rng), dtype=object)
    now = datetime.now(UTC)
    for lo in range(0, rows, CHUNK):
        n = min(CHUNK, rows - lo)
        secs = rng.uniform(60, 6 * 86400, n)
        ts = np.datetime64(now.replace(tzinfo=None), "ms") - (secs * 1000).astype("int64")
        cols: dict[str, pa.Array] = {
            "project_id": pa.array(["bench"] * n),
            "event_id": pa.array([f"r{i:08d}" for i in range(lo, lo + n)]),
            "ts": pa.array(ts.astype("datetime64[ms]"), pa.timestamp("ms", tz="UTC")),
            "app": pa.array(["support-bot"] * n),
            "route": pa.array(np.array(["billing", "refunds", "shipping"])[rng.integers(0, 3, n)]),
            "model": pa.array(["gpt-4o"] * n),
            "input": pa.array(["Where is my refund for order #1234?"] * n),
            "output": pa.array(pool[rng.integers(0, len(pool), n)].tolist()),
            "latency_ms": pa.array(rng.gamma(2.0, 500.0, n)),
            "output_tokens": pa.array(rng.integers(20, 400, n), pa.uint32()),
            "received_at": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
        }
        table = pa.Table.from_arrays(
            [
                cols[f.name]
                if f.name in cols
                else pa.nulls(n, f.type)
                if f.type in (pa.float64(), pa.uint32())
                else pa.array([{}] * n, f.type)
                if f.name == "tags"
                else pa.array(["ok" if f.name == "status" else ""] * n, f.type)
                for f in RESPONSES_ARROW
            ],
            schema=RESPONSES_ARROW,
        )
        store.insert("responses", table)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=20_000)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="pb-scoring-"))
    try:
        settings = Settings(data_dir=data, database="bench", scoring_batch_rows=args.batch)
        store = open_store(settings)
        t0 = time.perf_counter()
        fill(store, args.rows, np.random.default_rng(7))
        print(f"stored {args.rows:,} responses in {time.perf_counter() - t0:.1f} s")
        apply(store, "bench", validate({"evaluators": EVALUATORS}), settings)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        run = run_scoring(store, settings)
        took = time.perf_counter() - t0
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rate = args.rows / took
        print(f"evaluators: {', '.join(e['kind'] for e in EVALUATORS)}; batch {args.batch:,}")
        print(
            f"scored {args.rows:,} responses ({run.scored:,} scores, {run.errors} errors)"
            f" in {took:.1f} s"
        )
        print(
            f"responses/s: {rate:,.0f}"
            f" (target >= {TARGET:,}: {'PASS' if rate >= TARGET else 'MISS'})"
        )
        print(f"scores/s: {run.scored / took:,.0f}")
        print(f"peak RSS: {rss_after:,.0f} MiB (before the run: {rss_before:,.0f} MiB)")
        t0 = time.perf_counter()
        again = run_scoring(store, settings)
        print(f"second pass (nothing new): {time.perf_counter() - t0:.2f} s, {again.scored} scores")
        store.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
