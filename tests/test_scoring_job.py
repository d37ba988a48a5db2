"""The scoring job on the real engine: sampling, filters, idempotent resumable runs, failures
that stay contained, the judge through its double, and the jobs endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from promptblame.analysis.jobs import failures, guarded
from promptblame.analysis.scoring.catalog import apply
from promptblame.analysis.scoring.config import validate
from promptblame.analysis.scoring.job import run_scoring
from promptblame.ingest.contracts import ResponseEvent
from promptblame.ingest.rows import responses_table
from promptblame.settings import Settings
from promptblame.store import ResponseFilter
from tests.helpers import auth
from tests.judge_double import completion, judge_double


def store_responses(store, n: int, *, project: str = "p", start: int = 0, **over: Any) -> None:
    now = datetime.now(UTC)
    events = [
        ResponseEvent(
            event_id=f"e{i:06d}",
            ts=now - timedelta(minutes=1 + i % 600),
            app="bot" if i % 4 else "other",
            route="a" if i % 2 else "b",
            model="m",
            output='{"ok": true}' if i % 3 else "I'm sorry, but no.",
            **over,
        )
        for i in range(start, start + n)
    ]
    store.insert("responses", responses_table(project, events, now))


def configure(store, settings, *evaluators: dict[str, Any], project: str = "p") -> None:
    apply(store, project, validate({"evaluators": list(evaluators)}), settings)


def scored(store, source: str, *, final: bool = True) -> list[str]:
    rows = store._rows(
        f"SELECT event_id FROM scores {'FINAL' if final else ''} WHERE source = {{s:String}}"
        " ORDER BY event_id",
        s=source,
    )
    return [r["event_id"] for r in rows]


SETTINGS = Settings(scoring_batch_rows=1000)


def test_sampling_is_deterministic_nested_and_close_to_the_rate(embedded_store):
    store_responses(embedded_store, 20_000)
    configure(
        embedded_store,
        SETTINGS,
        {"name": "a", "kind": "json_valid", "sample_rate": 0.2},
        {"name": "b", "kind": "refusal", "sample_rate": 0.2},
        {"name": "c", "kind": "json_valid", "sample_rate": 0.1},
    )
    run = run_scoring(embedded_store, SETTINGS)
    a, b, c = (set(scored(embedded_store, f"evaluator:{n}@1")) for n in "abc")
    assert abs(len(a) - 4000) < 3 * (20_000 * 0.2 * 0.8) ** 0.5  # within 3 sigma
    assert abs(len(c) - 2000) < 3 * (20_000 * 0.1 * 0.9) ** 0.5
    assert a == b and c < a  # same responses for the same rate; smaller rates nest
    assert run.scored == len(a) + len(b) + len(c)
    assert run_scoring(embedded_store, SETTINGS).scored == 0  # nothing new, nothing rescored


def test_filters_choose_apps_routes_and_environments(embedded_store):
    store_responses(embedded_store, 400)
    configure(
        embedded_store,
        SETTINGS,
        {"name": "a", "kind": "json_valid", "filter": {"app": "bot", "route": ["a"]}},
    )
    run_scoring(embedded_store, SETTINGS)
    got = scored(embedded_store, "evaluator:a@1")
    want = [f"e{i:06d}" for i in range(400) if i % 4 and i % 2]
    assert got == want


def test_a_run_killed_half_way_resumes_without_scoring_anything_twice(embedded_store):
    store_responses(embedded_store, 5_000)
    configure(embedded_store, SETTINGS, {"name": "a", "kind": "json_valid"})

    def die_after_two_chunks(done: int, total: int) -> None:
        if done >= 2000:
            raise KeyboardInterrupt  # like a kill: not an Exception the job would swallow

    with pytest.raises(KeyboardInterrupt):
        run_scoring(embedded_store, SETTINGS, progress=die_after_two_chunks)
    assert len(scored(embedded_store, "evaluator:a@1", final=False)) == 2000
    store_responses(embedded_store, 1_000, start=5_000)  # traffic goes on meanwhile
    assert run_scoring(embedded_store, SETTINGS).scored == 4_000
    raw = scored(embedded_store, "evaluator:a@1", final=False)
    assert len(raw) == len(set(raw)) == 6_000  # one score per (event, evaluator version)


def test_new_responses_are_scored_by_the_next_run_and_old_ones_are_not_reread(embedded_store):
    store_responses(embedded_store, 100)
    configure(embedded_store, SETTINGS, {"name": "a", "kind": "json_valid"})
    assert run_scoring(embedded_store, SETTINGS).scored == 100
    store_responses(embedded_store, 50, start=100)
    assert run_scoring(embedded_store, SETTINGS).scored == 50
    assert len(scored(embedded_store, "evaluator:a@1", final=False)) == 150


def test_a_changed_evaluator_scores_again_under_its_new_version(embedded_store):
    store_responses(embedded_store, 300)
    configure(
        embedded_store, SETTINGS, {"name": "fmt", "kind": "regex", "params": {"pattern": "ok"}}
    )
    run_scoring(embedded_store, SETTINGS)
    configure(
        embedded_store, SETTINGS, {"name": "fmt", "kind": "regex", "params": {"pattern": "no"}}
    )
    run_scoring(embedded_store, SETTINGS)
    assert len(scored(embedded_store, "evaluator:fmt@1")) == 300
    assert len(scored(embedded_store, "evaluator:fmt@2")) == 300
    assert embedded_store.score_sources("p", "fmt") == []  # not joined yet
    embedded_store.materialize_scores()
    assert embedded_store.score_sources("p", "fmt") == ["evaluator:fmt@1", "evaluator:fmt@2"]


def test_an_evaluator_that_cannot_run_is_reported_and_the_others_still_score(embedded_store):
    store_responses(embedded_store, 200)
    with_judge = Settings(judge_base_url="http://127.0.0.1:9/v1", judge_model="j")
    configure(
        embedded_store,
        with_judge,
        {"name": "fmt", "kind": "json_valid"},
        {"name": "helpful", "kind": "llm_judge", "params": {"rubric": "Helpful?"}},
    )
    run = run_scoring(embedded_store, SETTINGS)  # this worker has no judge endpoint
    assert run.scored == 200
    assert run.failed and "PROMPTBLAME_JUDGE_BASE_URL" in run.failed[0]
    (job,) = embedded_store.last_job_runs("p")
    assert job["job"] == "scoring" and job["last_status"] == "failed"
    assert "helpful" in job["last_error"] and job["last_rows"] == 200


def test_judge_errors_are_recorded_not_retried_by_the_schedule_and_retried_by_a_backfill(
    embedded_store,
):
    store_responses(embedded_store, 30)
    calls = {"n": 0}

    def behaviour(body: dict[str, Any], n: int) -> tuple[int, Any]:
        calls["n"] += 1
        if "sorry" in body["messages"][1]["content"]:
            return 200, completion("Sure, 5/5!")  # garbage: not the JSON asked for
        return 200, completion('{"score": 4, "reason": "fine"}')

    with judge_double(behaviour) as (url, _):
        s = Settings(judge_base_url=url, judge_model="judge-1", judge_max_retries=0)
        configure(
            embedded_store,
            s,
            {
                "name": "helpful",
                "kind": "llm_judge",
                "params": {"rubric": "R", "rubric_version": "v1"},
            },
        )
        run = run_scoring(embedded_store, s)
        assert (run.scored, run.errors) == (20, 10)
        assert run_scoring(embedded_store, s).scored == 0 and calls["n"] == 30
        since = datetime.now(UTC) - timedelta(days=1)
        again = run_scoring(
            embedded_store, s, backfill_since=since.replace(tzinfo=None).replace(tzinfo=UTC)
        )
        assert (again.scored, again.errors) == (0, 10) and calls["n"] == 40
    source = "evaluator:helpful@1/judge-1/v1"
    errors = embedded_store._rows(
        "SELECT error FROM score_errors FINAL WHERE source = {s:String}", s=source
    )
    assert len(errors) == 10 and all("not JSON" in e["error"] for e in errors)
    values = embedded_store._rows(
        "SELECT DISTINCT value FROM scores FINAL WHERE source = {s:String}", s=source
    )
    assert values == [{"value": 0.75}]


def test_backfill_reaches_past_the_lookback_and_leaves_the_schedule_cursor_alone(embedded_store):
    store_responses(embedded_store, 10)
    old = datetime.now(UTC) - timedelta(days=30)
    embedded_store.insert(
        "responses",
        responses_table(
            "p",
            [ResponseEvent(event_id="old", ts=old, app="bot", model="m", output="{}")],
            datetime.now(UTC),
        ),
    )
    configure(embedded_store, SETTINGS, {"name": "a", "kind": "json_valid"})
    assert run_scoring(embedded_store, SETTINGS).scored == 10  # 7-day lookback
    run = run_scoring(embedded_store, SETTINGS, backfill_since=old - timedelta(hours=1))
    assert run.scored == 1
    assert embedded_store.count("scores", "p") == 11


def test_projects_are_scored_separately_with_their_own_evaluators(embedded_store):
    store_responses(embedded_store, 50, project="p")
    store_responses(embedded_store, 50, project="q")
    configure(embedded_store, SETTINGS, {"name": "a", "kind": "json_valid"}, project="p")
    run_scoring(embedded_store, SETTINGS)
    assert embedded_store.count("scores", "p") == 50 and embedded_store.count("scores", "q") == 0


def test_a_failing_job_is_counted_and_recorded_and_does_not_raise(embedded_store, caplog):
    def broken() -> None:
        raise RuntimeError("disk on fire")

    before = failures["broken"]
    guarded(embedded_store, "broken", broken)()
    guarded(embedded_store, "fine", lambda: None)()
    assert failures["broken"] == before + 1
    runs = {r["job"]: r for r in embedded_store.last_job_runs("p")}
    assert runs["broken"]["last_status"] == "failed"
    # every project sees store-wide runs: the type only; the message is in the log
    assert runs["broken"]["last_error"] == "RuntimeError (details in the server log)"
    assert "disk on fire" in caplog.text
    assert runs["fine"]["last_status"] == "ok"


def test_scores_written_by_the_job_feed_the_analysis_and_the_jobs_endpoint(
    client, key, embedded_store
):
    store_responses(embedded_store, 90, project="acme")
    configure(embedded_store, SETTINGS, {"name": "fmt", "kind": "json_valid"}, project="acme")
    run_scoring(embedded_store, SETTINGS)
    embedded_store.materialize_scores()
    rows = embedded_store.version_score_sums(
        "acme", ResponseFilter(), metric="fmt", source="evaluator:fmt@1"
    )
    n, total = sum(r["n"] for r in rows), sum(r["total"] for r in rows)
    assert (n, total) == (90, 60)  # two of three outputs are JSON
    jobs = client.get("/v1/jobs", headers=auth(key)).json()["jobs"]
    assert [j["job"] for j in jobs] == ["scoring"] and jobs[0]["last_rows"] == 90
