"""Change points on seeded synthetic series with a known truth."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from promptblame.analysis.changepoints import (
    Bucket,
    ChangePointResult,
    buckets_from_arrays,
    default_penalty,
    detect_change_points,
    detect_change_points_raw,
)
from promptblame.analysis.moments import Moments

T0 = datetime(2024, 5, 6, tzinfo=UTC)


def hourly(
    seed: int,
    *,
    hours: int = 240,
    shifts: tuple[tuple[int, float], ...] = (),
    base: float = 0.75,
    amplitude: float = 0.0,
    tau: float = 0.0,
    low: float = 50,
    high: float = 50,
    empty: float = 0.0,
    bernoulli: bool = False,
) -> list[Bucket]:
    """Hourly buckets drawn response by response; traffic swings between low and high daily."""
    rng = np.random.default_rng(seed)
    h = np.arange(hours)
    day = (1 + np.cos(2 * np.pi * (h % 24 - 14) / 24)) / 2
    n = rng.poisson(low + (high - low) * day)
    n[rng.random(hours) < empty] = 0
    mu = base + amplitude * np.sin(2 * np.pi * (h % 24) / 24) + rng.normal(0, tau, hours)
    for at, size in shifts:
        mu[at:] += size
    mu = np.clip(mu, 0.01, 0.99)
    if bernoulli:
        s = rng.binomial(n, mu).astype(float)
        q = s
    else:
        rep = np.repeat(mu, n)
        x = rng.beta(rep * 4, (1 - rep) * 4)
        idx = np.repeat(h, n)
        s = np.bincount(idx, weights=x, minlength=hours)
        q = np.bincount(idx, weights=x * x, minlength=hours)
    starts = [T0 + timedelta(hours=int(i)) for i in h]
    return buckets_from_arrays(starts=starts, n=n, total=s, total_sq=q)


def indices(result: ChangePointResult) -> list[int]:
    return [c.index for c in result.change_points]


def test_one_shift_is_found_at_the_right_bucket():
    result = detect_change_points(
        buckets=hourly(1, shifts=((130, -0.06),), tau=0.01, low=200, high=200)
    )
    assert result.reason is None
    assert len(result.change_points) == 1
    cp = result.change_points[0]
    assert abs(cp.index - 130) <= 1
    assert cp.start == T0 + timedelta(hours=cp.index)
    assert cp.direction == "down"
    assert cp.effect == pytest.approx(cp.level_after - cp.level_before)
    assert cp.effect == pytest.approx(-0.06, abs=0.015)
    assert cp.p_value < 1e-6
    assert cp.gain > cp.penalty


def test_two_shifts_are_both_found():
    buckets = hourly(2, hours=300, shifts=((80, -0.05), (200, -0.07)), tau=0.01, low=300, high=300)
    result = detect_change_points(buckets=buckets)
    found = indices(result)
    assert len(found) == 2
    assert abs(found[0] - 80) <= 1 and abs(found[1] - 200) <= 1
    assert [c.direction for c in result.change_points] == ["down", "down"]
    assert len(result.segments) == 3


@pytest.mark.parametrize("seed", range(10, 16))
def test_a_flat_series_with_uneven_traffic_and_a_daily_rhythm_has_no_change(seed):
    buckets = hourly(seed, hours=720, amplitude=0.03, tau=0.015, low=5, high=500, empty=0.03)
    result = detect_change_points(buckets=buckets)
    assert result.reason is None
    assert result.change_points == ()
    assert result.params["season"] == "fitted"
    assert float(result.params["season_amplitude"] or 0) > 0.03  # the rhythm was modelled
    assert len(result.segments) == 1


def test_a_strong_daily_rhythm_is_absorbed_by_the_profile_and_would_alarm_without_it():
    buckets = hourly(10, hours=720, amplitude=0.06, tau=0.01, low=20, high=500, empty=0.03)
    assert detect_change_points(buckets=buckets).change_points == ()
    assert len(detect_change_points(buckets=buckets, season_period=None).change_points) > 10


def test_overdispersion_keeps_busy_buckets_from_alarming():
    # A million responses an hour: sampling noise is nil, the hour-to-hour wander is all there is.
    rng = np.random.default_rng(21)
    hours = 300
    n = np.full(hours, 1_000_000)
    mu = 0.8 + rng.normal(0, 0.01, hours)
    var = 0.04
    result = detect_change_points(
        buckets=buckets_from_arrays(
            starts=list(range(hours)), n=n, total=n * mu, total_sq=n * (var + mu * mu)
        ),
        season_period=None,
    )
    assert result.change_points == ()
    assert float(result.params["tau2"] or 0) == pytest.approx(1e-4, rel=0.3)


def test_the_cost_depends_on_buckets_not_rows():
    # Buckets standing for 10^6 and 10^12 rows are handled from their moments alone: same
    # bucket means, same answer. (Expanding 10^12 rows would never finish.)
    rng = np.random.default_rng(22)
    hours = 200
    mu = 0.7 + rng.normal(0, 0.01, hours)
    mu[120:] += 0.05
    results = []
    for rows in (10**6, 10**12):
        n = np.full(hours, rows)
        buckets = buckets_from_arrays(
            starts=list(range(hours)), n=n, total=n * mu, total_sq=n * (0.05 + mu * mu)
        )
        results.append(detect_change_points(buckets=buckets, season_period=None))
    assert indices(results[0]) == indices(results[1]) == [120]
    assert results[0].change_points[0].effect == pytest.approx(0.05, abs=0.01)


def test_a_rollback_gives_two_changes_in_opposite_directions():
    buckets = hourly(3, hours=240, shifts=((100, -0.08), (150, 0.08)), tau=0.01, low=100, high=300)
    result = detect_change_points(buckets=buckets)
    assert [abs(i - t) <= 1 for i, t in zip(indices(result), (100, 150), strict=True)] == [
        True,
        True,
    ]
    assert [c.direction for c in result.change_points] == ["down", "up"]
    first, second = result.change_points
    assert first.level_after == second.level_before
    assert second.level_after == pytest.approx(first.level_before, abs=0.02)


def test_a_short_rollback_is_found_even_when_it_cancels_over_the_series():
    buckets = hourly(4, hours=300, shifts=((140, -0.1), (152, 0.1)), low=100, high=100)
    assert [c.direction for c in detect_change_points(buckets=buckets).change_points] == [
        "down",
        "up",
    ]


def test_a_pass_rate_shift_is_found_on_bernoulli_buckets():
    buckets = hourly(
        5, hours=240, shifts=((90, -0.06),), base=0.9, bernoulli=True, low=30, high=300
    )
    assert all(b.total == b.total_sq for b in buckets)
    result = detect_change_points(buckets=buckets)
    assert result.params["cost"] == "quasi-binomial"
    assert result.params["variance_model"] == "bernoulli+overdispersion"
    assert len(result.change_points) == 1
    assert abs(result.change_points[0].index - 90) <= 2
    assert result.change_points[0].effect == pytest.approx(-0.06, abs=0.02)


@pytest.mark.parametrize("seed", range(30, 34))
def test_a_steady_high_pass_rate_with_few_responses_an_hour_has_no_change(seed):
    # 93% passing, 1-8 responses an hour: the Gaussian tail would be far too thin here.
    buckets = hourly(seed, hours=500, base=0.93, bernoulli=True, low=1, high=8, empty=0.1)
    assert detect_change_points(buckets=buckets).change_points == ()


def test_degenerate_input_says_why_instead_of_raising():
    assert detect_change_points(buckets=[]).reason == "no_data"
    empty = [Bucket(T0 + timedelta(hours=i), 0, 0.0, 0.0) for i in range(50)]
    assert detect_change_points(buckets=empty).reason == "no_data"
    short = hourly(6, hours=5)
    result = detect_change_points(buckets=short)
    assert result.reason == "too_short"
    assert result.change_points == ()
    assert [(s.start_index, s.end_index) for s in result.segments] == [(0, 4)]
    few_rows = [Bucket(i, 1, 0.5, 0.25) for i in range(40)]
    assert detect_change_points(buckets=few_rows, min_segment_n=30).reason == "too_short"
    backwards = [Bucket(2, 5, 2.0, 1.0), Bucket(1, 5, 2.0, 1.0)]
    assert detect_change_points(buckets=backwards).reason == "unsorted_starts"
    mixed = [Bucket(1, 5, 2.0, 1.0), Bucket(T0, 5, 2.0, 1.0)]
    assert detect_change_points(buckets=mixed).reason == "invalid_starts"
    assert detect_change_points(buckets=[Bucket(1, -1, 0.0, 0.0)]).reason == "invalid_input"
    assert detect_change_points(buckets=[Bucket(1, 2, math.nan, 0.0)]).reason == "invalid_input"
    assert detect_change_points(buckets=short, min_segment=0).reason == "invalid_parameters"
    assert detect_change_points_raw(values=[1.0, 2.0], starts=[1]).reason == "length_mismatch"


def test_a_constant_series_has_no_change_and_a_noiseless_step_has_one():
    assert detect_change_points_raw(values=[0.5] * 100).change_points == ()
    step = detect_change_points_raw(values=[0.5] * 50 + [0.6] * 50)
    assert indices(step) == [50]


def test_the_effect_interval_covers_the_true_shift():
    covered = 0
    for seed in range(40, 80):
        buckets = hourly(seed, hours=200, shifts=((100, 0.05),), low=30, high=30)
        (cp,) = detect_change_points(buckets=buckets, season_period=None).change_points
        assert cp.effect_low < cp.effect < cp.effect_high
        covered += cp.effect_low <= 0.05 <= cp.effect_high
    assert covered >= 34  # 95% nominal; 34 of 40 or more


def test_empty_buckets_keep_their_place_and_belong_to_the_segment_before_a_change():
    buckets = hourly(7, hours=200, shifts=((100, -0.1),), low=200, high=200)
    for i in (97, 98, 99, 100):  # the shift happens in a gap
        buckets[i] = Bucket(buckets[i].start, 0, 0.0, 0.0)
    result = detect_change_points(buckets=buckets, season_period=None)
    assert indices(result) == [101]
    first, second = result.segments
    assert (first.start_index, first.end_index, second.start_index, second.end_index) == (
        0,
        100,
        101,
        199,
    )
    assert first.n + second.n == sum(b.n for b in buckets)
    assert first.mean == pytest.approx(
        sum(b.total for b in buckets[:101]) / sum(b.n for b in buckets[:101])
    )


def test_shifts_below_the_minimum_effect_are_merged():
    # 5,000 responses an hour and no overdispersion: a 1.5-point shift is plain to see.
    buckets = hourly(8, hours=300, shifts=((150, 0.015),), low=5000, high=5000)
    found = detect_change_points(buckets=buckets, min_effect=0.005).change_points
    assert [abs(c.index - 150) <= 2 for c in found] == [True]
    assert detect_change_points(buckets=buckets, min_effect=0.025).change_points == ()


def test_the_raw_series_adapter_finds_a_shift_and_estimates_the_noise():
    rng = np.random.default_rng(9)
    values = np.concatenate([rng.normal(0.7, 0.1, 150), rng.normal(0.55, 0.1, 150)])
    result = detect_change_points_raw(values=values)
    assert result.params["variance_model"] == "homogeneous"
    assert float(result.params["tau2"] or 0) == pytest.approx(0.01, rel=0.3)
    (cp,) = result.change_points
    assert abs(cp.index - 150) <= 8 and cp.start == cp.index
    assert cp.effect == pytest.approx(-0.15, abs=0.04)
    flat = detect_change_points_raw(values=rng.normal(0.7, 0.1, 300))
    assert flat.change_points == ()


def test_the_raw_adapter_handles_pass_fail_points():
    rng = np.random.default_rng(10)
    values = np.concatenate([rng.random(400) < 0.9, rng.random(400) < 0.65]).astype(float)
    (cp,) = detect_change_points_raw(values=values).change_points
    assert abs(cp.index - 400) <= 40
    assert cp.direction == "down"
    assert (
        detect_change_points_raw(values=(rng.random(800) < 0.9).astype(float)).change_points == ()
    )


def test_metrics_outside_zero_one_use_the_gaussian_cost():
    rng = np.random.default_rng(11)
    values = np.concatenate([rng.normal(120, 10, 100), rng.normal(140, 10, 100)])
    result = detect_change_points_raw(values=values, min_effect=1.0)
    assert result.params["cost"] == "gaussian"
    assert [abs(i - 100) <= 6 for i in indices(result)] == [True]


def test_buckets_can_be_built_from_moments_and_int_starts_with_an_int_period():
    rng = np.random.default_rng(12)
    buckets = []
    for i in range(24 * 10):
        x = rng.beta(3, 1, size=40) - (0.08 if i >= 150 else 0)
        buckets.append(Bucket.of(i * 3600, Moments.of(x.tolist())))
    result = detect_change_points(buckets=buckets, season_period=86_400)
    assert result.params["season"] == "fitted"
    assert [abs(i - 150) <= 1 for i in indices(result)] == [True]


def test_the_default_penalty_grows_with_the_number_of_buckets():
    assert default_penalty(100) < default_penalty(720) < default_penalty(10_000)


@pytest.mark.parametrize("binomial", [False, True])
def test_dense_optimal_partitioning_finds_exactly_what_pelt_finds(binomial, monkeypatch):
    import promptblame.analysis.changepoints as cp

    rng = np.random.default_rng(11)
    found = 0
    for trial in range(40):
        t = int(rng.integers(10, 300))
        n = rng.integers(0, 60, t).astype(float)
        level = np.where(np.arange(t) < rng.integers(1, t), 0.7, 0.7 + rng.choice([-0.1, 0.0]))
        y = np.clip(level + rng.normal(0, 0.02, t), 0.01, 0.99)
        w = np.maximum(n, 1.0) / 0.02
        cost = cp._Cost.build(y, w, y * (1 - y) if binomial else None)
        penalty = float(rng.uniform(2, 20))
        dense = cp._pelt(cost, n, penalty=penalty, min_segment=3, min_segment_n=30)
        monkeypatch.setattr(cp, "_DENSE_MAX", 0)
        pruned = cp._pelt(cost, n, penalty=penalty, min_segment=3, min_segment_n=30)
        monkeypatch.setattr(cp, "_DENSE_MAX", 1000)
        assert dense == pruned, trial
        found += bool(dense)
    assert 10 <= found < 40  # both kinds of series were tried


# --- issue 17: trends, variance-only changes, weekly rhythm, any scale, short series ---------


def series(
    mu: np.ndarray, n: np.ndarray, seed: int, *, tau: float = 0.0, kappa: np.ndarray | float = 4.0
) -> list[Bucket]:
    """Hourly Beta-distributed scores around mu (+ hour shocks of sd tau)."""
    rng = np.random.default_rng(seed)
    mu = np.clip(mu + rng.normal(0, 1, mu.size) * tau, 0.02, 0.98)
    k = np.repeat(np.broadcast_to(kappa, mu.shape), n)
    rep = np.repeat(mu, n)
    x = rng.beta(rep * k, (1 - rep) * k)
    idx = np.repeat(np.arange(mu.size), n)
    s = np.bincount(idx, weights=x, minlength=mu.size)
    q = np.bincount(idx, weights=x * x, minlength=mu.size)
    starts = [T0 + timedelta(hours=int(i)) for i in range(mu.size)]
    return buckets_from_arrays(starts=starts, n=n, total=s, total_sq=q)


def test_a_linear_drift_is_one_finding_with_its_onset_end_and_slope_not_a_staircase():
    hours, onset, end = 480, 150, 270
    mu = 0.80 - 0.12 * np.clip((np.arange(hours) - onset) / (end - onset), 0, 1)
    got = detect_change_points(buckets=series(mu, np.full(hours, 200), 1, tau=0.005))
    assert len(got.change_points) == 1
    drift = got.change_points[0]
    assert drift.kind == "drift" and drift.direction == "down"
    assert abs(drift.index - onset) <= 6 and drift.end_index is not None
    assert abs(drift.end_index - end) <= 6
    assert drift.effect == pytest.approx(-0.12, abs=0.015)
    assert drift.slope == pytest.approx(-0.12 / (end - onset), rel=0.15)
    assert drift.effect_low < -0.1 < drift.effect_high or drift.effect_high < -0.1
    assert any(s.slope is not None for s in got.segments)  # the ramp is its own segment


def test_a_drift_still_moving_at_the_end_has_no_end():
    hours, onset = 400, 200
    mu = 0.75 + 0.10 * np.clip((np.arange(hours) - onset) / (hours - onset), 0, 1)
    got = detect_change_points(buckets=series(mu, np.full(hours, 200), 2, tau=0.005))
    drifts = [c for c in got.change_points if c.kind == "drift"]
    assert len(got.change_points) == 1 and len(drifts) == 1
    assert drifts[0].end_index is None and abs(drifts[0].index - onset) <= 12
    assert drifts[0].direction == "up"


def test_a_sharp_step_stays_a_step_and_is_not_smeared_into_a_ramp():
    hours = 300
    mu = np.where(np.arange(hours) >= 140, 0.70, 0.80)
    got = detect_change_points(buckets=series(mu, np.full(hours, 100), 3, tau=0.005))
    assert [(c.index, c.kind) for c in got.change_points] == [(140, "step")]


def test_two_steps_the_same_way_far_apart_stay_two_steps():
    hours = 480
    t = np.arange(hours)
    mu = 0.80 - 0.06 * (t >= 120) - 0.06 * (t >= 340)
    got = detect_change_points(buckets=series(mu, np.full(hours, 150), 4, tau=0.005))
    assert [(c.index, c.kind) for c in got.change_points] == [(120, "step"), (340, "step")]


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_a_series_that_only_got_noisier_does_not_alarm(seed):
    hours = 480
    t = np.arange(hours)
    n = np.random.default_rng(seed).poisson(60 + 200 * (1 + np.cos(2 * np.pi * t / 24)) / 2)
    # after hour 200: per-response spread x2 and hour-to-hour wander x3, same mean
    tau = np.where(t >= 200, 0.03, 0.01)
    kappa = np.where(t >= 200, 1.0, 8.0)
    rng = np.random.default_rng(seed + 100)
    mu = 0.7 + rng.normal(0, 1, hours) * tau
    got = detect_change_points(buckets=series(mu, n, seed, kappa=kappa))
    assert got.change_points == ()


def test_a_weekend_dip_is_a_weekly_rhythm_not_two_changes_a_week():
    hours = 35 * 24
    t = np.arange(hours)
    weekend = ((T0.weekday() + t // 24) % 7) >= 5
    mu = 0.75 - 0.05 * weekend
    buckets = series(mu, np.full(hours, 120), 8, tau=0.005)
    got = detect_change_points(buckets=buckets)
    assert got.change_points == () and got.params["weekly"] == "fitted"
    # and a real step on top of the rhythm is still found where it is
    stepped = series(mu - 0.06 * (t >= 400), np.full(hours, 120), 8, tau=0.005)
    assert [c.index for c in detect_change_points(buckets=stepped).change_points] == [400]


def _latency(seed: int, *, factor: float, at: int, hours: int = 240) -> list[Bucket]:
    rng = np.random.default_rng(seed)
    n = rng.poisson(80, hours)
    med = np.where(np.arange(hours) >= at, 900.0 * factor, 900.0)
    x = np.repeat(med, n) * rng.lognormal(0, 0.8, int(n.sum()))
    idx = np.repeat(np.arange(hours), n)
    s = np.bincount(idx, weights=x, minlength=hours)
    q = np.bincount(idx, weights=x * x, minlength=hours)
    starts = [T0 + timedelta(hours=int(i)) for i in range(hours)]
    return buckets_from_arrays(starts=starts, n=n, total=s, total_sq=q)


def test_the_default_minimum_effect_is_scale_free_latency_in_milliseconds():
    slower = detect_change_points(buckets=_latency(9, factor=1.3, at=120))
    assert len(slower.change_points) == 1  # heavy tails: placed within 2 hours
    assert abs(slower.change_points[0].index - 120) <= 2
    assert slower.params["min_effect_rule"] == "relative-1pct"
    assert 8 < float(str(slower.params["min_effect"])) < 20  # 1 % of ~1,250 ms
    # a latency series that did not move finds nothing, whatever its unit
    assert detect_change_points(buckets=_latency(10, factor=1.0, at=120)).change_points == ()


def test_an_error_rate_near_zero_moving_under_one_point_is_found():
    rng = np.random.default_rng(11)
    hours = 240
    p = np.where(np.arange(hours) >= 100, 0.012, 0.005)
    n = rng.poisson(400, hours)
    s = rng.binomial(n, p).astype(float)
    starts = [T0 + timedelta(hours=int(i)) for i in range(hours)]
    got = detect_change_points(buckets=buckets_from_arrays(starts=starts, n=n, total=s, total_sq=s))
    assert [c.index for c in got.change_points] == [100]  # +0.7 pt: under the old 1-point floor
    assert float(str(got.params["min_effect"])) < 0.001


def test_a_short_daily_series_of_twelve_buckets_is_analysed():
    rng = np.random.default_rng(12)
    n = rng.poisson(80, 12)
    p = np.where(np.arange(12) >= 6, 0.55, 0.80)
    s = rng.binomial(n, p).astype(float)
    starts = [T0 + timedelta(days=int(i)) for i in range(12)]
    got = detect_change_points(buckets=buckets_from_arrays(starts=starts, n=n, total=s, total_sq=s))
    assert got.reason is None and [c.index for c in got.change_points] == [6]
