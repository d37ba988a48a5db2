"""Agreement between two raters on the same responses: pure statistics, no I/O.

The coefficient follows the label's level of measurement:
- categorical (pass/fail, categories): Cohen's kappa, with statsmodels' asymptotic 95 % CI;
- ordinal (a 1–5 scale): quadratic-weighted kappa (statsmodels) and Krippendorff's alpha
  (the `krippendorff` package, ordinal metric; CI by a seeded bootstrap over responses);
- continuous (a number field, or an evaluator whose values are not the label's levels, e.g. a
  judge's 0.73 against pass/fail): Pearson r with its Fisher-z CI (scipy) and the mean bias
  (rater b − rater a) with its t interval.
Percent agreement and n are always shown. Degenerate input (too few pairs, every label the same
class, a constant rater) gives no coefficient and a machine-readable `reason`, never a number
that looks meaningful: kappa is undefined when chance agreement is 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import krippendorff
import numpy as np
from scipy import stats
from statsmodels.stats.inter_rater import cohens_kappa

Level = Literal["categorical", "ordinal", "continuous"]
BOOTSTRAP = 1000
BOOTSTRAP_SEED = 20261206
MIN_PAIRS = 2


@dataclass(frozen=True)
class Coefficient:
    name: str  # kappa | weighted_kappa | krippendorff_alpha | pearson_r | mean_bias
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    reason: str = ""  # why value is None


@dataclass(frozen=True)
class Agreement:
    level: Level
    n: int
    percent_agreement: float | None
    """Share of pairs with equal values (discrete levels only)."""
    coefficients: tuple[Coefficient, ...] = field(default_factory=tuple)
    reason: str = ""

    @property
    def primary(self) -> Coefficient | None:
        """The coefficient trust rules compare: kappa, weighted kappa or Pearson r."""
        want = {"categorical": "kappa", "ordinal": "weighted_kappa", "continuous": "pearson_r"}
        return next((c for c in self.coefficients if c.name == want[self.level]), None)


def measure(
    a: Sequence[float],
    b: Sequence[float],
    *,
    level: Level,
    levels: Sequence[float] = (),
    with_alpha: bool = True,
) -> Agreement:
    """Agreement of paired values a[i], b[i] (a: the reference, usually the human label).
    A discrete level with b off the label's `levels` is measured as continuous. `with_alpha`
    off skips Krippendorff's alpha and its bootstrap (trust checks need the primary only)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError("a and b must pair up")
    if level != "continuous" and levels and not set(y.tolist()) <= set(levels):
        level = "continuous"
    if len(x) < MIN_PAIRS:
        return Agreement(level, len(x), None, reason="too_few_pairs")
    if level == "continuous":
        return _continuous(x, y)
    cats = sorted(set(levels) | set(x.tolist()) | set(y.tolist()))
    return _discrete(x, y, cats, level, with_alpha)


def _table(x: np.ndarray, y: np.ndarray, cats: list[float]) -> np.ndarray:
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(cats), len(cats)))
    for u, v in zip(x.tolist(), y.tolist(), strict=True):
        table[index[u], index[v]] += 1
    return table


def _discrete(
    x: np.ndarray, y: np.ndarray, cats: list[float], level: Level, with_alpha: bool
) -> Agreement:
    n = len(x)
    observed = float(np.mean(x == y))
    table = _table(x, y, cats)
    p = table / n
    chance = float(p.sum(axis=1) @ p.sum(axis=0))
    coefs = []
    name = "kappa" if level == "categorical" else "weighted_kappa"
    if len(set(x.tolist()) | set(y.tolist())) < 2 or chance >= 1 - 1e-12:
        # every label the same class: chance agreement is 1, kappa is 0/0
        coefs.append(Coefficient(name, None, reason="no_variation"))
    else:
        with np.errstate(divide="ignore", invalid="ignore"):  # its z test of a constant rater
            res = cohens_kappa(table, wt=None if level == "categorical" else "quadratic")
        low, high = _finite(res.kappa_low), _finite(res.kappa_upp)
        coefs.append(Coefficient(name, float(res.kappa), low, high))
    if level == "ordinal" and with_alpha:
        coefs.append(_alpha(np.vstack([x, y]), "ordinal", cats))
    return Agreement(level, n, observed, tuple(coefs))


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def alpha(
    units: Sequence[Sequence[float]], *, level: Level, levels: Sequence[float] = ()
) -> Coefficient:
    """Krippendorff's alpha over units rated by any number of raters (≥ 2 values per unit
    count): human–human agreement on the overlap, whoever the reviewers were."""
    width = max((len(u) for u in units), default=0)
    rows = [list(u) + [math.nan] * (width - len(u)) for u in units if len(u) >= 2]
    if len(rows) < MIN_PAIRS:
        return Coefficient("krippendorff_alpha", None, reason="too_few_pairs")
    data = np.asarray(rows, dtype=float).T  # raters × units
    metric = {"categorical": "nominal", "ordinal": "ordinal", "continuous": "interval"}[level]
    domain = sorted(set(levels) | {v for r in rows for v in r if not math.isnan(v)})
    return _alpha(data, metric, domain)


def _alpha(data: np.ndarray, metric: str, domain: Sequence[float]) -> Coefficient:
    seen = {v for v in data.ravel().tolist() if not math.isnan(v)}
    if len(seen) < 2:
        return Coefficient("krippendorff_alpha", None, reason="no_variation")
    metric = "nominal" if metric == "categorical" else metric
    dom = domain if metric != "interval" else None

    def compute(d: np.ndarray) -> float | None:
        vals = {v for v in d.ravel().tolist() if not math.isnan(v)}
        if len(vals) < 2:
            return None
        return float(
            krippendorff.alpha(
                reliability_data=d,
                level_of_measurement=cast(Literal["nominal", "ordinal", "interval"], metric),
                value_domain=dom,
            )
        )

    value = compute(data)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    units = data.shape[1]
    boots = [compute(data[:, rng.integers(0, units, units)]) for _ in range(BOOTSTRAP)]
    kept = np.asarray([b for b in boots if b is not None and math.isfinite(b)])
    low, high = (
        (float(np.quantile(kept, 0.025)), float(np.quantile(kept, 0.975)))
        if len(kept) > BOOTSTRAP // 2
        else (None, None)
    )
    return Coefficient("krippendorff_alpha", value, low, high)


def _continuous(x: np.ndarray, y: np.ndarray) -> Agreement:
    n = len(x)
    diff = y - x
    bias_mean = float(diff.mean())
    if n >= 2 and float(diff.std(ddof=1)) > 0:
        half = float(stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n))
        bias = Coefficient("mean_bias", bias_mean, bias_mean - half, bias_mean + half)
    else:
        bias = Coefficient("mean_bias", bias_mean, bias_mean, bias_mean)
    if n < 4 or float(x.std()) == 0 or float(y.std()) == 0:
        r = Coefficient("pearson_r", None, reason="too_few_pairs" if n < 4 else "no_variation")
    else:
        res = stats.pearsonr(x, y)
        ci = res.confidence_interval(0.95)
        r = Coefficient("pearson_r", float(res.statistic), float(ci.low), float(ci.high))
    return Agreement("continuous", n, None, (r, bias))
