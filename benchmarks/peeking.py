"""Peeking benchmark: false positives and power of always-valid (mSPRT) inference vs Welch.

Run from the repository root:

    .venv/bin/python benchmarks/peeking.py [--experiments 1000 --looks 20 --per-look 500]

What it does (see benchmarks/README.md for what each figure means):

1. simulates seeded A/B experiments, each watched at `--looks` interim looks with `--per-look`
   new observations per arm between looks, for two metrics: a 0..1 quality score
   (Beta(7, 3): mean 0.70, SD 0.14) and a pass/fail rate (Bernoulli(0.80)); per-look sufficient
   statistics (n, sum, sum of squares) come from cumulative sums over the looks;
2. A/A (no true difference): the any-look false-positive rate of
   `promptblame.analysis.sequential.always_valid_path` (default tau2, and tau2 tuned with
   `tau2_for_horizon` to the final sample size), of a naive Welch t-test at every look, and of a
   fixed-horizon Welch test at the final look only;
3. A/B with true effects of a few points: power of the sequential method (rejects at any look)
   vs the fixed-horizon Welch test at the final look, and the mean data the sequential method
   (default tau2) needed: observations per arm when it first rejected, the full horizon if never;
4. prints the figures with PASS/MISS for the target (sequential A/A false positives ≤ 5 %, both
   tau2 choices). Exit code 0 whatever they are; about 15 s on one core.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from scipy import stats

from promptblame.analysis.moments import Moments
from promptblame.analysis.sequential import (
    DEFAULT_EFFECT_SD,
    always_valid_path,
    tau2_for_horizon,
)

ALPHA = 0.05
SCORE_CONCENTRATION = 10.0  # Beta(m·k, (1 − m)·k): mean m, same shape family for every effect
SCORE_MEAN = 0.70
PASS_RATE = 0.80


@dataclass(frozen=True)
class Arm:
    """Cumulative sufficient statistics at each look, shape (experiments, looks)."""

    n: np.ndarray
    total: np.ndarray
    total_sq: np.ndarray


def simulate_score(rng: np.random.Generator, mean: float, e: int, looks: int, per: int) -> Arm:
    a, b = mean * SCORE_CONCENTRATION, (1 - mean) * SCORE_CONCENTRATION
    total = np.empty((e, looks))
    total_sq = np.empty((e, looks))
    for k in range(looks):  # one look at a time: 1000 × 500 draws, not 1000 × 20 × 500
        x = rng.beta(a, b, size=(e, per))
        total[:, k] = x.sum(axis=1)
        total_sq[:, k] = np.einsum("ij,ij->i", x, x)
    n = np.broadcast_to(per * np.arange(1, looks + 1), (e, looks))
    return Arm(n, total.cumsum(axis=1), total_sq.cumsum(axis=1))


def simulate_pass(rng: np.random.Generator, rate: float, e: int, looks: int, per: int) -> Arm:
    passes = rng.binomial(per, rate, size=(e, looks)).astype(float).cumsum(axis=1)
    n = np.broadcast_to(per * np.arange(1, looks + 1), (e, looks))
    return Arm(n, passes, passes)  # 0/1 values: sum of squares = sum


def welch_p(a: Arm, b: Arm) -> np.ndarray:
    """Two-sided Welch t-test p-value at every look, shape (experiments, looks)."""
    var_a = (a.total_sq - a.total**2 / a.n) / (a.n - 1)
    var_b = (b.total_sq - b.total**2 / b.n) / (b.n - 1)
    se2_a, se2_b = var_a / a.n, var_b / b.n
    t = (b.total / b.n - a.total / a.n) / np.sqrt(se2_a + se2_b)
    df = (se2_a + se2_b) ** 2 / (se2_a**2 / (a.n - 1) + se2_b**2 / (b.n - 1))
    return 2 * stats.t.sf(np.abs(t), df)


def sequential_first_rejection(a: Arm, b: Arm, tau2: float | None = None) -> np.ndarray:
    """Index of the first look whose running-min always-valid p < ALPHA, or -1 if none."""
    experiments, looks = a.n.shape
    first = np.full(experiments, -1)
    for e in range(experiments):
        path = always_valid_path(
            looks=[
                (
                    Moments(int(a.n[e, k]), float(a.total[e, k]), float(a.total_sq[e, k])),
                    Moments(int(b.n[e, k]), float(b.total[e, k]), float(b.total_sq[e, k])),
                )
                for k in range(looks)
            ],
            alpha=ALPHA,
            tau2=tau2,
        )
        for k, r in enumerate(path):
            if r.p_value is not None and r.p_value < ALPHA:
                first[e] = k
                break
    return first


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--looks", type=int, default=20)
    parser.add_argument("--per-look", type=int, default=500)
    parser.add_argument("--seed", type=int, default=20240607)
    args = parser.parse_args()
    e, looks, per = args.experiments, args.looks, args.per_look
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    metrics = {  # name: (simulator, control mean, per-observation variance, effects)
        "score 0..1 (Beta, mean 0.70)": (
            simulate_score,
            SCORE_MEAN,
            SCORE_MEAN * (1 - SCORE_MEAN) / (SCORE_CONCENTRATION + 1),
            [0.005, 0.01, 0.02],
        ),
        "pass rate (Bernoulli 0.80)": (
            simulate_pass,
            PASS_RATE,
            PASS_RATE * (1 - PASS_RATE),
            [0.01, 0.02, 0.04],
        ),
    }
    aa_rows: list[tuple[str, float, float, float, float]] = []
    power_rows: list[tuple[str, float, float, float, float, float]] = []
    for name, (simulate, base, variance, effects) in metrics.items():
        # τ² tightest at the final look, from the (here known, in practice historical) variance
        tuned = tau2_for_horizon(n_per_arm=looks * per, variance=variance, alpha=ALPHA)
        control = simulate(rng, base, e, looks, per)
        same = simulate(rng, base, e, looks, per)
        p = welch_p(control, same)
        aa_rows.append(
            (
                name,
                float((sequential_first_rejection(control, same) >= 0).mean()),
                float((sequential_first_rejection(control, same, tuned) >= 0).mean()),
                float((p < ALPHA).any(axis=1).mean()),
                float((p[:, -1] < ALPHA).mean()),
            )
        )
        for effect in effects:
            treated = simulate(rng, base + effect, e, looks, per)
            first = sequential_first_rejection(control, treated)
            first_tuned = sequential_first_rejection(control, treated, tuned)
            p = welch_p(control, treated)
            used = np.where(first >= 0, (first + 1) * per, looks * per).mean()
            power_rows.append(
                (
                    f"{name.split(' (')[0]} +{100 * effect:g} pt",
                    float((first >= 0).mean()),
                    float((first_tuned >= 0).mean()),
                    float((p[:, -1] < ALPHA).mean()),
                    float(used),
                    float(((first >= 0) & (first < looks - 1)).mean()),
                )
            )
    elapsed = time.perf_counter() - started

    mc = 100 * np.sqrt(ALPHA * (1 - ALPHA) / e)
    print("=" * 96)
    print(
        f"promptblame peeking benchmark — {e:,} experiments/row, {looks} looks × {per:,} "
        f"obs/arm (final n {looks * per:,}/arm), alpha {ALPHA:g}, seed {args.seed}"
    )
    print(
        f"sequential = mSPRT, default tau = {DEFAULT_EFFECT_SD:g} × pooled SD; tuned = "
        f"tau2_for_horizon(n_per_arm={looks * per:,}); Monte-Carlo SE of a 5 % rate ±{mc:.1f} pt"
    )
    print("-" * 96)
    print("A/A false-positive rate (no true difference; rejected at any look unless stated)")
    print(
        f"  {'metric':<30}{'sequential':>11}{'target':>8} {'verdict':<8}"
        f"{'tuned τ':>9}{'naive Welch':>13}{'Welch final':>13}"
    )
    print(
        f"  {'':<30}{'any look':>11}{'':>8} {'':<8}"
        f"{'any look':>9}{'every look':>13}{'look only':>13}"
    )
    for name, seq, seq_tuned, naive, fixed in aa_rows:
        verdict = "PASS" if seq <= ALPHA and seq_tuned <= ALPHA else "MISS"
        print(
            f"  {name:<30}{pct(seq):>11}{'≤ 5 %':>8} {verdict:<8}"
            f"{pct(seq_tuned):>9}{pct(naive):>13}{pct(fixed):>13}"
        )
    print(f"  {'(expected)':<30}{'≤ 5 %':>11}{'':>8} {'':<8}{'≤ 5 %':>9}{'~25 %':>13}{'~5 %':>13}")
    print("-" * 96)
    print("Power under a true effect (the price of peeking safely)")
    print(
        f"  {'metric and effect':<24}{'sequential':>11}{'tuned τ':>9}{'Welch final':>13}"
        f"{'seq. obs/arm':>14}{'seq. stopped':>14}"
    )
    print(
        f"  {'':<24}{'any look':>11}{'any look':>9}{'look only':>13}"
        f"{'used (mean)':>14}{'before final':>14}"
    )
    for name, seq, seq_tuned, fixed, used, early in power_rows:
        print(
            f"  {name:<24}{pct(seq):>11}{pct(seq_tuned):>9}{pct(fixed):>13}"
            f"{used:>14,.0f}{pct(early):>14}"
        )
    print("-" * 96)
    print(f"runtime {elapsed:.1f} s")
    print("=" * 96)


if __name__ == "__main__":
    main()
