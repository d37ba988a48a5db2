"""Human review at queue scale: how long filling a queue, serving an item, recording a label and
computing the agreement page take on the embedded store.

    .venv/bin/python benchmarks/review.py [--responses 200000 --items 5000 --labels 2000]

Seeds `--responses` responses with a judge score each (the judge copies the truth 80 % of the
time, so its kappa against people who label the truth is about 0.8), applies a queue sampling
`--items` of them (two reviewers on 10 %), has two reviewers label `--labels` items through the
same functions the review page calls (next_item + submit), then times the agreement report.
Prints one line per figure (median and p95 of the per-call times where there are many calls).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from promptblame.review import calibration, queues
from promptblame.review.config import validate
from promptblame.settings import Settings
from promptblame.store import open_store
from promptblame.store.schema import RESPONSES_ARROW, SCORES_ARROW

P = "bench"


def seed(store, n: int, rng: np.random.Generator) -> np.ndarray:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    t0 = now - timedelta(days=7)
    ids = [f"e{i}" for i in range(n)]
    cols: dict[str, list[Any]] = {f.name: [""] * n for f in RESPONSES_ARROW}
    cols.update(
        project_id=[P] * n,
        event_id=ids,
        ts=[t0 + timedelta(seconds=i) for i in range(n)],
        app=["bot"] * n,
        prompt_id=["answer"] * n,
        prompt_version=[f"v{i % 4}" for i in range(n)],
        model=["m"] * n,
        input=[f"question {i} " * 20 for i in range(n)],
        output=[f"answer {i} " * 40 for i in range(n)],
        latency_ms=[None] * n,
        input_tokens=[None] * n,
        output_tokens=[None] * n,
        cost_usd=[None] * n,
        tags=[[] for _ in range(n)],
        received_at=[now] * n,
    )
    store.insert("responses", pa.Table.from_pydict(cols, schema=RESPONSES_ARROW))
    truth = rng.random(n) < 0.7
    judge = np.where(rng.random(n) < 0.8, truth, rng.random(n) < 0.7)
    scores = {
        "project_id": [P] * n,
        "event_id": ids,
        "name": ["correct"] * n,
        "source": ["evaluator:judge@1"] * n,
        "value": judge.astype(float).tolist(),
        "comment": [""] * n,
        "ts": [now] * n,
        "received_at": [now] * n,
    }
    store.insert("scores", pa.Table.from_pydict(scores, schema=SCORES_ARROW))
    return truth


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--responses", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--labels", type=int, default=2_000)
    args = ap.parse_args()
    rng = np.random.default_rng(19)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Settings(data_dir=Path(tmp) / "d"))
        truth = seed(store, args.responses, rng)  # the judge copies it 80 % of the time
        rate = min(1.0, 1.2 * args.items / args.responses)
        doc = {
            "queues": [
                {
                    "name": "q",
                    "sample_rate": rate,
                    "max_items": args.items,
                    "overlap": 0.1,
                    "fields": [{"name": "correct", "kind": "pass_fail"}],
                }
            ],
            "trust": [{"metric": "correct", "min_agreement": 0.5}],
        }
        t = time.perf_counter()
        queues.apply(store, P, validate(doc))
        fill = time.perf_counter() - t
        n_items = len(store.review_items(P, "q"))
        print(
            f"fill queue: {n_items:,} items sampled from {args.responses:,} responses"
            f" in {fill:.2f} s"
        )
        serve, submit = [], []
        done = 0
        while done < args.labels:
            progressed = False
            for who in ("ann", "bob"):
                t = time.perf_counter()
                item = queues.next_item(store, P, "q", who)
                serve.append(time.perf_counter() - t)
                if item is None:
                    continue
                progressed = True
                t = time.perf_counter()
                verdict = "pass" if truth[int(item.event_id[1:])] else "fail"  # people: truth
                queues.submit(
                    store,
                    P,
                    "q",
                    event_id=item.event_id,
                    reviewer=who,
                    key_id="",
                    labels={"correct": verdict},
                )
                submit.append(time.perf_counter() - t)
                done += 1
            if not progressed:
                break
        for name, xs in (("next item", serve), ("submit label", submit)):
            print(
                f"{name}: median {statistics.median(xs) * 1000:.1f} ms,"
                f" p95 {pct(xs, 0.95) * 1000:.1f} ms"
                f" over {len(xs):,} calls (queue of {n_items:,} items, up to {done:,} labels)"
            )
        t = time.perf_counter()
        report = calibration.report(store, P)
        took = time.perf_counter() - t
        e = report[0]["evaluators"][0]
        print(
            f"agreement report: {took:.2f} s for {report[0]['labelled']:,} labelled responses"
            f" (kappa {e['primary']['value']:.3f}, n {e['n']:,})"
        )
        store.close()


if __name__ == "__main__":
    main()
