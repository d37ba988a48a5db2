"""Always-valid inference on B − A from sufficient statistics, for dashboards watched continuously.

Method: the mixture sequential probability ratio test (mSPRT) with a normal mixing distribution,
as in Johari, Koomen, Pekelis & Walsh, "Always Valid Inference: Continuous Monitoring of A/B
Tests" (Operations Research, 2022; the basis of Optimizely's Stats Engine). Its confidence
intervals are the normal-mixture confidence sequence of Howard, Ramdas, McAuliffe & Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences" (Ann. Statist., 2021), here
with a plug-in variance as justified asymptotically by Waudby-Smith et al., "Time-uniform central
limit theory and asymptotic confidence sequences" (2021).

Why this one: a fixed-horizon test looked at after every new batch rejects a true null far more
often than alpha (about 25 % over 20 looks at alpha = 5 %). The mSPRT statistic Λ is a
nonnegative martingale under the null, so by Ville's inequality P(Λ_n ≥ 1/α for some n) ≤ α:
the user may look after every batch, stop whenever they like, and the error rate still holds.
It needs only each arm's n, sum and sum of squares at each look (what ClickHouse aggregates), it
has a closed form, and the same formula serves continuous scores and 0/1 pass/fail metrics.

The statistic. With θ = mean_B − mean_A, its estimate θ̂ and s² = var_A/n_A + var_B/n_B, the
likelihood ratio of θ against θ₀ for θ̂ ~ N(θ, s²), mixed over θ ~ N(θ₀, τ²), is

    Λ = sqrt(s² / (s² + τ²)) · exp(τ² (θ̂ − θ₀)² / (2 s² (s² + τ²))).

The always-valid p-value for H₀: θ = 0 is min(1, 1/Λ) (taken at θ₀ = 0), and the always-valid
(1 − α) interval is every θ₀ with Λ(θ₀) < 1/α:

    θ̂ ± sqrt(s² (s² + τ²) / τ² · (2 log(1/α) + log((s² + τ²) / s²))).

Assumptions, stated plainly:
* θ̂ is approximately normal (central limit theorem, per arm), so the guarantee is asymptotic.
  Below roughly 30 observations per arm the approximation is poor; with 2–5 observations per arm
  the interval can even be narrower than the Welch t interval. Do not stop on so little data.
* Variances are plugged in from the data at each look (not known in advance). Observations are
  independent and identically distributed within an arm over time (no drift in the traffic mix).
* The mixing variance τ² is a prior spread of plausible effects, chosen before looking at the
  results. Default (tau2=None): τ² = (0.1 · σ̂)², σ̂² the pooled variance of the two arms,
  re-estimated at each look like s²; i.e. the mixture is N(0, 0.1²) over the standardized effect
  d = θ/σ (0.1 SD ≈ a 2-point change on a 0..1 score with SD 0.2). With equal arm variances
  τ²/s² = 0.01 / (1/n_A + 1/n_B) then depends on the sample sizes only: the test is the mSPRT on
  the Welch z statistic, free of the metric's scale, the same for scores and 0/1 metrics (the
  plug-in σ̂ is the same asymptotic approximation as the plug-in s²). The interval is tightest
  where τ²/s² = r* ≈ 8.2 (α = 5 %): about 1,600 observations per arm with balanced arms. To make
  it tightest at a planned sample size instead, pass tau2=tau2_for_horizon(n_per_arm=...,
  variance=...) (a fixed value on the metric's scale). Any τ² > 0 keeps the guarantee; it only
  moves where power is spent.

Single look vs a sequence of looks. `always_valid` is stateless: its p-value is the
*instantaneous* value 1/Λ_n and its interval the one at this look. Each is valid on its own at
any data-dependent stopping time, but they can wander back up/out as data arrive. A caller who
keeps state should report the running minimum of the p-values and the running intersection of
the intervals over all past looks; `always_valid_path` does exactly that for a sequence of looks
(cumulative moments per look). Both running quantities remain valid under optional stopping,
and they are monotone: once significant, always significant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from promptblame.analysis.moments import Moments

DEFAULT_EFFECT_SD = 0.1  # default τ = 0.1 × pooled SD of the metric (see module docstring)


@dataclass(frozen=True)
class SequentialResult:
    """B − A at one look. p_value/low/high are None when `reason` says why they can't be had."""

    n_a: int
    n_b: int
    effect: float | None  # mean_B − mean_A at this look
    p_value: float | None  # always-valid p-value (instantaneous, or running min on a path)
    low: float | None  # always-valid (1 − alpha) interval for B − A
    high: float | None
    alpha: float
    tau2: float | None  # mixing variance actually used
    se: float | None = None  # plug-in standard error of the effect, sqrt(var_A/n_A + var_B/n_B)
    log_lr: float | None = None  # log Λ at θ₀ = 0, the mSPRT statistic at this look
    reason: str | None = None  # machine-readable when something cannot be computed


def _optimal_ratio(alpha: float) -> float:
    """r = τ²/s² that minimizes the interval width: the fixed point of r = 2 log(1/α) + log(1+r)."""
    c = 2.0 * math.log(1.0 / alpha)
    r = c
    for _ in range(50):
        r = c + math.log1p(r)
    return r


def tau2_for_horizon(*, n_per_arm: int, variance: float, alpha: float = 0.05) -> float:
    """τ² making the always-valid interval tightest at `n_per_arm` per arm (balanced arms).

    `variance` is the metric's per-observation variance (a guess or a past estimate: p(1 − p)
    for a pass rate). Width at that n is about 1.55× the fixed-horizon interval at alpha 5 %.
    """
    _check(alpha=alpha)
    if n_per_arm < 1 or not variance > 0 or not math.isfinite(variance):
        raise ValueError("n_per_arm must be ≥ 1 and variance a positive finite number")
    return _optimal_ratio(alpha) * 2.0 * variance / n_per_arm


def _check(*, alpha: float, tau2: float | None = None) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if tau2 is not None and not (tau2 > 0 and math.isfinite(tau2)):
        raise ValueError(f"tau2 must be a positive finite number or None, got {tau2!r}")


def always_valid(
    *, a: Moments, b: Moments, alpha: float = 0.05, tau2: float | None = None
) -> SequentialResult:
    """mSPRT p-value and confidence-sequence interval for mean_B − mean_A at this single look.

    The p-value is the instantaneous 1/Λ (capped at 1); take the running minimum over looks
    yourself, or use `always_valid_path`. Degenerate data (n < 2 in an arm, zero variance in
    both arms, non-finite sums) gives `reason` instead of numbers, never an exception; an
    invalid alpha or tau2 (a configuration error) raises ValueError.
    """
    _check(alpha=alpha, tau2=tau2)
    base = SequentialResult(a.n, b.n, None, None, None, None, alpha, tau2)
    if not all(math.isfinite(x) for x in (a.total, a.total_sq, b.total, b.total_sq)):
        return replace(base, reason="non_finite")
    if a.n < 2 or b.n < 2:
        effect = b.mean - a.mean if a.n > 0 and b.n > 0 else None
        return replace(base, effect=effect, reason="too_few_observations")
    effect = b.mean - a.mean
    var_a, var_b = a.var, b.var
    s2 = var_a / a.n + var_b / b.n
    if not s2 > 0:
        return replace(base, effect=effect, reason="zero_variance")
    if tau2 is None:
        pooled = ((a.n - 1) * var_a + (b.n - 1) * var_b) / (a.n + b.n - 2)
        tau2 = DEFAULT_EFFECT_SD**2 * pooled
    ratio = tau2 / s2
    # log Λ(θ₀) = -½ log(1 + τ²/s²) + τ² (θ̂ − θ₀)² / (2 s² (s² + τ²)); logs avoid overflow.
    log_lr = -0.5 * math.log1p(ratio) + 0.5 * (ratio / (1.0 + ratio)) * effect * effect / s2
    p_value = math.exp(-log_lr) if log_lr > 0 else 1.0
    half = math.sqrt(s2 * (1.0 + 1.0 / ratio) * (2.0 * math.log(1.0 / alpha) + math.log1p(ratio)))
    return replace(
        base,
        effect=effect,
        p_value=p_value,
        low=effect - half,
        high=effect + half,
        tau2=tau2,
        se=math.sqrt(s2),
        log_lr=log_lr,
    )


def always_valid_path(
    *,
    looks: Sequence[tuple[Moments, Moments]],
    alpha: float = 0.05,
    tau2: float | None = None,
) -> list[SequentialResult]:
    """Per look (cumulative (A, B) moments, in time order): running-min p and running ∩ of CIs.

    Each entry's `effect`, `se`, `log_lr` and `tau2` are those of its own look; `p_value` is the
    minimum over this and all earlier looks and [`low`, `high`] the intersection of their
    intervals, both valid whenever the watcher decides to stop. Before the first computable look
    they are None; a later degenerate look keeps the running values and carries its `reason`.
    If the intervals ever fail to overlap (only possible when coverage has already failed, e.g.
    a badly non-normal metric at small n), the entry says `reason="empty_intersection"` and
    keeps the crossed bounds so the caller can see them.
    """
    _check(alpha=alpha, tau2=tau2)
    out: list[SequentialResult] = []
    best_p: float | None = None
    low: float | None = None
    high: float | None = None
    for a, b in looks:
        r = always_valid(a=a, b=b, alpha=alpha, tau2=tau2)
        if r.p_value is not None and r.low is not None and r.high is not None:
            best_p = r.p_value if best_p is None else min(best_p, r.p_value)
            low = r.low if low is None else max(low, r.low)
            high = r.high if high is None else min(high, r.high)
        reason = r.reason
        if reason is None and low is not None and high is not None and low > high:
            reason = "empty_intersection"
        out.append(replace(r, p_value=best_p, low=low, high=high, reason=reason))
    return out


@dataclass(frozen=True)
class SequentialRatio:
    """Anytime-valid sample-ratio check of arm counts against their configured shares."""

    p_value: float  # 1 / Bayes factor, capped at 1: valid at every look, however often
    mismatch: bool
    alpha: float
    observed: tuple[int, ...]
    expected: tuple[float, ...]  # shares, normalised


SRM_CONCENTRATION = 100.0  # Dirichlet prior: shares vary around the configured ones


def always_valid_srm(
    *, observed: Sequence[int], expected: Sequence[float], alpha: float = 0.001
) -> SequentialRatio:
    """Sample-ratio mismatch that may be checked after every new response.

    A chi-square test repeated at every look of a running rollout raises false alarms far more
    often than its alpha. This is the Dirichlet-multinomial test of Lindon & Malek, "Anytime-
    Valid Inference for Multinomial Count Data" (NeurIPS 2022): the Bayes factor of counts under
    shares drawn from Dirichlet(k · expected) against counts under the expected shares is a
    nonnegative martingale under the null, so by Ville's inequality it ever reaches 1/alpha with
    probability at most alpha. The counts must be those of one fixed split (one rollout step).
    """
    _check(alpha=alpha)
    if len(observed) != len(expected) or len(observed) < 2:
        raise ValueError("observed and expected need the same arms, at least two")
    if any(c < 0 for c in observed) or any(not w > 0 for w in expected):
        raise ValueError("counts must be >= 0 and expected weights > 0")
    total = float(sum(expected))
    shares = [w / total for w in expected]
    prior = [SRM_CONCENTRATION * s for s in shares]
    n = sum(observed)
    log_bf = (
        math.lgamma(SRM_CONCENTRATION)
        - math.lgamma(SRM_CONCENTRATION + n)
        + sum(math.lgamma(a + x) - math.lgamma(a) for a, x in zip(prior, observed, strict=True))
        - sum(x * math.log(s) for x, s in zip(observed, shares, strict=True) if x)
    )
    p = math.exp(-log_bf) if log_bf > 0 else 1.0
    return SequentialRatio(p, p <= alpha, alpha, tuple(observed), tuple(shares))
