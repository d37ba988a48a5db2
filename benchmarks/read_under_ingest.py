"""Four reads in turn, again and again, while paced ingest runs (issue 18).

`read_speed.py measure` times each endpoint a few times; this keeps reading for the whole load,
so a change's effect under sustained ingest shows in one median per read. It starts
`promptblame serve` on COPY, reads each once (warm-up), starts `--rate` events/s of
`ingest.py`-style traffic and, for `--seconds`, requests the filtered response page, version
counts, versions with a metric and the overview in turn; then prints the rate achieved and the
median of each read, quiet (`--quiet-seconds` of the same loop before the load) and under load.

    .venv/bin/python benchmarks/read_under_ingest.py --keep COPY [--rate 12800] [--seconds 45]
        [--reads-from COPY2]

`--reads-from`: the reads go to a second server on COPY2 that takes no ingest, while the load
goes to the first. That is the floor of any design on this machine: the cores are as busy, but
the reading process holds none of the load (no interpreter lock shared with decoding, no job to
run over new rows).

COPY: a fresh copy of a `read_speed.py build` store (the load writes into it). Alternate
before/after code on fresh copies for a comparison on this noisy machine.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--quiet-seconds", type=float, default=15, help="reads before the load")
    ap.add_argument(
        "--reads-from",
        type=Path,
        help="another copy: read from a second server on it that takes no ingest (the floor)",
    )
    args = ap.parse_args()
    logs = Path(tempfile.mkdtemp())
    servers = [ingest.Server(args.keep, logs / "ingest.log")]
    if args.reads_from:
        servers.append(ingest.Server(args.reads_from, logs / "reads.log"))
    keys = [s.create_key() for s in servers]
    for s in servers:
        s.start()
    try:
        reader, key = servers[-1], keys[-1]
        incident = read_speed.first_incident(reader.port, key)
        endpoints = {e[0]: e for e in read_speed.endpoints(incident)}

        def read_for(seconds: float) -> list[list[float]]:
            rounds: list[list[float]] = []
            end = time.monotonic() + seconds
            while not rounds or time.monotonic() < end:  # at least one round
                times = []
                for name in READS:
                    _, method, path, payload = endpoints[name]
                    t = time.perf_counter()
                    read_speed.call(reader.port, method, path, payload, key)
                    times.append((time.perf_counter() - t) * 1000)
                rounds.append(times)
            return rounds

        read_for(0)  # one round: warm-up
        quiet = read_for(args.quiet_seconds)
        bodies = ingest.make_bodies(random.Random(1), run=f"ri{time.time_ns()}", n=8, batch=1000)
        with read_speed.PacedLoad(servers[0].port, keys[0], bodies, args.rate, clients=4) as load:
            loaded = read_for(args.seconds)
            achieved = load.achieved
    finally:
        for s in servers:
            s.stop()
    where = "a second server, no ingest" if args.reads_from else "the ingesting server"
    print(
        f"ingest: {args.rate:,.0f} events/s asked, {achieved:,.0f} achieved;"
        f" reads from {where}: {len(quiet)} quiet rounds, {len(loaded)} under load"
    )
    print(f"  {'read':<40} {'quiet p50':>10} {'load p50':>9} {'ratio':>6}")
    for i, name in enumerate(READS):
        q = statistics.median(r[i] for r in quiet)
        m = statistics.median(r[i] for r in loaded)
        print(f"  {name:<40} {q:7.0f} ms {m:6.0f} ms {m / q:5.1f}x")


if __name__ == "__main__":
    main()
