"""Decode benchmark: CPU time of `decode_batch` per 1,000 events, the ingest hot path's JSON
reading and validation, without HTTP or the store.

Run from the repository root:

    .venv/bin/python benchmarks/decode.py [--batch 1000 --repeats 40]

Bodies are benchmarks/ingest.py's (realistic events, ~1.7 KB of JSON each). Cases: a clean
batch (the fast path), one invalid event in the batch (validation event by event), and one
event with a repeated key (the strict parse fails and the body is read again to name it).
Prints the best and the median CPU milliseconds per 1,000 events of each case (process CPU
time, so other processes on the machine disturb it less than wall time would).
To compare with another checkout: `PYTHONPATH=<checkout> .venv/bin/python benchmarks/decode.py`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import ingest as bench

from promptblame.ingest.decode import decode_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--seed", type=int, default=20)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    clean = bench.make_bodies(rng, run="d", n=1, batch=args.batch).body(1)
    one_invalid = clean.replace(b'"latency_ms":', b'"latency_ms":-', 1)
    repeated = clean.replace(b'"route":', b'"model":"x","route":', 1)
    cases = {"clean batch": clean, "one invalid event": one_invalid, "one repeated key": repeated}
    for body in cases.values():  # the events this measures are what the server would see
        out = decode_batch(body, "responses")
        assert len(out.events) + len(out.rejected) == args.batch
    print(f"decode_batch, {args.batch}-event bodies of {len(clean) / args.batch:,.0f} B/event")
    print(f"{'case':<22}{'best ms/1k':>12}{'median ms/1k':>14}  rejected")
    per_k = 1000 / args.batch
    for name, body in cases.items():
        times = []
        for _ in range(args.repeats):
            started = time.process_time()
            out = decode_batch(body, "responses")
            times.append((time.process_time() - started) * 1000 * per_k)
        print(
            f"{name:<22}{min(times):>12.2f}{statistics.median(times):>14.2f}  {len(out.rejected)}"
        )
    print(json.dumps({"python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
