"""Rollouts' pure parts: the hash split, the anytime-valid SRM check (against scipy), and the
decision at a look on hand-built data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from promptblame.analysis.moments import Moments
from promptblame.analysis.sequential import always_valid_srm
from promptblame.releases.policy import Guardrail, Look, Plan, decide, validate_steps
from promptblame.releases.splits import arm, position

PLAN = Plan(
    steps=(5, 25, 100),
    min_responses_per_step=100,
    min_minutes_per_step=10,
    guardrails=(Guardrail(metric="ok", max_drop=0.02),),
)


def rate(n: int, p: float) -> Moments:
    k = round(n * p)
    return Moments(n, float(k), float(k))


def test_the_split_is_deterministic_uniform_and_ramping_up_only_moves_units_to_the_candidate():
    units = [f"user-{i}" for i in range(20_000)]
    assert position("r1", "user-7") == position("r1", "user-7")
    assert position("r1", "user-7") != position("r2", "user-7")  # a seed per rollout
    # shared test vector: sha256("r1:user-7")[:8] / 2**64
    assert position("r1", "user-7") == pytest.approx(0.5429962635482012, abs=1e-15)
    h = np.array([position("r1", u) for u in units])
    assert stats.kstest(h, "uniform").pvalue > 0.01
    shares = {}
    for p in (1, 5, 25, 50):
        chosen = {u for u in units if arm("r1", u, [("candidate", p), ("incumbent", 100 - p)])
                  == "candidate"}  # fmt: skip
        shares[p] = chosen
        assert len(chosen) / len(units) == pytest.approx(p / 100, abs=0.01)
    assert shares[1] <= shares[5] <= shares[25] <= shares[50]


def test_the_anytime_valid_srm_is_the_dirichlet_multinomial_bayes_factor():
    x, shares = [20, 980], [0.05, 0.95]
    prior = [100 * s for s in shares]
    bf = stats.dirichlet_multinomial.pmf(x, prior, sum(x)) / stats.multinomial.pmf(
        x, sum(x), shares
    )
    r = always_valid_srm(observed=x, expected=[5, 95], alpha=0.001)
    assert r.p_value == pytest.approx(min(1.0, 1 / bf), rel=1e-9)
    assert r.mismatch  # 2 % where 5 % was configured, over 1,000 responses
    assert not always_valid_srm(observed=[50, 950], expected=[5, 95]).mismatch


def test_srm_checked_every_minute_rarely_alarms_on_a_healthy_split_and_catches_lost_logs():
    rng = np.random.default_rng(11)
    false = caught = 0
    for _ in range(300):
        healthy = lost = np.zeros(2, dtype=int)
        fired_h = fired_l = False
        for _ in range(120):
            n_c = int(rng.binomial(200, 0.05))
            healthy = healthy + np.array([n_c, 200 - n_c])
            lost = lost + np.array(
                [rng.binomial(n_c, 0.7), 200 - n_c]
            )  # 30 % of candidate logs lost
            fired_h |= always_valid_srm(
                observed=list(healthy), expected=[5, 95], alpha=0.01
            ).mismatch
            fired_l |= always_valid_srm(observed=list(lost), expected=[5, 95], alpha=0.01).mismatch
        false += fired_h
        caught += fired_l
    assert false / 300 <= 0.01 + 0.01  # alpha, plus sampling slack at 300 runs
    assert caught / 300 >= 0.95


def test_a_candidate_clearly_worse_than_the_allowed_drop_is_rolled_back_naming_the_metric():
    look = Look(
        step=0,
        step_minutes=3,
        step_counts={"candidate": 120, "incumbent": 2280},
        metrics={"ok": (rate(2280, 0.85), rate(120, 0.55))},
    )
    d = decide(PLAN, look)
    assert d.action == "rollback" and d.reason.startswith("ok −30.0 pt [")
    (c,) = d.checks
    assert c.regressed and c.high is not None and c.high < -0.02 and (c.p_value or 1) < 0.05


def test_lower_is_better_metrics_are_oriented_and_relative_drops_scale_with_the_incumbent():
    g = Guardrail(metric="latency", higher_is_better=False, max_drop=0.10, relative=True)
    plan = Plan(steps=(5, 100), min_responses_per_step=10, min_minutes_per_step=0, guardrails=(g,))
    slow = Moments(400, 400 * 1500.0, 400 * (1500.0**2 + 100.0**2))
    fast = Moments(4000, 4000 * 1000.0, 4000 * (1000.0**2 + 100.0**2))
    counts = {"candidate": 400, "incumbent": 7600}
    d = decide(
        plan, Look(step=0, step_minutes=1, step_counts=counts, metrics={"latency": (fast, slow)})
    )
    assert d.action == "rollback"
    (c,) = d.checks
    assert c.effect == pytest.approx(-500.0) and c.threshold == pytest.approx(100.0)
    same = decide(
        plan, Look(step=0, step_minutes=1, step_counts=counts, metrics={"latency": (fast, fast)})
    )
    assert same.action == "complete"  # next step is 100 %: promote


def test_a_logging_loss_pauses_instead_of_rolling_back():
    look = Look(
        step=1,
        step_minutes=20,
        step_counts={"candidate": 300, "incumbent": 2700},  # 10 % where 25 % was configured
        metrics={"ok": (rate(2700, 0.85), rate(300, 0.55))},
    )
    d = decide(PLAN, look)
    assert d.action == "pause" and "sample ratio mismatch at 25 %" in d.reason


def test_a_step_advances_only_with_its_minimum_responses_and_minutes():
    healthy = {"ok": (rate(2000, 0.85), rate(105, 0.85))}
    counts = {"candidate": 105, "incumbent": 1995}
    assert (
        decide(PLAN, Look(step=0, step_minutes=5, step_counts=counts, metrics=healthy)).action
        == "wait"
    )
    few = {"candidate": 50, "incumbent": 950}
    assert (
        decide(PLAN, Look(step=0, step_minutes=50, step_counts=few, metrics=healthy)).action
        == "wait"
    )
    assert (
        decide(PLAN, Look(step=0, step_minutes=10, step_counts=counts, metrics=healthy)).action
        == "advance"
    )


@pytest.mark.parametrize(
    ("steps", "why"),
    [([], "at least one"), ([5, 5, 100], "increase"), ([1, 50], "last step must be 100"),
     ([0, 100], "percent")],
)  # fmt: skip
def test_unusable_steps_say_why(steps, why):
    assert why in (validate_steps(steps) or "")
    assert validate_steps([1, 5, 25, 50, 100]) is None


# -- live experiments: a fixed split of several variants, no promotion --------------------------

EXPERIMENT = Plan(
    steps=(),
    min_responses_per_step=0,
    min_minutes_per_step=0,
    guardrails=(Guardrail(metric="ok", max_drop=0.0),),
)
WEIGHTS = [("v3", 50.0), ("v4", 25.0), ("v5", 25.0)]


def experiment_look(counts: dict[str, int], rates: dict[str, float]):
    from promptblame.releases.policy import decide_experiment

    metrics = {"ok": {v: rate(counts[v], rates[v]) for v in counts}}
    return decide_experiment(
        EXPERIMENT, control="v3", weights=WEIGHTS, counts=counts, metrics=metrics
    )


def test_an_experiment_names_the_regressed_variant_and_never_promotes_a_good_one():
    counts = {"v3": 2000, "v4": 1000, "v5": 1000}
    bad = experiment_look(counts, {"v3": 0.80, "v4": 0.80, "v5": 0.65})
    assert bad.action == "rollback" and bad.reason.startswith("variant v5: ok −15.0 pt")
    assert [(c.arm, c.regressed) for c in bad.checks] == [("v4", False), ("v5", True)]
    good = experiment_look(counts, {"v3": 0.80, "v4": 0.90, "v5": 0.80})
    assert good.action == "wait" and "no automatic promotion" in good.reason


def test_an_experiment_whose_logged_shares_miss_its_split_pauses():
    d = experiment_look({"v3": 2000, "v4": 1000, "v5": 600}, {"v3": 0.8, "v4": 0.8, "v5": 0.8})
    assert d.action == "pause" and "v5 16.7 % (of 25 %)" in d.reason


def test_an_experiment_splits_each_guardrails_alpha_over_its_variants():
    """Bonferroni: with two variants against the control, each comparison runs at alpha / 2,
    the interval of a 2-variant experiment is the one a single comparison gets at alpha / 2."""
    from promptblame.releases.policy import check

    counts = {"v3": 2000, "v4": 1000, "v5": 1000}
    d = experiment_look(counts, {"v3": 0.80, "v4": 0.78, "v5": 0.80})
    alone = check(Guardrail(metric="ok", alpha=0.025), rate(2000, 0.80), rate(1000, 0.78))
    assert (d.checks[0].low, d.checks[0].high) == (alone.low, alone.high)


def test_a_split_must_have_two_variants_summing_to_100():
    from promptblame.releases.policy import validate_split

    assert validate_split({"v3": 50, "v4": 50}) is None
    assert "sum to 100" in str(validate_split({"v3": 50, "v4": 40}))
    assert "two variants" in str(validate_split({"v3": 100}))
    assert "(0, 100)" in str(validate_split({"v3": 0, "v4": 100}))
