"""The incident page in-process with one and with two read connections, alternated (issue 18).

The page reads in two threads (the chart's cells and the rest); the embedded store has
`READERS` read connections so their queries can run at once. This builds the newest
incident's page `--pairs` times each way, one then two connections, in one process (one
connection is held out of the pool for the first), and prints the medians and every pair.

    .venv/bin/python benchmarks/incident_page.py --keep COPY [--pairs 12]

COPY: a copy of a `read_speed.py build` store (the first scored-table job may write into it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from promptblame.reports import data, render
from promptblame.store.base import reads_share_one_job_run
from promptblame.store.embedded import EmbeddedStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keep", type=Path, required=True, help="a copy of a read_speed.py store")
    ap.add_argument("--pairs", type=int, default=12)
    args = ap.parse_args()
    store = EmbeddedStore(args.keep, "promptblame")
    try:
        store.migrate()
        store.materialize_scores()
        project = store._rows("SELECT DISTINCT project_id FROM incidents")[0]["project_id"]
        incident = store.incidents(project)[0]["incident_id"]

        def page() -> float:
            t = time.perf_counter()
            with reads_share_one_job_run():  # as the server's middleware does per request
                render.render_incident(data.incident_view(store, project, incident))
            return time.perf_counter() - t

        page()  # warm caches
        one, two = [], []
        for _ in range(args.pairs):
            spare = store._idle.get()  # one connection left in the pool
            try:
                one.append(page())
            finally:
                store._idle.put(spare)
            two.append(page())
    finally:
        store.close()
    load = os.getloadavg()
    print(
        f"incident {incident}: one read connection median {statistics.median(one) * 1000:.0f} ms,"
        f" two {statistics.median(two) * 1000:.0f} ms ({args.pairs} pairs,"
        f" load average {load[0]:.2f})"
    )
    print(
        "pairs (one/two, ms): "
        + " ".join(f"{a * 1000:.0f}/{b * 1000:.0f}" for a, b in zip(one, two, strict=True))
    )


if __name__ == "__main__":
    main()
