"""Render time of one incident report: the view (store reads, charts) plus the HTML.

Builds the report test traffic in an embedded store (10 days, ~19k scored responses, one prompt
regression found by the detection job), warms up once, then renders the incident report N
times and prints the median and p90 against the target: <= 300 ms.

Run: .venv/bin/python benchmarks/report_render.py [--n 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for the tests' traffic builder

from promptblame.reports.data import incident_view, overview_view
from promptblame.reports.render import render_incident, render_overview
from promptblame.settings import Settings
from promptblame.store import open_store
from tests.test_incidents import NOW
from tests.test_reports import report_traffic

TARGET_MS = 300.0


def timed(fn: Callable[[], object], n: int) -> list[float]:
    fn()  # warm-up: imports, templates, matplotlib fonts
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Settings(data_dir=Path(tmp) / "data"))
        try:
            incident_id = report_traffic(store)
            inc = timed(
                lambda: render_incident(incident_view(store, "acme", incident_id, now=NOW)), args.n
            )
            ov = timed(lambda: render_overview(overview_view(store, "acme", now=NOW)), args.n)
        finally:
            store.close()
    for name, ms in (("incident report", inc), ("overview", ov)):
        p90 = ms[int(0.9 * (len(ms) - 1))]
        print(f"{name}: median {statistics.median(ms):.0f} ms, p90 {p90:.0f} ms (n={len(ms)})")
    verdict = "PASS" if statistics.median(inc) <= TARGET_MS else "MISS"
    median = statistics.median(inc)
    print(f"{verdict}: incident report median {median:.0f} ms, target <= {TARGET_MS:.0f} ms")


if __name__ == "__main__":
    main()
