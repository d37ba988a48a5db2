"""Attribution benchmark: seeded rollout scenarios with a known culprit (or none), end to end.

Run from the repository root:

    .venv/bin/python benchmarks/attribution.py [--seeds 10 --seed 20240610]

Every scenario is 14 days of hourly cells (bucket x route x environment x prompt x model, with
n / sum / sum of squares), drawn response by response, as the detection job reads them from
ClickHouse. Then `find_and_attribute` runs change-point detection on the aggregate series and
attributes each change point; the verdicts are scored against the truth.

World: three routes (summarize 50% of traffic at ~0.80, extract 30% at ~0.88, chat 20% at
~0.70), each with its own prompt (summarize@v6, extract@v3, chat@v2), one model
(gpt-4o-2024-05-13) until an upgrade (gpt-4o-2024-08-06); traffic 40 responses an hour at night
to 300 at the peak; a daily quality profile of 2 points; hour shocks of 1 point shared by all
routes plus 0.5 point per route (overdispersion). Half of the seeds use a pass/fail metric
(Bernoulli), half a continuous 0..1 score (Beta, concentration 4, sd ~0.18). Changes happen
at a random hour between day 5 and day 9.

Scoring per scenario and seed:
* culprit scenarios: right when every true change has a `culprit` verdict naming the right
  dimension and value, the right direction (and the right route scope where the truth has
  one), and no verdict blames anything else; "time ok" when that verdict's bucket is within 2
  of the truth;
* confounded: a `confounded` verdict naming both changes, and no culprit;
* traffic mix / drift: a `no_version_cause` verdict with that cause, and no culprit;
* unchanged: no culprit and no confounded verdict.
"innocent blamed" counts runs where a verdict named a version that did not cause a change.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from promptblame.analysis.attribution import Cell, Verdict, find_and_attribute
from promptblame.analysis.attribution.cells import MetricKind
from promptblame.analysis.detection import plan_series

HOURS = 14 * 24
T0 = datetime(2024, 6, 10, tzinfo=UTC)
OLD, NEW = "gpt-4o-2024-05-13", "gpt-4o-2024-08-06"
ROUTES = {"summarize": (0.5, 0.80), "extract": (0.3, 0.88), "chat": (0.2, 0.70)}
PROMPTS = {"summarize": "summarize@v6", "extract": "extract@v3", "chat": "chat@v2"}
TARGET_TOP1 = 0.97

Alloc = Callable[[int, str], list[tuple[str, str, float]]]  # hour, route -> (prompt, model, p)
Effect = Callable[[int, str, str, str], float]  # hour, route, prompt, model -> quality change


def default_alloc(hour: int, route: str) -> list[tuple[str, str, float]]:
    return [(PROMPTS[route], OLD, 1.0)]


@dataclass
class World:
    alloc: Alloc = default_alloc
    effect: Effect = lambda h, r, p, m: 0.0
    shares: Callable[[int], dict[str, float]] = lambda h: {r: s for r, (s, _) in ROUTES.items()}
    drift: Callable[[int], float] = lambda h: 0.0
    traffic: float = 1.0  # multiplier of the traffic curve
    season: float = 0.02  # amplitude of the daily quality profile
    scored: Callable[[int], float] = lambda h: 1.0  # share of responses scored by now (late)


@dataclass(frozen=True)
class Truth:
    category: str  # culprit | thin | confounded | traffic_mix | drift | unchanged
    # thin: a culprit on little data; right = the culprit, or insufficient_evidence naming it
    # as not excluded; never "no version cause"
    changes: tuple[tuple[str, str, tuple[int, ...], str, str | None], ...] = ()
    # (dimension, value, acceptable indices, direction, scope route)
    confounded: tuple[str, ...] = ()  # values that must be named
    innocent: tuple[str, ...] = ()  # values that must never be blamed


@dataclass
class Scenario:
    name: str
    build: Callable[[np.random.Generator], tuple[World, Truth]]
    notes: str = ""
    results: list[tuple[bool, bool, bool | None]] = field(default_factory=list)


Sink = list[tuple[Cell, np.ndarray]]  # each cell with its responses' values


def simulate(
    rng: np.random.Generator, world: World, kind: MetricKind, sink: Sink | None = None
) -> list[Cell]:
    """Hourly cells; `sink` (when given) also receives each cell's per-response values, for
    runs through the detection job (`attribution_job.py`); the draws are the same either way."""
    h = np.arange(HOURS)
    shape = ((1 + np.cos(2 * np.pi * (h % 24 - 14) / 24)) / 2) ** 1.5
    lam = (40 + 260 * shape) * world.traffic
    profile = world.season * np.sin(2 * np.pi * (h % 24 - 3) / 24)
    shock = rng.normal(0, 0.01, HOURS)
    cells: list[Cell] = []
    for t in range(HOURS):
        start = T0 + timedelta(hours=t)
        n_t = rng.poisson(lam[t] * world.scored(t))
        shares = world.shares(t)
        routes = list(shares)
        per_route = rng.multinomial(n_t, [shares[r] for r in routes])
        for route, n_r in zip(routes, per_route, strict=True):
            if n_r == 0:
                continue
            alloc = world.alloc(t, route)
            split = rng.multinomial(n_r, [p for _, _, p in alloc])
            level = ROUTES[route][1] + profile[t] + shock[t] + rng.normal(0, 0.005) + world.drift(t)
            for (prompt, model, _), n in zip(alloc, split, strict=True):
                if n == 0:
                    continue
                mu = float(np.clip(level + world.effect(t, route, prompt, model), 0.02, 0.98))
                if kind == "proportion":
                    s = float(rng.binomial(n, mu))
                    q = s
                    x = np.r_[np.ones(int(s)), np.zeros(int(n - s))]
                else:
                    x = rng.beta(mu * 4, (1 - mu) * 4, n)
                    s, q = float(x.sum()), float(x @ x)
                cells.append(Cell(t, start, route, "prod", prompt, model, int(n), s, q))
                if sink is not None:
                    sink.append((cells[-1], x))
    return cells


def at(rng: np.random.Generator) -> int:
    return int(rng.integers(5 * 24, 9 * 24))


def prompt_switch(route: str, t0: int, new: str, *, until: int | None = None) -> Alloc:
    def alloc(h: int, r: str) -> list[tuple[str, str, float]]:
        on = r == route and h >= t0 and (until is None or h < until)
        return [(new if on else PROMPTS[r], OLD, 1.0)]

    return alloc


# --------------------------------------------------------------------------------------------
# scenarios


def s_prompt_cutover(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)
    w = World(
        alloc=prompt_switch("summarize", t0, "summarize@v7"),
        effect=lambda h, r, p, m: -0.08 if p == "summarize@v7" else 0.0,
    )
    return w, Truth("culprit", (("prompt", "summarize@v7", (t0,), "regression", None),))


def s_model_upgrade(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)
    w = World(
        alloc=lambda h, r: [(PROMPTS[r], NEW if h >= t0 else OLD, 1.0)],
        effect=lambda h, r, p, m: -0.05 if m == NEW else 0.0,
    )
    return w, Truth("culprit", (("model", NEW, (t0,), "regression", None),))


def s_canary_ramp(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)
    steps = [(t0 - 72, 0.05), (t0 - 48, 0.25), (t0 - 24, 0.5), (t0, 1.0)]

    def share(h: int) -> float:
        return max([s for start, s in steps if h >= start], default=0.0)

    def alloc(h: int, r: str) -> list[tuple[str, str, float]]:
        s = share(h)
        return [(PROMPTS[r], NEW, s), (PROMPTS[r], OLD, 1 - s)]

    w = World(alloc=alloc, effect=lambda h, r, p, m: -0.08 if m == NEW else 0.0)
    idx = tuple(start for start, _ in steps)
    return w, Truth("culprit", (("model", NEW, idx, "regression", None),))


def s_ab_arm(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)

    def alloc(h: int, r: str) -> list[tuple[str, str, float]]:
        if r == "summarize" and h >= t0:
            return [("summarize@v6", OLD, 0.5), ("summarize@v7", OLD, 0.5)]
        return [(PROMPTS[r], OLD, 1.0)]

    w = World(alloc=alloc, effect=lambda h, r, p, m: -0.14 if p == "summarize@v7" else 0.0)
    return w, Truth("culprit", (("prompt", "summarize@v7", (t0,), "regression", None),))


def s_confounded(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)

    def alloc(h: int, r: str) -> list[tuple[str, str, float]]:
        if r == "summarize" and h >= t0:
            return [("summarize@v7", NEW, 1.0)]
        return [(PROMPTS[r], OLD, 1.0)]

    w = World(alloc=alloc, effect=lambda h, r, p, m: -0.10 if p == "summarize@v7" else 0.0)
    return w, Truth("confounded", confounded=("summarize@v7", NEW), innocent=("summarize@v7", NEW))


def s_holdout(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)

    def alloc(h: int, r: str) -> list[tuple[str, str, float]]:
        if r == "summarize" and h >= t0:
            return [("summarize@v7", NEW, 0.95), ("summarize@v6", NEW, 0.05)]
        return [(PROMPTS[r], OLD, 1.0)]

    w = World(alloc=alloc, effect=lambda h, r, p, m: -0.10 if p == "summarize@v7" else 0.0)
    return w, Truth(
        "culprit", (("prompt", "summarize@v7", (t0,), "regression", None),), innocent=(NEW,)
    )


def s_mix_with_deploy(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)
    after = {"summarize": 0.3, "extract": 0.2, "chat": 0.5}
    w = World(
        alloc=prompt_switch("extract", t0, "extract@v4"),
        shares=lambda h: after if h >= t0 else {r: s for r, (s, _) in ROUTES.items()},
    )
    return w, Truth("traffic_mix", innocent=("extract@v4",))


def s_drift(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)
    w = World(
        alloc=prompt_switch("summarize", t0, "summarize@v7"),
        drift=lambda h: -0.08 * float(np.clip((h - (t0 - 36)) / 72, 0, 1)),
    )
    return w, Truth("drift", innocent=("summarize@v7",))


def s_drift_all_routes_upgrade(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)
    w = World(
        alloc=lambda h, r: [(PROMPTS[r], NEW if h >= t0 else OLD, 1.0)],
        drift=lambda h: -0.08 * float(np.clip((h - (t0 - 36)) / 72, 0, 1)),
    )
    return w, Truth("drift", innocent=(NEW,))


def s_improvement(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)
    w = World(
        alloc=prompt_switch("summarize", t0, "summarize@v7"),
        effect=lambda h, r, p, m: 0.08 if p == "summarize@v7" else 0.0,
    )
    return w, Truth("culprit", (("prompt", "summarize@v7", (t0,), "improvement", None),))


def s_route_only(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)
    w = World(
        alloc=lambda h, r: [(PROMPTS[r], NEW if h >= t0 else OLD, 1.0)],
        effect=lambda h, r, p, m: -0.15 if m == NEW and r == "extract" else 0.0,
    )
    return w, Truth("culprit", (("model", NEW, (t0,), "regression", "extract"),))


def s_small_effect_large_traffic(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)
    w = World(
        alloc=lambda h, r: [(PROMPTS[r], NEW if h >= t0 else OLD, 1.0)],
        effect=lambda h, r, p, m: -0.02 if m == NEW else 0.0,
        traffic=10.0,
    )
    return w, Truth("culprit", (("model", NEW, (t0,), "regression", None),))


def s_large_effect_tiny_traffic(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)
    w = World(
        alloc=prompt_switch("summarize", t0, "summarize@v7"),
        effect=lambda h, r, p, m: -0.35 if p == "summarize@v7" else 0.0,
        traffic=0.04,
    )
    return w, Truth("culprit", (("prompt", "summarize@v7", (t0,), "regression", None),))


def s_seasonality(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)
    w = World(
        alloc=lambda h, r: [(PROMPTS[r], NEW if h >= t0 else OLD, 1.0)],
        effect=lambda h, r, p, m: -0.05 if m == NEW else 0.0,
        season=0.10,
    )
    return w, Truth("culprit", (("model", NEW, (t0,), "regression", None),))


def s_late_scores(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = HOURS - 30
    w = World(
        alloc=prompt_switch("summarize", t0, "summarize@v7"),
        effect=lambda h, r, p, m: -0.10 if p == "summarize@v7" else 0.0,
        scored=lambda h: float(np.clip((HOURS - h) / 24, 0.05, 1.0)),
    )
    return w, Truth("culprit", (("prompt", "summarize@v7", (t0,), "regression", None),))


def s_late_scores_unchanged(rng: np.random.Generator) -> tuple[World, Truth]:
    w = World(scored=lambda h: float(np.clip((HOURS - h) / 24, 0.05, 1.0)))
    return w, Truth("unchanged")


def s_rollback(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng) - 24
    t1 = t0 + 72
    w = World(
        alloc=prompt_switch("summarize", t0, "summarize@v7", until=t1),
        effect=lambda h, r, p, m: -0.10 if p == "summarize@v7" else 0.0,
    )
    return w, Truth(
        "culprit",
        (
            ("prompt", "summarize@v7", (t0,), "regression", None),
            ("prompt", "summarize@v6", (t1,), "improvement", None),
        ),
    )


def s_staged_rollout(rng: np.random.Generator) -> tuple[World, Truth]:
    """A prompt rolled out at 5 %, 25 % and 100 % a day or two apart: one culprit, blamed
    once (the steps are its evidence), never twice and never a step called drift."""
    t0 = at(rng)
    t1 = t0 - int(rng.integers(24, 49))
    t2 = t1 - int(rng.integers(24, 49))
    steps = [(t2, 0.05), (t1, 0.25), (t0, 1.0)]

    def alloc(h: int, r: str) -> list[tuple[str, str, float]]:
        s = max([x for start, x in steps if h >= start], default=0.0) if r == "summarize" else 0
        if s == 0:
            return [(PROMPTS[r], OLD, 1.0)]
        return [("summarize@v7", OLD, s), ("summarize@v6", OLD, 1 - s)]

    w = World(alloc=alloc, effect=lambda h, r, p, m: -0.12 if p == "summarize@v7" else 0.0)
    idx = tuple(start for start, _ in steps)
    return w, Truth("culprit", (("prompt", "summarize@v7", idx, "regression", None),))


def s_small_app_large_effect(rng: np.random.Generator) -> tuple[World, Truth]:
    """A small app: ~1.4 responses an hour in all, -30 pt on its new prompt."""
    t0 = at(rng)
    w = World(
        alloc=prompt_switch("summarize", t0, "summarize@v7"),
        effect=lambda h, r, p, m: -0.30 if p == "summarize@v7" else 0.0,
        traffic=0.01,
    )
    return w, Truth("thin", (("prompt", "summarize@v7", (t0,), "regression", None),))


def s_thin_improvement(rng: np.random.Generator) -> tuple[World, Truth]:
    """+5 pt from a new prompt with a few hundred responses a day on its route."""
    t0 = at(rng)
    w = World(
        alloc=prompt_switch("summarize", t0, "summarize@v7"),
        effect=lambda h, r, p, m: 0.05 if p == "summarize@v7" else 0.0,
        traffic=0.15,
    )
    return w, Truth("thin", (("prompt", "summarize@v7", (t0,), "improvement", None),))


def s_unchanged(rng: np.random.Generator) -> tuple[World, Truth]:
    t0 = at(rng)
    harmless = rng.random() < 0.5
    alloc = prompt_switch("extract", t0, "extract@v4") if harmless else default_alloc
    return World(alloc=alloc), Truth("unchanged", innocent=("extract@v4",))


SCENARIOS = [
    Scenario("prompt cutover", s_prompt_cutover, "summarize@v6 -> v7, -8 pt on its route"),
    Scenario("model upgrade", s_model_upgrade, "all routes, -5 pt"),
    Scenario("canary ramp", s_canary_ramp, "5/25/50/100% a day each, -8 pt"),
    Scenario("A/B arm", s_ab_arm, "50% arm from t0, -14 pt on the arm"),
    Scenario("prompt+model, no overlap", s_confounded, "both switch on summarize, -10 pt"),
    Scenario("prompt+model, 5% holdout", s_holdout, "holdout keeps v6 on the new model"),
    Scenario("mix shift + harmless deploy", s_mix_with_deploy, "chat 20% -> 50%, extract@v4"),
    Scenario("gradual drift", s_drift, "-8 pt over 3 days, harmless cutover in it"),
    Scenario(
        "drift + harmless model upgrade",
        s_drift_all_routes_upgrade,
        "same drift, model upgrade on every route (no control traffic)",
    ),
    Scenario("improvement", s_improvement, "summarize@v7 +8 pt"),
    Scenario("route-only regression", s_route_only, "new model -15 pt on extract only"),
    Scenario("small effect, large traffic", s_small_effect_large_traffic, "-2 pt, 10x traffic"),
    Scenario("large effect, tiny traffic", s_large_effect_tiny_traffic, "-35 pt, ~6/h"),
    Scenario("seasonality + version", s_seasonality, "10 pt daily profile, -5 pt model"),
    Scenario("late scores", s_late_scores, "cutover 30 h before the end, last day thinly scored"),
    Scenario("late scores, unchanged", s_late_scores_unchanged, "last day thinly scored"),
    Scenario("rollback", s_rollback, "v7 -10 pt, rolled back 3 days later"),
    Scenario("unchanged", s_unchanged, "half the seeds with a harmless deploy"),
    Scenario("staged rollout 5/25/100", s_staged_rollout, "-12 pt prompt, steps 1-2 days apart"),
    Scenario("small app, large effect", s_small_app_large_effect, "-30 pt, ~1.4/h in all"),
    Scenario("thin improvement", s_thin_improvement, "+5 pt prompt, traffic x0.15"),
]


def bucketed(cells: list[Cell]) -> tuple[list[Cell], int]:
    """The cells on the bucket width the detection job would choose for this series
    (`plan_series`: hourly when there is enough traffic, coarser when not)."""
    by_hour: dict[int, int] = {}
    for c in cells:
        by_hour[c.bucket] = by_hour.get(c.bucket, 0) + c.n
    hours = sorted(by_hour)
    plan = plan_series(
        [T0 + timedelta(hours=h) for h in hours],
        [by_hour[h] for h in hours],
        since=T0,
        until=T0 + timedelta(hours=HOURS),
        bucket_seconds=3600,
        min_scores=60,
    )
    k = (plan.bucket_seconds or 3600) // 3600
    if k == 1:
        return cells, 3600
    merged: dict[tuple[int, str, str, str, str], list[float]] = {}
    for c in cells:
        key = (c.bucket // k, c.route, c.environment, c.prompt, c.model)
        m = merged.setdefault(key, [0, 0.0, 0.0])
        m[0] += c.n
        m[1] += c.total
        m[2] += c.total_sq
    out = [
        Cell(b, T0 + timedelta(hours=b * k), r, e, p, mo, int(v[0]), v[1], v[2])
        for (b, r, e, p, mo), v in sorted(merged.items())
    ]
    return out, 3600 * k


def score(verdicts: list[Verdict], truth: Truth, k: int = 1) -> tuple[bool, bool, bool | None]:
    """(right, innocent blamed, time within 2 buckets or None); k: hours per bucket."""
    blamed = [v for v in verdicts if v.kind == "culprit" and v.culprit is not None]
    true_values = {value for _, value, *_ in truth.changes}
    innocent = any(v.culprit is not None and v.culprit.value not in true_values for v in blamed)
    if truth.category == "thin":
        named = any(
            v.kind == "insufficient_evidence"
            and any(c.status == "not_excluded" and c.value in true_values for c in v.candidates)
            for v in verdicts
        )
        said_none = any(v.kind == "no_version_cause" for v in verdicts)
        right_culprit = score(verdicts, replace(truth, category="culprit"), k)[0]
        return (right_culprit or named) and not said_none and not innocent, innocent, None
    if truth.category == "culprit":
        # one culprit is blamed once for one change: a staged rollout is one incident
        for _, value, *_ in truth.changes:
            if len({(v.culprit.value, v.direction) for v in blamed if v.culprit}) < len(
                [v for v in blamed if v.culprit and v.culprit.value == value]
            ):
                return False, innocent, False
        right, timely = True, True
        for dim, value, indices, direction, scope in truth.changes:
            match = [
                v
                for v in blamed
                if v.culprit is not None
                and (v.culprit.dimension, v.culprit.value) == (dim, value)
                and v.direction == direction
                and (scope is None or v.culprit.scope_route == scope)
            ]
            if not match:
                right = timely = False
                continue
            timely = timely and any(
                min(abs((v.index or 0) * k - i) for i in indices) <= 2 * k for v in match
            )
        return right and not innocent, innocent, timely
    if truth.category == "confounded":
        ok = any(
            v.kind == "confounded"
            and v.joint is not None
            and all(x in v.joint.value for x in truth.confounded)
            for v in verdicts
        )
        return ok and not blamed, bool(blamed), None
    if truth.category in ("traffic_mix", "drift"):
        ok = any(v.kind == "no_version_cause" and v.cause == truth.category for v in verdicts)
        return ok and not blamed, bool(blamed), None
    ok = not any(v.kind in ("culprit", "confounded") for v in verdicts)
    return ok, bool(blamed), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per scenario (half each kind)")
    parser.add_argument("--seed", type=int, default=20_240_610)
    parser.add_argument("--only", default=None, help="run scenarios whose name contains this")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every verdict")
    args = parser.parse_args()
    t_start = time.perf_counter()
    print(f"{'scenario':<30} {'right':>7} {'innocent':>9} {'time ok':>8}  setup")
    culprit_right = culprit_total = innocent_nonculprit = 0
    time_ok = time_total = 0
    thin_right = thin_total = 0
    for k, sc in enumerate(SCENARIOS):
        if args.only and args.only not in sc.name:
            continue
        for s in range(args.seeds):
            rng = np.random.default_rng([args.seed, k, s])
            world, truth = sc.build(rng)
            kind: MetricKind = "proportion" if s % 2 == 0 else "mean"
            cells, width = bucketed(simulate(rng, world, kind))
            verdicts = find_and_attribute(cells, kind=kind, bucket_seconds=width)
            right, innocent, timely = score(verdicts, truth, width // 3600)
            sc.results.append((right, innocent, timely))
            if args.verbose or not right:
                for v in verdicts or []:
                    print(f"   [{sc.name} seed {s} {kind}] {v.kind}: {v.summary}")
                if not verdicts:
                    print(f"   [{sc.name} seed {s} {kind}] no change point")
            if truth.category == "thin":
                thin_total += 1
                thin_right += right
                innocent_nonculprit += innocent
            elif truth.category == "culprit":
                culprit_total += 1
                culprit_right += right
                time_total += 1
                time_ok += bool(timely)
            elif innocent:
                innocent_nonculprit += 1
        n = len(sc.results)
        r = sum(x[0] for x in sc.results)
        i = sum(x[1] for x in sc.results)
        t = [x[2] for x in sc.results if x[2] is not None]
        t_txt = f"{sum(t)}/{len(t)}" if t else "-"
        print(f"{sc.name:<30} {r:>3}/{n:<3} {i:>9} {t_txt:>8}  {sc.notes}")
    if culprit_total:
        top1 = culprit_right / culprit_total
        verdict = "PASS" if top1 >= TARGET_TOP1 else "MISS"
        print(
            f"\nculprit scenarios: top-1 right {culprit_right}/{culprit_total} = {top1:.1%} "
            f"(target >= {TARGET_TOP1:.0%}: {verdict}); shift time within 2 buckets "
            f"{time_ok}/{time_total}"
        )
    if thin_total:
        verdict = "PASS" if thin_right == thin_total else "MISS"
        print(
            f"thin-data culprit scenarios answered right or insufficient_evidence naming it "
            f"(never no_version_cause): {thin_right}/{thin_total} (target all: {verdict})"
        )
    verdict = "PASS" if innocent_nonculprit == 0 else "MISS"
    print(
        f"confounded / mix / drift / unchanged / thin runs blaming a wrong version: "
        f"{innocent_nonculprit} "
        f"(target 0: {verdict})"
    )
    print(f"elapsed {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
