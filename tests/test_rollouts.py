"""Guarded rollouts end to end: a simulated app resolves its prompt per user with the real Python
client against a live server, logs what it served, an evaluator scores it, and the rollout job
decides: a bad candidate is rolled back, a good one ramps to 100 % and takes the label, and a
logging loss on one arm pauses the rollout instead of blaming the candidate."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from promptblame.analysis.alerting.payloads import headline
from promptblame.ingest.client import Client
from promptblame.ingest.prompt_cache import PromptUnavailable
from tests.server_process import cli, free_port, start_server

PASS_RATE = {"v1": 0.80, "v2": 0.70, "v3": 0.80, "v4": 0.80}  # v2 is 10 points worse
FAST = {
    "PROMPTBLAME_ROLLOUT_INTERVAL_SECONDS": "1",
    "PROMPTBLAME_SCORING_INTERVAL_SECONDS": "1",
    "PROMPTBLAME_SCORED_REFRESH_SECONDS": "1",
}


class Live:
    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.h = {"Authorization": f"Bearer {key}"}

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers=self.h, timeout=30, **kw)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = tmp_path_factory.mktemp("rollouts") / "data"
    key = cli(data, "keys", "create", "--project", "shop", "--scopes", "ingest,read,admin")
    port = free_port()
    server = start_server(data, port, **FAST)
    lv = Live(f"http://127.0.0.1:{port}", key.stdout.strip())
    try:
        for v in PASS_RATE:
            text = f"Answer {{{{q}}}} ({v})."
            r = lv.call("PUT", f"/v1/prompts/answer/versions/{v}", json={"template": text})
            assert r.status_code == 201
        r = lv.call(
            "PUT",
            "/v1/prompts/answer/labels/production",
            json={"version": "v1", "force": True, "reason": "first release"},
        )
        assert r.status_code == 200
        evaluators = {
            "evaluators": [{"name": "quoted", "kind": "contains", "params": {"values": ["policy"]}}]
        }
        assert lv.call("PUT", "/v1/evaluators", json=evaluators).status_code == 200
        yield lv
    finally:
        server.terminate()
        server.wait(timeout=30)


def start(lv: Live, candidate: str, **over: Any) -> str:
    body = {
        "prompt_id": "answer",
        "label": "production",
        "candidate": candidate,
        "steps": [20, 50, 100],
        "min_responses_per_step": 300,
        "min_minutes_per_step": 0,
        "guardrails": [{"metric": "quoted", "max_drop": 0.0}],
        "force": True,
        "reason": "no eval suite in this test",
        **over,
    }
    r = lv.call("POST", "/v1/rollouts", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["rollout_id"])


def run_app(lv: Live, rid: str, *, seed: int, lose_candidate_logs: float = 0.0) -> dict:
    """The app: rounds of 500 requests from 3,000 users until the rollout leaves `running`."""
    rng = random.Random(seed)
    served: dict[str, set[str]] = {}
    with Client(lv.url, lv.key, app="bot", prompt_cache_ttl=0.5, flush_interval=0.2) as pb:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            for _ in range(500):
                user = f"user-{rng.randrange(3000)}"
                p = pb.get_prompt("answer", unit=user)
                served.setdefault(user, set()).add(p.version)
                if p.variant == "candidate" and rng.random() < lose_candidate_logs:
                    continue  # the app's logging loses this one
                ok = rng.random() < PASS_RATE[p.version]
                text = "Per the refund policy, yes." if ok else "Yes."
                pb.log_response(prompt=p, model="gpt-4o", user_id=user, output=text)
            assert pb.flush(30)
            time.sleep(1.0)
            state = lv.call("GET", f"/v1/rollouts/{rid}").json()
            if state["state"] != "running":
                state["served"] = served
                return state
    raise AssertionError("the rollout never left `running`")


def test_a_bad_candidate_is_rolled_back_early_with_an_incident_naming_it(live):
    rid = start(live, "v2")
    state = run_app(live, rid, seed=1)
    assert state["state"] == "rolled_back", state["log"][-1]
    assert state["percent"] < 100 and state["log"][-1]["action"] == "rollback"
    assert state["log"][-1]["reason"].startswith("quoted −")
    resolved = live.call("GET", "/v1/prompts/answer/resolve").json()
    assert (resolved["version"], resolved["variant"]) == ("v1", None)  # the incumbent again
    inc = live.call("GET", f"/v1/incidents/rollout-{rid}").json()
    assert inc["culprit"] == "prompt answer@v2" and inc["verdict"] == "culprit"
    assert inc["summary"].startswith("rolled back answer@v2 → answer@v1 at ")
    assert "always-valid p = " in inc["summary"]
    assert headline(inc, "opened") == inc["summary"]  # the alert's first line
    # every user kept one version per step: ramps move users to the candidate only
    assert all(len(v) <= 2 for v in state["served"].values())


def test_a_good_candidate_ramps_to_100_percent_and_takes_the_label(live):
    rid = start(live, "v3")
    state = run_app(live, rid, seed=2)
    assert state["state"] == "completed", state["log"][-1]
    assert [e["action"] for e in state["log"]] == ["start", "advance", "complete"]
    labels = live.call("GET", "/v1/prompts/answer/labels").json()["labels"]
    assert [(x["label"], x["version"]) for x in labels] == [("production", "v3")]
    hist = live.call("GET", "/v1/prompts/answer/labels/production/history").json()["moves"]
    assert hist[-1]["reason"] == f"rollout {rid} completed"
    # each step is an experiment: incumbent as control, the step's split, always-valid
    exp = live.call("GET", f"/v1/experiments/{rid}/0", params={"metric": "quoted"}).json()
    assert exp["control"] == "incumbent" and set(exp["arms"]) == {"incumbent", "candidate"}
    assert exp["srm"]["expected_split"] == "given" and not exp["srm"]["mismatch"]
    (result,) = exp["results"]
    assert result["arm"] == "candidate" and result["sequential"]


def test_lost_logs_on_one_arm_pause_the_rollout_instead_of_rolling_it_back(live):
    rid = start(live, "v4", guardrails=[{"metric": "quoted", "max_drop": 0.05}])
    state = run_app(live, rid, seed=3, lose_candidate_logs=0.4)
    assert state["state"] == "paused", state["log"][-1]
    assert "sample ratio mismatch" in state["log"][-1]["reason"]
    # a person looks, then aborts: the incumbent takes all traffic again
    aborted = live.call("POST", f"/v1/rollouts/{rid}/abort", json={"note": "logging fixed first"})
    assert aborted.status_code == 200 and aborted.json()["state"] == "aborted"
    assert live.call("GET", "/v1/prompts/answer/resolve").json()["version"] == "v3"
    again = live.call("POST", f"/v1/rollouts/{rid}/resume")
    assert again.status_code == 409 and "aborted" in again.json()["detail"]


def test_a_live_experiment_serves_fixed_shares_stickily_and_ends_on_its_bad_variant(live):
    """A fixed split of three variants on the label (now serving v3, the control): each user
    keeps one variant, the client's local assignment equals the server's, the experiment's
    analysis defaults to the control and its split, and the 10-point-worse variant ends it."""
    moved = live.call("PUT", "/v1/prompts/answer/labels/production",
                      json={"version": "v3", "force": True, "reason": "control"})  # fmt: skip
    assert moved.status_code == 200, moved.text
    variants = {"v3": 50, "v2": 25, "v4": 25}
    body = {
        "prompt_id": "answer", "label": "production", "experiment_id": "tone-ab",
        "variants": variants,
        "guardrails": [{"metric": "quoted"}], "force": True, "reason": "live A/B",
    }  # fmt: skip
    for bad, field in (
        ({"variants": {"v3": 50, "v2": 40}}, "body.variants"),
        ({"variants": {"v2": 50, "v4": 50}}, "variants"),
        ({"variants": {"v3": 50, "v9": 50}}, "variants.v9"),
    ):
        r = live.call("POST", "/v1/experiments", json={**body, **bad})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == field, r.text
    r = live.call("POST", "/v1/experiments", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "experiment" and r.json()["split"] == variants
    served = {}
    for i in range(300):
        doc = live.call("GET", "/v1/prompts/answer/resolve", params={"unit": f"u{i}"}).json()
        assert doc["experiment"] == "tone-ab" and doc["variant"] == doc["version"]
        served[f"u{i}"] = doc["version"]
    shares = {v: list(served.values()).count(v) / 300 for v in variants}
    assert shares["v3"] == pytest.approx(0.5, abs=0.1) and min(shares.values()) > 0.15
    with Client(live.url, live.key, app="bot") as pb:
        assert all(pb.get_prompt("answer", unit=u).version == v for u, v in served.items())
    promote = live.call("POST", "/v1/rollouts/tone-ab/promote")
    assert promote.status_code == 409 and "no promotion" in promote.json()["detail"]

    state = run_app(live, "tone-ab", seed=4)
    assert state["state"] == "rolled_back", state["log"][-1]
    assert state["log"][-1]["reason"].startswith("variant v2: quoted −")
    assert all(len(v) == 1 for v in state["served"].values())  # sticky: one variant per user
    inc = live.call("GET", "/v1/incidents/rollout-tone-ab").json()
    assert inc["culprit"] == "prompt answer@v2"
    assert inc["summary"].startswith("ended experiment tone-ab: answer@v2 (25 %) → answer@v3")
    assert live.call("GET", "/v1/prompts/answer/resolve").json()["version"] == "v3"
    exp = live.call("GET", "/v1/experiments/tone-ab", params={"metric": "quoted"}).json()
    assert exp["control"] == "v3" and set(exp["arms"]) == {"v2", "v3", "v4"}
    assert exp["srm"]["expected_split"] == "given" and not exp["srm"]["mismatch"]
    assert all(r["sequential"] for r in exp["results"])


def test_kill_9_during_rollouts_never_skips_repeats_or_loses_a_decision(tmp_path):
    """The server is killed every few seconds while apps ramp two rollouts (one bad, one good)
    and restarted on the same data: each rollout's log is one chain (start, one advance per
    step, one final decision), the rollback's incident exists once and the completion moved
    the label once."""
    data = tmp_path / "data"
    key = cli(data, "keys", "create", "--project", "shop", "--scopes", "ingest,read,admin")
    port = free_port()
    server = start_server(data, port, **FAST)
    lv = Live(f"http://127.0.0.1:{port}", key.stdout.strip())
    for prompt in ("bad", "good"):
        for v in ("v1", "v2", "v3"):
            lv.call(
                "PUT", f"/v1/prompts/{prompt}/versions/{v}", json={"template": f"{v} {{{{q}}}}"}
            )
        lv.call("PUT", f"/v1/prompts/{prompt}/labels/production",
                json={"version": "v1", "force": True, "reason": "r"})  # fmt: skip
    lv.call("PUT", "/v1/evaluators", json={"evaluators": [
        {"name": "quoted", "kind": "contains", "params": {"values": ["policy"]}}]})  # fmt: skip
    rids = {}
    for prompt, candidate in (("bad", "v2"), ("good", "v3")):
        body = {
            "prompt_id": prompt, "label": "production", "candidate": candidate,
            "steps": [20, 50, 100], "min_responses_per_step": 300, "min_minutes_per_step": 0,
            "guardrails": [{"metric": "quoted"}], "force": True, "reason": "crash test",
        }  # fmt: skip
        rids[prompt] = lv.call("POST", "/v1/rollouts", json=body).json()["rollout_id"]
    rates = {("bad", "v2"): 0.65}
    stop = threading.Event()

    def app() -> None:
        rng = random.Random(5)
        with Client(lv.url, lv.key, app="bot", prompt_cache_ttl=0.5, prompt_timeout=0.5) as pb:
            while not stop.is_set():
                for _ in range(200):
                    prompt = rng.choice(("bad", "good"))
                    try:
                        p = pb.get_prompt(prompt, unit=f"u{rng.randrange(3000)}")
                    except PromptUnavailable:
                        continue  # the server is down and nothing is cached yet
                    ok = rng.random() < rates.get((prompt, p.version), 0.8)
                    pb.log_response(prompt=p, model="m", output="policy" if ok else "no")
                time.sleep(0.3)

    worker = threading.Thread(target=app, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 200
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            time.sleep(random.uniform(2, 4))
            server.send_signal(signal.SIGKILL)
            server.wait()
            server = start_server(data, port, **FAST)
            states = {
                p: lv.call("GET", f"/v1/rollouts/{r}").json()["state"] for p, r in rids.items()
            }
            if all(s != "running" for s in states.values()):
                break
        assert states == {"bad": "rolled_back", "good": "completed"}, states
        time.sleep(2.5)  # a pass of the job after the last restart (effects re-applied)
        for prompt, rid in rids.items():
            log = lv.call("GET", f"/v1/rollouts/{rid}").json()["log"]
            actions = [e["action"] for e in log]
            assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
            assert actions[0] == "start" and actions[1:-1] == ["advance"] * (len(log) - 2)
            assert [e["step"] for e in log[:-1]] == list(range(len(log) - 1))
            assert actions[-1] == ("rollback" if prompt == "bad" else "complete")
        incidents = lv.call("GET", "/v1/incidents").json()["incidents"]
        assert [i["incident_id"] for i in incidents] == [f"rollout-{rids['bad']}"]
        good = lv.call("GET", "/v1/prompts/good/labels/production/history").json()["moves"]
        assert [m["version"] for m in good] == ["v1", "v3"]  # moved once, by the completion
        bad = lv.call("GET", "/v1/prompts/bad/labels/production/history").json()["moves"]
        assert [m["version"] for m in bad] == ["v1"]
    finally:
        stop.set()
        server.send_signal(signal.SIGKILL)
        server.wait()
