"""Detection → incidents → alerts on the real engine, with a local webhook receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from promptblame.analysis.alerting.catalog import apply as apply_alerts
from promptblame.analysis.alerting.job import run_alerts
from promptblame.analysis.alerting.rules import validate as validate_alerts
from promptblame.analysis.detection import run_detection
from promptblame.api.auth import new_key
from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
from promptblame.ingest.rows import responses_table, scores_table
from promptblame.settings import Settings
from tests.helpers import auth

START = datetime(2026, 11, 1, tzinfo=UTC)
SWITCH = START + timedelta(days=7, hours=5)
END = START + timedelta(days=10)
NOW = END + timedelta(minutes=30)
SETTINGS = Settings(detection_window_days=14, detection_min_scores=100)


def traffic(store, project: str = "acme", *, seed: int = 1, regress: bool = True) -> None:
    """10 days, ~80 responses an hour on two routes; prompt v2 replaces v1 at SWITCH and drops
    the pass rate from 0.9 to 0.7 (when `regress`)."""
    rng = np.random.default_rng(seed)
    events, scores = [], []
    t, i = START, 0
    while t < END:
        for _ in range(int(rng.poisson(80))):
            ts = t + timedelta(seconds=float(rng.uniform(0, 3600)))
            v2 = ts >= SWITCH
            p = 0.7 if (v2 and regress) else 0.9
            eid = f"e{i}"
            events.append(
                ResponseEvent(
                    event_id=eid,
                    ts=ts,
                    app="bot",
                    model="gpt-4o",
                    route="billing" if rng.random() < 0.6 else "refunds",
                    prompt_id="answer",
                    prompt_version="v2" if v2 else "v1",
                )
            )
            scores.append(ScoreEvent(event_id=eid, name="correct", value=float(rng.random() < p)))
            i += 1
        t += timedelta(hours=1)
    now = datetime.now(UTC)
    store.insert("responses", responses_table(project, events, now))
    store.insert("scores", scores_table(project, scores, now))
    store.materialize_scores()


def test_a_prompt_regression_becomes_one_incident_naming_the_prompt_and_reruns_add_nothing(
    embedded_store,
):
    traffic(embedded_store)
    run = run_detection(embedded_store, SETTINGS, now=NOW)
    assert run.opened >= 1
    (inc,) = [i for i in embedded_store.incidents("acme") if i["verdict"] == "culprit"]
    assert inc["culprit"] == "prompt answer@v2" and inc["direction"] == "regression"
    assert abs(inc["shift_start"] - SWITCH) <= timedelta(hours=2)
    assert inc["effect"] == pytest.approx(-0.2, abs=0.05) and inc["p_value"] < 1e-6
    evidence = json.loads(inc["evidence"])
    assert evidence["culprit"]["predecessor"] == "answer@v1"
    before = embedded_store.incidents("acme")
    again = run_detection(embedded_store, SETTINGS, now=NOW + timedelta(minutes=5))
    assert (again.opened, again.revised) == (0, 0)
    assert embedded_store.incidents("acme") == before


def test_an_unchanged_series_opens_no_incident(embedded_store):
    traffic(embedded_store, regress=False, seed=2)
    run = run_detection(embedded_store, SETTINGS, now=NOW)
    assert run.series == 1 and run.opened == 0


class Receiver:
    """A local webhook receiver: records bodies; answers 500 to the first `fail_first`."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.calls = 0
        self.fail_first = fail_first


@contextmanager
def receiver(fail_first: int = 0) -> Iterator[tuple[str, Receiver]]:
    rec = Receiver(fail_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rec.calls += 1
            status = 500 if rec.calls <= rec.fail_first else 200
            if status == 200:
                rec.bodies.append(body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", rec
    finally:
        server.shutdown()
        server.server_close()


def rules(url: str, **rule: Any) -> Any:
    return validate_alerts(
        {
            "channels": [
                {"name": "hook", "kind": "webhook", "url": url, "headers": {"X-Token": "t"}},
                {"name": "slack", "kind": "slack", "url": url},
            ],
            "rules": [{"name": "quality", "channels": ["hook", "slack"], **rule}],
        }
    )


def fast_post(url: str, payload: dict[str, Any], **kw: Any):
    from promptblame.analysis.alerting.delivery import post

    return post(url, payload, backoff=0.01, **kw)


def test_alerts_are_retried_delivered_once_cooled_down_and_resolved(embedded_store):
    traffic(embedded_store)
    run_detection(embedded_store, SETTINGS, now=NOW)
    (inc,) = [i for i in embedded_store.incidents("acme") if i["verdict"] == "culprit"]
    with receiver(fail_first=2) as (url, rec):
        apply_alerts(embedded_store, "acme", rules(url, metric="correct", cooldown_minutes=60))
        sent = run_alerts(embedded_store, SETTINGS, now=NOW, poster=fast_post)
        assert (sent.sent, sent.failed) == (2, 0) and rec.calls == 4  # two 500s retried
        hook = next(b for b in rec.bodies if "event" in b)
        slack = next(b for b in rec.bodies if "blocks" in b)
        assert hook["event"] == "opened" and hook["incident"]["culprit"] == "prompt answer@v2"
        assert slack["text"].startswith("prompt answer@v2 regressed correct on bot/")
        # a second pass sends nothing new
        assert run_alerts(embedded_store, SETTINGS, now=NOW, poster=fast_post).sent == 0
        # a revised verdict within the cooldown waits; after it, one update per channel
        embedded_store.insert_rows(
            "incidents", [{**inc, "project_id": "acme", "revision": 2, "updated_at": NOW}]
        )
        soon, later = NOW + timedelta(minutes=1), NOW + timedelta(minutes=61)
        assert run_alerts(embedded_store, SETTINGS, now=soon, poster=fast_post).sent == 0
        assert run_alerts(embedded_store, SETTINGS, now=later, poster=fast_post).sent == 2
        embedded_store.insert_rows(
            "incidents",
            [{**inc, "project_id": "acme", "revision": 2, "status": "resolved", "updated_at": NOW}],
        )
        assert run_alerts(embedded_store, SETTINGS, now=later, poster=fast_post).sent == 2
        assert run_alerts(embedded_store, SETTINGS, now=later, poster=fast_post).sent == 0
    events = [b.get("event") or b["text"].split(":")[0] for b in rec.bodies]
    assert events.count("opened") == 1 and events.count("resolved") == 1
    history = embedded_store.alerts("acme")
    assert len(history) == 6 and all(a["status"] == "sent" for a in history)


def test_rules_filter_by_metric_direction_and_size(embedded_store):
    traffic(embedded_store)
    run_detection(embedded_store, SETTINGS, now=NOW)
    with receiver() as (url, _):
        for rule, expected in (
            ({"metric": "other"}, 0),
            ({"direction": "improvement"}, 0),
            ({"min_effect": 0.5}, 0),
            ({"metric": "correct", "min_effect": 0.1}, 2),
        ):
            apply_alerts(embedded_store, "acme", rules(url, **rule))
            assert run_alerts(embedded_store, SETTINGS, now=NOW, poster=fast_post).sent == expected


def test_a_channel_that_stays_down_is_recorded_as_failed_and_tried_again(embedded_store):
    traffic(embedded_store)
    run_detection(embedded_store, SETTINGS, now=NOW)
    with receiver(fail_first=100) as (url, rec):
        apply_alerts(embedded_store, "acme", rules(url, metric="correct"))
        first = run_alerts(embedded_store, SETTINGS, now=NOW, poster=fast_post)
        assert (first.sent, first.failed) == (0, 2)
        rec.fail_first = 0
        assert run_alerts(embedded_store, SETTINGS, now=NOW, poster=fast_post).sent == 2
    failed = [a for a in embedded_store.alerts("acme") if a["status"] == "failed"]
    assert len(failed) == 2 and failed[0]["attempts"] == 4 and "HTTP 500" in failed[0]["error"]


def test_one_projects_broken_alert_config_does_not_silence_the_other_projects(
    embedded_store, caplog
):
    for project in ("acme", "zeta"):  # "acme" sorts first: its failure comes before zeta
        traffic(embedded_store, project)
    run_detection(embedded_store, SETTINGS, now=NOW)
    with receiver() as (url, rec):
        apply_alerts(embedded_store, "zeta", rules(url, metric="correct"))
        broken = {"name": "hook", "kind": "webhook", "url": "not a url \x1b[2J"}
        embedded_store.insert_rows(
            "alert_config",
            [
                {
                    "project_id": "acme",
                    "section": "channel",
                    "name": "hook",
                    "definition": json.dumps(broken),
                    "content_hash": "x",
                    "removed": 0,
                    "updated_at": NOW,
                },
                {
                    "project_id": "acme",
                    "section": "rule",
                    "name": "quality",
                    "definition": json.dumps({"name": "quality", "channels": ["hook"]}),
                    "content_hash": "y",
                    "removed": 0,
                    "updated_at": NOW,
                },
            ],
        )
        with pytest.raises(RuntimeError, match="failed for 1 project"):
            run_alerts(embedded_store, SETTINGS, now=NOW, poster=fast_post)
        assert len(rec.bodies) == 2  # zeta's webhook and Slack message went out
    assert [a["status"] for a in embedded_store.alerts("zeta")] == ["sent", "sent"]
    assert "alerting pass failed for project acme" in caplog.text


def test_the_api_lists_shows_acks_and_resolves_incidents_in_one_project_only(
    client, key, embedded_store
):
    traffic(embedded_store)
    run_detection(embedded_store, SETTINGS, now=NOW)
    listed = client.get("/v1/incidents", headers=auth(key)).json()["incidents"]
    culprit = next(i for i in listed if i["verdict"] == "culprit")
    one = client.get(f"/v1/incidents/{culprit['incident_id']}", headers=auth(key)).json()
    assert one["evidence"]["culprit"]["value"] == "answer@v2"
    assert [r["revision"] for r in one["revisions"]] == [1]
    path = f"/v1/incidents/{culprit['incident_id']}"
    assert client.post(path + "/ack", headers=auth(key)).status_code == 403
    admin, record = new_key("acme", ["read", "admin"])
    embedded_store.put_api_key(record)
    r = client.post(path + "/ack", json={"note": "looking"}, headers=auth(admin))
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    assert client.post(path + "/resolve", headers=auth(admin)).json()["status"] == "resolved"
    assert client.get("/v1/incidents", params={"status": "open"}, headers=auth(key)).json()[
        "incidents"
    ] == [i for i in listed if i["incident_id"] != culprit["incident_id"]]
    other, record = new_key("other", ["read", "admin"])
    embedded_store.put_api_key(record)
    assert client.get(path, headers=auth(other)).status_code == 404
    assert client.post(path + "/resolve", headers=auth(other)).status_code == 404
    assert client.get("/v1/incidents", headers=auth(other)).json() == {"incidents": []}


def test_alert_rules_are_applied_all_or_nothing_and_listed_without_secrets(
    client, key, embedded_store
):
    admin, record = new_key("acme", ["read", "admin"])
    embedded_store.put_api_key(record)
    doc = {
        "channels": [
            {
                "name": "hook",
                "kind": "webhook",
                "url": "https://hooks.example.com/s3cret",
                "headers": {"X-Token": "abc"},
            }
        ],
        "rules": [{"name": "quality", "channels": ["hook"]}],
    }
    bad = {**doc, "rules": [{"name": "quality", "channels": ["nope"]}]}
    r = client.put("/v1/alert-rules", json=bad, headers=auth(admin))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "rules.0.channels.0"
    assert client.put("/v1/alert-rules", json=doc, headers=auth(admin)).status_code == 200
    listed = client.get("/v1/alert-rules", headers=auth(key)).json()
    assert listed["channels"] == [
        {"name": "hook", "kind": "webhook", "host": "hooks.example.com", "headers": ["X-Token"]}
    ]
    assert "s3cret" not in json.dumps(listed) and "abc" not in json.dumps(listed)
    assert listed["rules"][0]["direction"] == "regression"


def verdict(
    kind: str,
    start: datetime,
    *,
    value: str = "answer@v2",
    pred: str = "answer@v1",
    direction: str = "regression",
    rollback: bool = False,
) -> Any:
    from promptblame.analysis.attribution import Evidence, Verdict

    e = Evidence(
        dimension="prompt",
        value=value,
        predecessor=pred,
        status="blamed",
        share_before=0.0,
        share_after=1.0,
        arrival_index=10,
        rollback=rollback,
        effect=-0.2 if direction == "regression" else 0.2,
        p_value=1e-6,
    )
    return Verdict(
        kind=kind,  # type: ignore[arg-type]
        direction=direction,  # type: ignore[arg-type]
        index=10,
        start=start,
        metric_kind="proportion",
        higher_is_better=True,
        aggregate_effect=-0.2,
        level_before=0.9,
        level_after=0.7,
        window=24,
        culprit=e if kind == "culprit" else None,
        summary=f"{kind} summary",
    )


def test_merge_dedups_a_wobbling_shift_revises_a_changed_verdict_and_keeps_history():
    from promptblame.analysis.incidents import Series, merge

    s = Series("p", "bot", "correct", "app", 3600)
    t = datetime(2026, 11, 10, 12, tzinfo=UTC)
    first = merge(s, [], [("", verdict("no_version_cause", t))], now=NOW)
    assert first.opened == 1 and first.incidents[0]["revision"] == 1
    stored = [{k: v for k, v in first.incidents[0].items() if k != "project_id"}]
    # found again an hour later, same verdict: nothing to write
    again = merge(s, stored, [("", verdict("no_version_cause", t + timedelta(hours=1)))], now=NOW)
    assert (again.opened, again.revised, again.incidents) == (0, 0, [])
    # late scores make it a culprit: a revision, with the history row
    late = merge(s, stored, [("", verdict("culprit", t + timedelta(hours=2)))], now=NOW)
    assert (late.opened, late.revised) == (0, 1)
    row = late.incidents[0]
    assert row["incident_id"] == stored[0]["incident_id"] and row["revision"] == 2
    assert row["culprit"] == "prompt answer@v2" and late.revisions[0]["revision"] == 2
    # three buckets away, or the other direction: a different shift
    far = merge(s, stored, [("", verdict("no_version_cause", t + timedelta(hours=3)))], now=NOW)
    assert far.opened == 1


def test_a_rollback_is_its_own_incident_and_resolves_the_one_it_undoes():
    from promptblame.analysis.incidents import Series, merge

    s = Series("p", "bot", "correct", "app", 3600)
    t = datetime(2026, 11, 10, 12, tzinfo=UTC)
    first = merge(s, [], [("", verdict("culprit", t))], now=NOW)
    stored = [{k: v for k, v in first.incidents[0].items() if k != "project_id"}]
    back = verdict(
        "culprit",
        t + timedelta(days=2),
        value="answer@v1",
        pred="answer@v2",
        direction="improvement",
        rollback=True,
    )
    out = merge(s, stored, [("", back)], now=NOW)
    assert out.opened == 1 and out.resolved == 1
    resolved = next(r for r in out.incidents if r["incident_id"] == stored[0]["incident_id"])
    assert resolved["status"] == "resolved" and "rolled back" in resolved["status_note"]


def test_the_same_culprit_is_never_blamed_in_two_open_incidents_of_one_series():
    from promptblame.analysis.incidents import Series, merge

    s = Series("p", "bot", "correct", "app", 3600)
    t = datetime(2026, 11, 10, 12, tzinfo=UTC)
    first = merge(s, [], [("", verdict("culprit", t))], now=NOW)
    stored = [{k: v for k, v in first.incidents[0].items() if k != "project_id"}]
    # the next step of the same rollout, a day later: the same incident, not a second one
    later = merge(s, stored, [("", verdict("culprit", t + timedelta(days=1)))], now=NOW)
    assert later.opened == 0 and later.incidents == []
    # once that incident is resolved, a new arrival of the version is a new incident
    stored[0]["status"] = "resolved"
    again = merge(s, stored, [("", verdict("culprit", t + timedelta(days=2)))], now=NOW)
    assert again.opened == 1


# --- issue 17: thin series are analysed on coarser buckets, or listed with the reason --------


def small_app(store, *, project: str = "acme", app: str = "tiny", per_day: int, seed: int = 5):
    """14 days of a small app: `per_day` scores a day; prompt v2 (from day 7) drops the pass
    rate from 0.85 to 0.55."""
    rng = np.random.default_rng(seed)
    t0 = NOW - timedelta(days=14)
    switch = t0 + timedelta(days=7)
    events, scores = [], []
    for i in range(per_day * 14):
        ts = t0 + timedelta(seconds=float(rng.uniform(0, 14 * 86_400 - 3_700)))
        v2 = ts >= switch
        eid = f"{app}-{i}"
        events.append(
            ResponseEvent(
                event_id=eid,
                ts=ts,
                app=app,
                model="gpt-4o",
                route="ask",
                prompt_id="ask",
                prompt_version="v2" if v2 else "v1",
            )
        )
        ok = rng.random() < (0.55 if v2 else 0.85)
        scores.append(ScoreEvent(event_id=eid, name="correct", value=float(ok)))
    now = datetime.now(UTC)
    store.insert("responses", responses_table(project, events, now))
    store.insert("scores", scores_table(project, scores, now))
    store.materialize_scores()
    return switch


def test_a_small_app_with_200_scores_in_two_weeks_is_analysed_on_daily_buckets(embedded_store):
    switch = small_app(embedded_store, per_day=15, seed=8)  # ~210 scores: under the old 500 minimum
    run = run_detection(embedded_store, Settings(detection_window_days=14), now=NOW)
    assert run.series == 1 and run.not_analysed == []
    (inc,) = embedded_store.incidents("acme")
    assert inc["bucket_seconds"] >= 6 * 3600  # coarser than hourly, at most a day
    assert inc["direction"] == "regression"
    assert abs(inc["shift_start"] - switch) <= timedelta(seconds=2 * inc["bucket_seconds"])
    assert inc["verdict"] in ("culprit", "insufficient_evidence")
    if inc["verdict"] == "culprit":
        assert inc["culprit"] == "prompt ask@v2"


def test_a_series_too_thin_to_analyse_is_listed_with_the_reason_not_dropped(embedded_store):
    small_app(embedded_store, per_day=3, app="micro")  # ~42 scores in the window
    run = run_detection(embedded_store, Settings(detection_window_days=14), now=NOW)
    assert run.series == 0
    (skip,) = run.not_analysed
    assert skip["app"] == "micro" and skip["reason"] == "too_few_scores"
    assert "60 needed" in skip["detail"]


def test_the_bucket_width_is_the_narrowest_with_enough_responses_per_bucket():
    from promptblame.analysis.detection import plan_series

    since = NOW - timedelta(days=14)
    hours = [since + timedelta(hours=h) for h in range(14 * 24)]
    busy = plan_series(
        hours, [50] * len(hours), since=since, until=NOW, bucket_seconds=3600, min_scores=60
    )
    assert busy.bucket_seconds == 3600 and busy.reason is None
    thin = plan_series(
        hours, [1] * len(hours), since=since, until=NOW, bucket_seconds=3600, min_scores=60
    )
    assert thin.bucket_seconds == 8 * 3600  # 1 an hour: 8-hour buckets hold 8 on average
    sparse = plan_series(
        hours[:5], [30] * 5, since=since, until=NOW, bucket_seconds=3600, min_scores=60
    )
    assert sparse.bucket_seconds is None and sparse.reason == "too_few_buckets"


def test_built_in_metrics_are_watched_latency_and_error_rate_by_default(embedded_store):
    """No score at all: a model that doubles latency and errors is found on the responses'
    own fields (lower is better), and a project can turn them off."""
    rng = np.random.default_rng(21)
    t0 = NOW - timedelta(days=10)
    switch = t0 + timedelta(days=6, hours=3)
    events = []
    for i in range(10 * 24 * 40):
        ts = t0 + timedelta(seconds=float(rng.uniform(0, 10 * 86_400 - 3_700)))
        new = ts >= switch
        failed = rng.random() < (0.06 if new else 0.02)
        events.append(
            ResponseEvent(
                event_id=f"b{i}",
                ts=ts,
                app="bot",
                route="ask",
                model="gpt-4o",
                model_version="2024-08-06" if new else "2024-05-13",
                latency_ms=float(rng.lognormal(np.log(1800 if new else 900), 0.5)),
                status="error" if failed else "ok",
            )
        )
    embedded_store.insert("responses", responses_table("acme", events, datetime.now(UTC)))
    run = run_detection(embedded_store, Settings(detection_window_days=14), now=NOW)
    found = {i["metric"]: i for i in embedded_store.incidents("acme")}
    assert set(found) == {"latency_ms", "error_rate"} and run.opened == 2
    for inc in found.values():
        assert inc["source"] == "builtin" and inc["direction"] == "regression"
        assert inc["verdict"] == "culprit" and inc["culprit"] == "model gpt-4o@2024-08-06"
        assert abs(inc["shift_start"] - switch) <= timedelta(hours=2)
    assert found["latency_ms"]["effect"] > 500  # milliseconds, not points


def test_a_project_can_turn_the_built_in_metrics_off(embedded_store):
    traffic(embedded_store)
    settings = Settings(
        detection_window_days=14,
        detection_min_scores=100,
        detection_builtin_metrics_by_project={"acme": []},
    )
    run_detection(embedded_store, settings, now=NOW)
    assert {i["source"] for i in embedded_store.incidents("acme")} == {"app"}


def test_an_insufficient_evidence_incident_never_reads_as_no_version_caused_it():
    from promptblame.analysis.alerting.payloads import headline as alert_line
    from promptblame.analysis.attribution import Evidence
    from promptblame.analysis.incidents import Series, describe, merge
    from promptblame.reports.words import explanation, headline

    e = Evidence(
        dimension="prompt",
        value="ask@v2",
        predecessor="ask@v1",
        status="not_excluded",
        share_before=0.0,
        share_after=1.0,
        arrival_index=10,
        rollback=False,
        effect=-0.06,
        ci_low=-0.15,
        ci_high=0.03,
        n_new=40,
        n_old=42,
        needed_effect=-0.02,
        n_needed=900,
    )
    v = verdict("insufficient_evidence", datetime(2026, 11, 10, 12, tzinfo=UTC))
    from dataclasses import replace

    v = replace(v, culprit=None, candidates=(e,))
    row = merge(Series("p", "bot", "correct", "app", 3600), [], [("", v)], now=NOW).incidents[0]
    assert row["verdict"] == "insufficient_evidence" and row["culprit"] == "prompt ask@v2"
    ev = json.loads(describe(v, "")["evidence"])
    texts = [headline(row, ev), *explanation(row, ev), alert_line(row, "opened")]
    assert all("no version caused" not in t for t in texts)
    assert "not excluded" in texts[0] and any("900 responses" in t for t in texts)


def test_default_rules_send_an_open_arrival_without_a_shift_only_when_asked() -> None:
    from promptblame.analysis.alerting.rules import Rule

    def incident(reason: str) -> dict[str, Any]:
        return {
            "app": "bot",
            "route": "",
            "environment": "",
            "metric": "correct",
            "direction": "regression",
            "verdict": "insufficient_evidence",
            "effect": -0.01,
            "p_value": 1.0,
            "evidence": json.dumps({"reason": reason}),
        }

    default = Rule.model_validate({"name": "r", "channels": ["c"]})
    # a version went out on too little traffic to tell, no shift detected: a notice
    assert not default.matches(incident("arrival_underpowered"))
    asked = Rule.model_validate({"name": "r", "channels": ["c"], "unverified_arrivals": True})
    assert asked.matches(incident("arrival_underpowered"))
    # the metric moved and a version in it is not excluded: an alarm, as before
    assert default.matches(incident("version_in_segments_not_excluded"))


# a version its test could neither blame nor clear: the demo's answer@v4 on no_refusal
OPEN_VERSION = {
    "status": "not_excluded",
    "dimension": "prompt",
    "value": "answer@v4",
    "predecessor": "answer@v3",
    "effect": -0.011,
    "ci_low": -0.043,
    "ci_high": 0.02,
    "n_new": 766,
    "n_old": 774,
    "n_needed": 1291,
    "needed_effect": -0.036,
}


def test_an_alert_on_an_open_version_names_it_with_n_a_side_and_the_n_that_decides_it() -> None:
    from promptblame.analysis.alerting.payloads import headline

    candidate = OPEN_VERSION
    incident = {
        "app": "bot",
        "route": "refunds",
        "metric": "no_refusal",
        "direction": "regression",
        "verdict": "insufficient_evidence",
        "culprit": "prompt answer@v4",
        "summary": "",
        "evidence": json.dumps({"reason": "arrival_underpowered", "candidates": [candidate]}),
    }
    line = headline(incident, "opened")
    assert line.startswith("prompt answer@v4 not verified on no_refusal on bot/refunds")
    assert "766 new vs 774 old responses; about 1,291 a side would decide it" in line
    shifted = {**incident, "evidence": json.dumps({"reason": "", "candidates": [candidate]})}
    line = headline(shifted, "opened")
    assert "not enough evidence, not excluded: prompt answer@v4" in line and "1,291" in line


def test_a_version_not_verified_where_nothing_shifted_reads_as_a_notice_on_the_pages() -> None:
    from promptblame.reports.words import explanation, headline, severity

    candidate = OPEN_VERSION
    ev = {"reason": "arrival_underpowered", "metric_kind": "proportion", "candidates": [candidate]}
    row = {
        "app": "bot",
        "route": "refunds",
        "metric": "no_refusal",
        "direction": "regression",
        "verdict": "insufficient_evidence",
        "culprit": "prompt answer@v4",
        "effect": -0.012,
    }
    assert severity(row, ev) == "info"  # not a regression that was seen
    line = headline(row, ev)
    assert line.startswith("Prompt answer@v4 not verified on no_refusal on bot/refunds")
    assert "766 new vs 774 old responses; about 1,291 a side would decide it" in line
    said = " ".join(explanation(row, ev))
    assert "does not exclude an effect of -3.6 pt or +3.6 pt" in said and "no shift" in said
    assert "About 1,291 responses on each side would decide it." in said
    assert "(95% CI " in said  # stored before the level was recorded: the old default
    strict = {**ev, "candidates": [{**candidate, "ci_level": 0.998}]}
    assert "(99.8% CI -4.3 pt to +2.0 pt)" in " ".join(explanation(row, strict))
    # on a detected shift the same verdict is an alarm and says what would explain the shift
    shifted = {**ev, "reason": "version_in_segments_not_excluded"}
    assert severity(row, shifted) == "minor" and "would explain the shift" in " ".join(
        explanation(row, shifted)
    )
