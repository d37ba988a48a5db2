"""Guarded rollouts, simulated with the real decision function (releases/policy.py): false
rollbacks of identical candidates at several check frequencies, and how fast true regressions
are caught, next to what a fixed-horizon test would need.

Run from the repository root:

    .venv/bin/python benchmarks/rollout.py [--runs 500 --seed 1]

Each simulated rollout: 200 responses a minute on the label, split by the step's percent
(binomial), steps 1, 5, 25, 50, 100 %, at least 200 candidate responses and 30 minutes per
step, one pass/fail guardrail (incumbent rate 0.80, max_drop 0, alpha 0.05), checked every
`k` minutes with `decide` exactly as the rollout job calls it (cumulative moments since the
rollout started, this step's counts for the sample-ratio check). Seeded: the same command
prints the same figures.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptblame.analysis.moments import Moments
from promptblame.releases.policy import Guardrail, Look, Plan, decide

PER_MINUTE = 200
BASE = 0.80
PLAN = Plan(
    steps=(1, 5, 25, 50, 100),
    min_responses_per_step=200,
    min_minutes_per_step=30,
    guardrails=(Guardrail(metric="resolved", max_drop=0.0, alpha=0.05),),
)
MAX_MINUTES = 24 * 60


@dataclass
class Outcome:
    action: str  # rollback | complete | pause | timeout
    step: int  # step index at the end
    candidate_served: int  # candidate responses before the decision


def simulate(rng: np.random.Generator, *, candidate_rate: float, every: int) -> Outcome:
    inc = [0, 0]  # n, successes since the start
    cand = [0, 0]
    step, step_start, step_counts = 0, 0, {"candidate": 0, "incumbent": 0}
    for minute in range(1, MAX_MINUTES + 1):
        p = PLAN.steps[step] / 100
        nc = int(rng.binomial(PER_MINUTE, p))
        ni = PER_MINUTE - nc
        cand[0] += nc
        cand[1] += int(rng.binomial(nc, candidate_rate))
        inc[0] += ni
        inc[1] += int(rng.binomial(ni, BASE))
        step_counts["candidate"] += nc
        step_counts["incumbent"] += ni
        if minute % every:
            continue
        look = Look(
            step=step,
            step_minutes=minute - step_start,
            step_counts=step_counts,
            metrics={
                "resolved": (
                    Moments(inc[0], inc[1], inc[1]),
                    Moments(cand[0], cand[1], cand[1]),
                )
            },
        )
        d = decide(PLAN, look)
        if d.action in ("rollback", "pause", "complete"):
            return Outcome(d.action, step, cand[0])
        if d.action == "advance":
            step, step_start = step + 1, minute
            step_counts = {"candidate": 0, "incumbent": 0}
    return Outcome("timeout", step, cand[0])


def wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959964
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return centre - half, centre + half


def fixed_horizon_n(drop: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per arm, a two-sided two-proportion z test at this drop from BASE."""
    p1, p2 = BASE, BASE - drop
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return math.ceil(z * z * (p1 * (1 - p1) + p2 * (1 - p2)) / drop**2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"{args.runs} rollouts per row; steps {PLAN.steps}; {PER_MINUTE} responses/min;")
    print(
        f"min {PLAN.min_responses_per_step} candidate responses and"
        f" {PLAN.min_minutes_per_step:g} min per step; alpha 0.05\n"
    )
    print("A/A (identical candidate): false rollbacks")
    for every in (1, 5, 30):
        rng = np.random.default_rng([args.seed, every])
        out = [simulate(rng, candidate_rate=BASE, every=every) for _ in range(args.runs)]
        k = sum(o.action == "rollback" for o in out)
        pauses = sum(o.action == "pause" for o in out)
        lo, hi = wilson(k, len(out))
        print(
            f"  checked every {every:>2} min: rolled back {k}/{len(out)} = {k / len(out):.1%}"
            f" [95% CI {lo:.1%}, {hi:.1%}] (target <= 5 %); SRM pauses {pauses};"
            f" completed {sum(o.action == 'complete' for o in out)}"
        )
    print("\nTrue regressions, checked every minute:")
    for drop in (0.02, 0.05, 0.10):
        rng = np.random.default_rng([args.seed, int(drop * 100)])
        out = [simulate(rng, candidate_rate=BASE - drop, every=1) for _ in range(args.runs)]
        caught = [o for o in out if o.action == "rollback"]
        served = np.array([o.candidate_served for o in caught]) if caught else np.array([0])
        early = sum(o.step < 2 for o in caught)
        print(
            f"  -{drop * 100:.0f} pt: rolled back {len(caught)}/{len(out)}"
            f" ({len(caught) / len(out):.1%}), before the 25 % step {early / len(out):.1%};"
            f" candidate responses served before rollback: median"
            f" {np.median(served):,.0f}, p90 {np.percentile(served, 90):,.0f};"
            f" completed (missed) {sum(o.action == 'complete' for o in out)};"
            f" a fixed-horizon test (80 % power) needs {fixed_horizon_n(drop):,} per arm"
        )


if __name__ == "__main__":
    main()
