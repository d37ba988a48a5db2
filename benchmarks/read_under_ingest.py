"""Four reads in turn, again and again, while paced ingest runs (issue 18).

`read_speed.py measure` times each endpoint a few times; this keeps reading for the whole load,
so a change's effect under sustained ingest shows in one median per read. It starts
`promptblame serve` on COPY, reads each once (warm-up), starts `--rate` events/s of
`ingest.py`-style traffic and, for `--seconds`, requests the filtered response page, version
counts, versions with a metric and the overview in turn; then prints the rate achieved and the
median of each read.

    .venv/bin/python benchmarks/read_under_ingest.py --keep COPY [--rate 12800] [--seconds 45]

COPY: a fresh copy of a `read_speed.py build` store (the load writes into it). Alternate
before/after code on fresh copies for a comparison on this noisy machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's promptblame

import ingest
import read_speed

READS = (
    "GET /v1/responses (filtered page)",
    "GET /v1/versions (counts only)",
    "GET /v1/versions?metric=m0",
    "GET /reports/ (overview)",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keep", type=Path, required=True, help="a fresh copy of a read_speed store")
    ap.add_argument("--rate", type=float, default=12_800, help="ingest events/s asked")
    ap.add_argument("--seconds", type=float, default=45, help="how long the load runs")
    args = ap.parse_args()
    log = Path(tempfile.mkdtemp()) / "server.log"
    server = ingest.Server(args.keep, log)
    key = server.create_key()
    server.start()
    try:
        _, body = ingest.request(server.port, "GET", "/v1/incidents", key=key)
        found = json.loads(body)
        incidents = found.get("incidents", found) if isinstance(found, dict) else found
        endpoints = {e[0]: e for e in read_speed.endpoints(incidents[0]["incident_id"])}
        for _, method, path, payload in endpoints.values():  # warm-up
            read_speed.call(server.port, method, path, payload, key)
        rounds: list[list[float]] = []
        bodies = ingest.make_bodies(random.Random(1), run=f"ri{time.time_ns()}", n=8, batch=1000)
        with read_speed.PacedLoad(server.port, key, bodies, args.rate, clients=4) as load:
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                times = []
                for name in READS:
                    _, method, path, payload = endpoints[name]
                    t = time.perf_counter()
                    read_speed.call(server.port, method, path, payload, key)
                    times.append((time.perf_counter() - t) * 1000)
                rounds.append(times)
            achieved = load.achieved
    finally:
        server.stop()
    print(
        f"ingest: {args.rate:,.0f} events/s asked, {achieved:,.0f} achieved; {len(rounds)} rounds"
    )
    for i, name in enumerate(READS):
        median = statistics.median(r[i] for r in rounds)
        print(f"  {name:<40} median {median:6.0f} ms")


if __name__ == "__main__":
    main()
