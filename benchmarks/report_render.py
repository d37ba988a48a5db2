"""Render time of the report pages: the view (store reads, charts) plus the HTML.

Default: builds the report test traffic in an embedded store (10 days, ~19k scored responses,
one prompt regression found by the detection job), warms up once, then renders the incident
report and the overview N times and prints the median and p90 against the target: <= 300 ms.

With --demo DIR (a directory `promptblame demo --no-serve --data-dir DIR` left; no server may
hold it): every kind of page on the demo's month of data (~211k responses) — overview, each
incident, the incident/experiment/jobs lists, the response explorer (plain and filtered by
text and score), one response, a prompt with its diff — each against the same target.

Run: .venv/bin/python benchmarks/report_render.py [--n 20] [--demo promptblame-demo]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def demo_pages(store: Any, n: int) -> dict[str, list[float]]:
    from promptblame.reports import data
    from promptblame.reports import render as r
    from promptblame.store import ResponseFilter

    settings = Settings(data_dir=Path("unused"))
    p = "demo"
    pages: dict[str, Callable[[], object]] = {
        "overview": lambda: r.render_overview(data.overview_view(store, p)),
        "incidents list": lambda: r.render_incidents(data.incidents_view(store, p, status="all")),
        "experiments list": lambda: r.render_experiments(data.experiments_view(store, p)),
        "jobs": lambda: r.render_jobs(data.jobs_view(store, p, settings)),
        "responses": lambda: r.render_responses(
            data.responses_view(store, p, f=ResponseFilter(), query={})
        ),
        "responses, text + score filter": lambda: r.render_responses(
            data.responses_view(
                store,
                p,
                f=ResponseFilter(app="support-bot"),
                query={},
                search="refund",
                score=("resolved", 0.0, 0.0),
            )
        ),
        "prompt answer (diff v3 → v4)": lambda: r.render_prompt(
            data.prompt_view(store, p, "answer")
        ),
    }
    one = store.list_responses(p, ResponseFilter(app="extractor"), limit=1, columns=("event_id",))
    event_id = one[0]["event_id"]
    pages["one response"] = lambda: r.render_response(data.response_view(store, p, event_id))

    def incident(iid: str) -> Callable[[], object]:
        return lambda: r.render_incident(data.incident_view(store, p, iid))

    for inc in store.incidents(p):
        name = f"incident {inc['app']}/{inc['route'] or '*'} {inc['metric']}"
        pages[name] = incident(inc["incident_id"])
    return {name: timed(fn, n) for name, fn in pages.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--demo", type=Path, help="a demo directory (promptblame demo --no-serve)")
    args = parser.parse_args()
    if args.demo:
        store = open_store(Settings(data_dir=args.demo / "store"), migrate=False)
        try:
            figures = demo_pages(store, args.n)
        finally:
            store.close()
        worst = 0.0
        for name, ms in figures.items():
            p90 = ms[int(0.9 * (len(ms) - 1))]
            worst = max(worst, statistics.median(ms))
            print(f"{name:<45} median {statistics.median(ms):4.0f} ms, p90 {p90:4.0f} ms")
        verdict = "PASS" if worst <= TARGET_MS else "MISS"
        print(f"{verdict}: slowest page median {worst:.0f} ms, target <= {TARGET_MS:.0f} ms")
        return
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
