"""The attribution benchmark's thin-data and unchanged scenarios, run through the detection job.

Run from the repository root:

    .venv/bin/python benchmarks/attribution_job.py [--seeds 20 --seed 20240610]

`attribution.py` scores `find_and_attribute` on cells. Here the same seeded worlds (same seeds,
same draws) are written response by response into an embedded chDB store (one project per
run), and `run_detection` — the job itself: series planning and bucket width, route cuts,
label moves, incident merging — runs on each project. Its incidents are scored:

* thin (small app -30 pt; thin improvement +5 pt): right when an incident blames the culprit
  in the right direction, or an `insufficient_evidence` incident names it as not excluded
  (with n a side and the n that would decide it); never a `no_version_cause` incident, never
  an innocent version blamed;
* unchanged (busy traffic, and thin traffic at x0.15; half the seeds with a harmless prompt
  deploy): alarms = incidents that a default alert rule (`Rule` defaults: regressions, every
  verdict, `unverified_arrivals: false`) would send; notices = the other incidents.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from attribution import (
    HOURS,
    SCENARIOS,
    T0,
    Scenario,
    Sink,
    Truth,
    World,
    s_unchanged,
    simulate,
)

from promptblame.analysis.alerting.rules import Rule
from promptblame.analysis.attribution.cells import MetricKind
from promptblame.analysis.detection import run_detection
from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
from promptblame.ingest.rows import responses_table, scores_table
from promptblame.settings import Settings
from promptblame.store import open_store

NOW = T0 + timedelta(hours=HOURS, minutes=5)
DEFAULT_RULE = Rule.model_validate({"name": "default", "channels": ["oncall"]})


def s_unchanged_thin(rng: np.random.Generator) -> tuple[World, Truth]:
    world, truth = s_unchanged(rng)
    return replace(world, traffic=0.15), truth


def write(store: Any, project: str, sink: Sink) -> int:
    """Every response of the sink (spread evenly over its hour) with its score."""
    events, scores = [], []
    for cell, values in sink:
        prompt_id, prompt_version = cell.prompt.split("@")
        for j, x in enumerate(values):
            eid = f"{cell.bucket}-{cell.route}-{cell.prompt}-{cell.model}-{j}"
            assert isinstance(cell.start, datetime)
            ts = cell.start + timedelta(seconds=3600 * (j + 0.5) / len(values))
            events.append(
                ResponseEvent(
                    event_id=eid,
                    ts=ts,
                    app="bench",
                    route=cell.route,
                    environment=cell.environment,
                    model=cell.model,
                    prompt_id=prompt_id,
                    prompt_version=prompt_version,
                )
            )
            scores.append(ScoreEvent(event_id=eid, name="quality", value=float(x), ts=ts))
    now = datetime.now(UTC)
    store.insert("responses", responses_table(project, events, now))
    store.insert("scores", scores_table(project, scores, now))
    return len(events)


def score_thin(incidents: list[dict[str, Any]], truth: Truth) -> tuple[bool, bool, bool]:
    """(right, innocent blamed, right without asking for the n that would decide it) for a
    thin-data culprit scenario, from the job's incidents."""
    (_, value, _, direction, _) = truth.changes[0]
    blamed = [i for i in incidents if i["verdict"] == "culprit"]
    innocent = any(value not in i["culprit"] for i in blamed)
    right = any(value in i["culprit"] and i["direction"] == direction for i in blamed)
    loose = right
    for i in incidents:
        if i["verdict"] != "insufficient_evidence":
            continue
        ev = json.loads(i["evidence"])
        right = right or any(
            c["status"] == "not_excluded" and c["value"] == value and c.get("n_needed")
            for c in ev["candidates"]
        )
        loose = loose or any(
            c["status"] == "not_excluded" and c["value"] == value for c in ev["candidates"]
        )
    said_none = any(i["verdict"] == "no_version_cause" for i in incidents)
    ok = not said_none and not innocent
    return right and ok, innocent, loose and ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds per scenario")
    parser.add_argument("--seed", type=int, default=20_240_610)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every incident")
    args = parser.parse_args()
    t_start = time.perf_counter()
    index = {sc.name: k for k, sc in enumerate(SCENARIOS)}
    runs: list[tuple[str, int, Scenario, Truth, str]] = []  # name, seed, scenario, truth, project
    thin = [sc for sc in SCENARIOS if sc.name in ("small app, large effect", "thin improvement")]
    unchanged = next(sc for sc in SCENARIOS if sc.name == "unchanged")
    plan = [(sc, index[sc.name], sc.build) for sc in thin]
    plan.append((unchanged, index[unchanged.name], unchanged.build))
    thin_unchanged = Scenario("unchanged, thin (x0.15)", s_unchanged_thin)
    plan.append((thin_unchanged, index[unchanged.name], s_unchanged_thin))
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "store", detection_window_days=14, detection_builtin_metrics=[]
        )
        store = open_store(settings)
        try:
            written = 0
            for sc, k, build in plan:
                for s in range(args.seeds):
                    rng = np.random.default_rng([args.seed, k, s])
                    world, truth = build(rng)
                    kind: MetricKind = "proportion" if s % 2 == 0 else "mean"
                    sink: Sink = []
                    simulate(rng, world, kind, sink)
                    project = f"b{len(runs)}"
                    written += write(store, project, sink)
                    runs.append((sc.name, s, sc, truth, project))
            store.materialize_scores()
            t_written = time.perf_counter() - t_start
            t_detect = 0.0
            results: dict[str, list[tuple[bool, bool, int, int]]] = {}
            loose = 0
            for name, s, _, truth, project in runs:
                t0 = time.perf_counter()
                run_detection(store, settings, project_id=project, now=NOW)
                t_detect += time.perf_counter() - t0
                incidents = store.incidents(project)
                alarms = sum(DEFAULT_RULE.matches(i) for i in incidents)
                if truth.category == "thin":
                    right, innocent, named = score_thin(incidents, truth)
                    loose += named
                else:
                    right = not any(i["verdict"] in ("culprit", "confounded") for i in incidents)
                    innocent = any(i["verdict"] == "culprit" for i in incidents)
                results.setdefault(name, []).append((right, innocent, alarms, len(incidents)))
                if args.verbose or not right or (truth.category != "thin" and alarms):
                    for i in incidents:
                        print(f"   [{name} seed {s}] {i['verdict']}: {i['summary']}")
        finally:
            store.close()
    print(f"{'scenario':<28} {'right':>7} {'innocent':>9} {'alarms':>7} {'incidents':>10}")
    for name, rows in results.items():
        n = len(rows)
        print(
            f"{name:<28} {sum(r[0] for r in rows):>3}/{n:<3} {sum(r[1] for r in rows):>9}"
            f" {sum(r[2] for r in rows):>7} {sum(r[3] for r in rows):>10}"
        )
    thin_rows = [r for sc in thin for r in results.get(sc.name, [])]
    ok = sum(r[0] for r in thin_rows)
    verdict = "PASS" if ok == len(thin_rows) else "MISS"
    print(
        f"\nthrough the job: thin-data culprit scenarios answered right or insufficient_evidence"
        f" naming it (never no_version_cause): {ok}/{len(thin_rows)} (target all: {verdict});"
        f" {loose}/{len(thin_rows)} without asking for the n that would decide it"
    )
    quiet = [r for name in (unchanged.name, thin_unchanged.name) for r in results.get(name, [])]
    alarms = sum(r[2] for r in quiet)
    wrong = sum(r[1] for r in thin_rows) + sum(r[1] for r in quiet)
    print(
        f"unchanged runs raising an alarm (default alert rule): {alarms}/{len(quiet)} "
        f"(target 0: {'PASS' if alarms == 0 else 'MISS'}); notices (incidents not sent): "
        f"{sum(r[3] - r[2] for r in quiet)}; runs blaming a wrong version: {wrong} "
        f"(target 0: {'PASS' if wrong == 0 else 'MISS'})"
    )
    print(
        f"{written:,} responses written in {t_written:.0f} s; detection job "
        f"{t_detect:.1f} s over {len(runs)} projects; elapsed {time.perf_counter() - t_start:.0f} s"
    )


if __name__ == "__main__":
    main()
