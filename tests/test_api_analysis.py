"""POST /v1/compare and GET /v1/experiments on data with known truth, through the real engine."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from promptblame.analysis import compare as cmp
from promptblame.analysis.moments import Moments
from promptblame.api.auth import new_key
from tests.helpers import auth, body, event


def ingest(client: TestClient, key: str, events: list[dict], scores: list[dict]) -> None:
    for i in range(0, len(events), 5000):
        r = client.post(
            "/v1/responses", content=body("responses", events[i : i + 5000]), headers=auth(key)
        )
        assert r.status_code == 200, r.text
    for i in range(0, len(scores), 5000):
        r = client.post(
            "/v1/scores", content=body("scores", scores[i : i + 5000]), headers=auth(key)
        )
        assert r.status_code == 200, r.text


def two_versions(
    client: TestClient, key: str, *, n: int, mean_a: float, mean_b: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """n responses per prompt version with Beta-distributed quality scores of known means."""
    rng = np.random.default_rng(seed)
    conc = 8.0
    va = rng.beta(mean_a * conc, (1 - mean_a) * conc, n)
    vb = rng.beta(mean_b * conc, (1 - mean_b) * conc, n)
    events, scores = [], []
    for i, (x, y) in enumerate(zip(va, vb, strict=True)):
        events += [event(2 * i, prompt_version="v1"), event(2 * i + 1, prompt_version="v2")]
        scores += [
            {"event_id": f"evt-{2 * i}", "name": "quality", "value": float(x)},
            {"event_id": f"evt-{2 * i + 1}", "name": "quality", "value": float(y)},
        ]
    ingest(client, key, events, scores)
    return va, vb


def compare(client: TestClient, key: str, **body: Any) -> Any:
    payload = {"a": {"prompt_version": "v1"}, "b": {"prompt_version": "v2"}, **body}
    return client.post("/v1/compare", json=payload, headers=auth(key))


def test_a_real_regression_is_significant_and_matches_welch_on_the_raw_scores(client, key):
    va, vb = two_versions(client, key, n=2000, mean_a=0.80, mean_b=0.75, seed=1)
    r = compare(client, key, metric="quality", sequential=True)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["test"] == "welch_t" and out["why"].startswith("auto:")
    expect = cmp.welch(a=Moments.of(va), b=Moments.of(vb))
    assert out["effect"] == pytest.approx(expect.effect, rel=1e-9)
    assert out["p_value"] == pytest.approx(expect.p_value, rel=1e-6)
    assert out["ci_low"] < -0.05 < out["ci_high"] and out["significant"] is True
    assert out["n_a"] == out["n_b"] == 2000 and out["mde"] > 0
    seq = out["sequential"]
    assert seq["low"] <= out["ci_low"] and seq["high"] >= out["ci_high"]


def test_no_effect_is_not_significant(client, key):
    two_versions(client, key, n=1000, mean_a=0.7, mean_b=0.7, seed=3)
    out = compare(client, key, metric="quality").json()
    assert out["significant"] is False and out["ci_low"] < 0 < out["ci_high"]


def test_a_pass_fail_metric_uses_the_proportions_test_on_the_counts(client, key):
    events = [event(i, prompt_version="v1" if i < 400 else "v2") for i in range(800)]
    passed = [i % 10 < 9 if i < 400 else i % 10 < 7 for i in range(800)]
    scores = [
        {"event_id": f"evt-{i}", "name": "json_valid", "value": int(p)}
        for i, p in enumerate(passed)
    ]
    ingest(client, key, events, scores)
    out = compare(client, key, metric="json_valid").json()
    expect = cmp.proportions(a_success=360, a_n=400, b_success=280, b_n=400)
    assert out["test"] == expect.test == "two_proportion_z"
    assert out["p_value"] == pytest.approx(expect.p_value, rel=1e-9)
    assert out["effect"] == pytest.approx(-0.2)
    forced = compare(client, key, metric="json_valid", test="fisher_exact").json()
    assert forced["test"] == "fisher_exact"


def test_builtin_latency_is_compared_with_a_bootstrap_p95(client, key):
    rng = np.random.default_rng(5)
    lat = np.concatenate([rng.lognormal(5, 0.5, 500), rng.lognormal(5.3, 0.5, 500)])
    events = [
        event(i, prompt_version="v1" if i < 500 else "v2", latency_ms=float(lat[i]))
        for i in range(1000)
    ]
    ingest(client, key, events, [])
    out = compare(
        client, key, metric="response.latency_ms", test="bootstrap", statistic="p95"
    ).json()
    assert out["test"] == "bootstrap" and out["effect_kind"] == "difference_in_p95"
    assert out["ci_low"] > 0


def test_heavy_tailed_scores_switch_auto_to_mann_whitney(client, key):
    rng = np.random.default_rng(9)
    vals = np.concatenate([rng.lognormal(0, 2, 300), rng.lognormal(0.5, 2, 300)])
    events = [event(i, prompt_version="v1" if i < 300 else "v2") for i in range(600)]
    scores = [
        {"event_id": f"evt-{i}", "name": "words", "value": float(v)} for i, v in enumerate(vals)
    ]
    ingest(client, key, events, scores)
    out = compare(client, key, metric="words").json()
    assert out["test"] == "mann_whitney_u" and "heavy" in out["why"]


def test_a_metric_scored_by_several_sources_must_name_one(client, key):
    ingest(
        client,
        key,
        [event(0)],
        [
            {"event_id": "evt-0", "name": "quality", "value": 1, "source": "evaluator:judge@1"},
            {"event_id": "evt-0", "name": "quality", "value": 0, "source": "evaluator:judge@2"},
        ],
    )
    r = compare(client, key, metric="quality")
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["field"] == "source" and "evaluator:judge@1" in detail["message"]
    ok = compare(client, key, metric="quality", source="evaluator:judge@2")
    assert ok.status_code == 200 and ok.json()["n_a"] == 1


def test_paired_eval_cases_use_paired_tests(client, key):
    rng = np.random.default_rng(11)
    base = rng.uniform(0.4, 0.9, 60)
    events, scores = [], []
    for c in range(60):
        for v, value in (("v1", base[c]), ("v2", base[c] - 0.05 + rng.normal(0, 0.02))):
            eid = f"{v}-{c}"
            events.append(event(c, event_id=eid, prompt_version=v, case_id=f"case-{c}"))
            scores.append({"event_id": eid, "name": "quality", "value": float(value)})
            scores.append({"event_id": eid, "name": "pass", "value": int(value > 0.6)})
    ingest(client, key, events, scores)
    out = compare(client, key, metric="quality", test="paired_t").json()
    assert out["test"] == "paired_t" and out["n_a"] == 60
    assert out["significant"] is True and out["ci_low"] < -0.04
    mc = compare(client, key, metric="pass", test="mcnemar_exact").json()
    assert mc["test"] == "mcnemar_exact"
    bad = compare(client, key, metric="quality", test="mcnemar_exact")
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "test"


def test_compare_requests_are_validated_with_the_field_named(client, key):
    r = client.post(
        "/v1/compare", json={"metric": "q", "a": {}, "b": {"promt": "x"}}, headers=auth(key)
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.b.promt"
    r = compare(client, key, metric="q", alpha=0.9)
    assert r.json()["detail"][0]["field"] == "body.alpha"
    r = compare(client, key, metric="q", test="t-test")
    assert r.json()["detail"][0]["field"] == "body.test"


def test_an_empty_comparison_says_why_instead_of_failing(client, key):
    out = compare(client, key, metric="nothing").json()
    assert out["reason"] == "no_data" and out["p_value"] is None


def test_another_projects_data_never_enters_a_comparison(client, key, embedded_store):
    two_versions(client, key, n=50, mean_a=0.8, mean_b=0.7, seed=2)
    other, record = new_key("other", ["read"])
    embedded_store.put_api_key(record)
    out = compare(client, other, metric="quality").json()
    assert out["n_a"] == out["n_b"] == 0


def experiment_data(client, key, shares: dict[str, int], means: dict[str, float]) -> None:
    rng = np.random.default_rng(21)
    events, scores, i = [], [], 0
    for arm, n in shares.items():
        for _ in range(n):
            events.append(event(i, experiment="tone", variant=arm))
            scores.append(
                {
                    "event_id": f"evt-{i}",
                    "name": "quality",
                    "value": float(np.clip(rng.normal(means[arm], 0.15), 0, 1)),
                }
            )
            scores.append(
                {
                    "event_id": f"evt-{i}",
                    "name": "thumbs_up",
                    "value": int(rng.random() < means[arm]),
                }
            )
            i += 1
    ingest(client, key, events, scores)


def test_an_experiment_report_corrects_across_arms_and_metrics_and_checks_the_split(client, key):
    experiment_data(
        client,
        key,
        {"control": 1000, "warm": 1000, "terse": 1000},
        {"control": 0.7, "warm": 0.7, "terse": 0.6},
    )
    r = client.get(
        "/v1/experiments/tone", params={"metric": ["quality", "thumbs_up"]}, headers=auth(key)
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["arms"] == {"control": 1000, "warm": 1000, "terse": 1000}
    assert out["srm"]["mismatch"] is False
    by = {(x["metric"], x["arm"]): x for x in out["results"]}
    assert set(by) == {(m, a) for m in ("quality", "thumbs_up") for a in ("warm", "terse")}
    assert by[("quality", "terse")]["significant_holm"] is True
    assert by[("quality", "warm")]["significant_holm"] is False
    raw = [x["p_value"] for x in out["results"]]
    assert by[("thumbs_up", "terse")]["test"] == "two_proportion_z"
    assert cmp.adjust(raw, method="holm") == [x["p_holm"] for x in out["results"]]
    assert all(x["p_holm"] >= x["p_value"] for x in out["results"])


def test_a_broken_split_is_flagged_as_sample_ratio_mismatch(client, key):
    experiment_data(client, key, {"control": 1000, "b": 800}, {"control": 0.7, "b": 0.7})
    out = client.get("/v1/experiments/tone", params={"metric": "quality"}, headers=auth(key)).json()
    assert out["srm"]["mismatch"] is True and out["srm"]["p_value"] < 0.001
    fine = client.get(
        "/v1/experiments/tone",
        params={"metric": "quality", "split": "control:5,b:4"},
        headers=auth(key),
    ).json()
    assert fine["srm"]["mismatch"] is False


def test_an_experiment_without_a_control_arm_asks_for_one(client, key):
    experiment_data(client, key, {"x": 10, "y": 10}, {"x": 0.5, "y": 0.5})
    r = client.get("/v1/experiments/tone", params={"metric": "quality"}, headers=auth(key))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "control"
    r = client.get(
        "/v1/experiments/tone", params={"metric": "quality", "split": "x:1,y"}, headers=auth(key)
    )
    assert r.json()["detail"][0]["field"] == "split"
    for share in ("1e309", "inf", "nan", "0", "-1"):  # 1e309 overflows to inf
        split = {"metric": "quality", "control": "x", "split": f"x:1,y:{share}"}
        r = client.get("/v1/experiments/tone", params=split, headers=auth(key))
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "split", share


def test_the_series_shows_a_regression_at_the_hour_the_new_version_arrived(client, key):
    """Seven days hourly; v2 arrives at hour 100 and drops quality by 10 points."""
    from datetime import datetime, timedelta

    rng = np.random.default_rng(33)
    start = datetime(2026, 11, 10, tzinfo=UTC)
    events, scores, i = [], [], 0
    for hour in range(168):
        version = "v2" if hour >= 100 else "v1"
        for _ in range(int(rng.integers(20, 60))):
            ts = start + timedelta(hours=hour, seconds=int(rng.integers(0, 3600)))
            events.append(event(i, ts=ts.isoformat(), prompt_version=version))
            mean = 0.8 if version == "v1" else 0.7
            scores.append(
                {
                    "event_id": f"evt-{i}",
                    "name": "quality",
                    "value": float(np.clip(rng.normal(mean, 0.15), 0, 1)),
                }
            )
            i += 1
    ingest(client, key, events, scores)
    r = client.get(
        "/v1/series",
        params={"app": "support-bot", "metric": "quality", "bucket": "1h"},
        headers=auth(key),
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["buckets"]) == 168 and out["reason"] is None
    (cp,) = out["change_points"]
    assert cp["start"] == (start + timedelta(hours=100)).isoformat().replace("+00:00", "Z")
    assert cp["direction"] == "down" and cp["effect_low"] < -0.1 < cp["effect_high"]


def test_series_parameters_are_validated(client, key):
    r = client.get("/v1/series", params={"metric": "q", "bucket": "1w"}, headers=auth(key))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "query.bucket"
    r = client.get("/v1/series", params={"metric": "q", "bucket": "30s"}, headers=auth(key))
    assert r.json()["detail"][0]["field"] == "bucket"
    empty = client.get("/v1/series", params={"metric": "q"}, headers=auth(key)).json()
    assert empty["buckets"] == [] and empty["reason"]
