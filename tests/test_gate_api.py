"""The CI gate end to end: eval runs shipped through the ingest API, gated by POST /v1/gate and
by `promptblame gate` against a live server and against the embedded store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from promptblame.api.auth import new_key
from promptblame.reports.gate import render_markdown, render_text
from tests.helpers import auth
from tests.server_process import cli, free_port, start_server

CASES = 300
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def outcomes(seed: int = 7) -> list[int]:
    """A 300-case eval where 85% of cases pass."""
    return [int(v) for v in np.random.default_rng(seed).random(CASES) < 0.85]


BASE = outcomes()
BROKEN = [i for i, ok in enumerate(BASE) if ok][5:221:18]  # 12 passing cases the candidate breaks


def eval_run(
    run_id: str,
    correct: list[int],
    *,
    prompt_version: str = "v1",
    model_version: str = "2024-08-06",
    skip: tuple[int, ...] = (),
    offset: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """One eval run as the app would ship it: responses tagged with the run, app scores."""
    responses, scores = [], []
    for i, ok in enumerate(correct):
        if i in skip:
            continue
        event_id = f"{run_id}-{i}"
        responses.append(
            {
                "event_id": event_id,
                "ts": (START + timedelta(seconds=offset + i)).isoformat(),
                "app": "support-bot",
                "environment": "eval",
                "prompt_id": "answer",
                "prompt_version": prompt_version,
                "model": "gpt-4o",
                "model_version": model_version,
                "case_id": f"case-{i:03d}",
                "input": f"question {i}",
                "output": f"{prompt_version}/{model_version} answers {i}",
                "tags": {"run_id": run_id},
            }
        )
        scores.append({"event_id": event_id, "name": "correct", "value": float(ok)})
    return {"responses": responses, "scores": scores}


def ship(post: Any, run: dict[str, list[dict[str, Any]]]) -> None:
    for kind in ("responses", "scores"):
        r = post(f"/v1/{kind}", {kind: run[kind]})
        assert r.status_code == 200, r.text


def broken(correct: list[int], cases: list[int]) -> list[int]:
    return [0 if i in cases else ok for i, ok in enumerate(correct)]


@pytest.fixture
def shipped(client, key):
    def post(path: str, body: dict[str, Any]) -> httpx.Response:
        return client.post(path, json=body, headers=auth(key))

    return post


def test_a_candidate_prompt_that_breaks_12_cases_fails_with_those_cases_and_their_text(shipped):
    ship(shipped, eval_run("r1", BASE))
    ship(shipped, eval_run("r2", broken(BASE, BROKEN), prompt_version="v2", offset=1000))
    r = shipped("/v1/gate", {"app": "support-bot", "baseline": "v1", "candidate": "v2"})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["verdict"] == "fail" and result["compared"] == "prompt_version"
    assert (result["baseline"]["run_id"], result["candidate"]["run_id"]) == ("r1", "r2")
    [m] = result["metrics"]
    assert (m["metric"], m["source"], m["test"]) == ("correct", "app", "mcnemar_exact")
    assert [c["case_id"] for c in m["regressed"]] == [f"case-{i:03d}" for i in BROKEN]
    first = m["regressed"][0]
    assert first["input"] == f"question {BROKEN[0]}"
    assert first["baseline_output"].startswith("v1/") and first["candidate_output"].startswith(
        "v2/"
    )
    assert m["improved"] == [] and result["warnings"] == []


def test_a_model_upgrade_is_gated_by_model_version_with_the_same_prompt(shipped):
    ship(shipped, eval_run("m1", BASE))
    ship(shipped, eval_run("m2", BASE, model_version="2024-11-20", offset=1000))
    r = shipped(
        "/v1/gate", {"app": "support-bot", "baseline": "2024-08-06", "candidate": "2024-11-20"}
    )
    result = r.json()
    assert result["compared"] == "model_version"
    assert result["verdict"] == "pass", result["metrics"][0]["why"]


def test_missing_cases_and_a_second_change_riding_along_are_reported(shipped):
    ship(shipped, eval_run("r1", BASE))
    ship(
        shipped,
        eval_run("r2", BASE, prompt_version="v2", model_version="2024-11-20", skip=(4, 9, 250)),
    )
    result = shipped("/v1/gate", {"app": "support-bot", "baseline": "v1", "candidate": "v2"}).json()
    assert result["cases_only_in_baseline"] == ["case-004", "case-009", "case-250"]
    assert result["metrics"][0]["only_baseline"] == ["case-004", "case-009", "case-250"]
    assert result["metrics"][0]["cases"] == CASES - 3
    assert any(w.startswith("missing_cases: 3 only in the baseline") for w in result["warnings"])
    assert any(
        "also_changed: model_version 2024-08-06 -> 2024-11-20" in w for w in result["warnings"]
    )


def test_the_newest_run_is_gated_unless_a_run_is_named(shipped):
    ship(shipped, eval_run("r1", BASE))
    ship(shipped, eval_run("r2", broken(BASE, BROKEN), prompt_version="v2", offset=1000))
    ship(shipped, eval_run("r3", BASE, prompt_version="v2", offset=2000))  # the fix, rerun
    body = {"app": "support-bot", "baseline": "v1", "candidate": "v2"}
    newest = shipped("/v1/gate", body).json()
    assert newest["candidate"]["run_id"] == "r3" and newest["candidate"]["other_runs"] == ["r2"]
    assert newest["verdict"] == "pass"
    older = shipped("/v1/gate", {**body, "candidate_run": "r2"}).json()
    assert older["verdict"] == "fail"


def test_unusable_requests_name_what_is_wrong(shipped):
    ship(shipped, eval_run("r1", BASE))
    ship(shipped, eval_run("r2", BASE, prompt_version="v2", offset=1000))
    base = {"app": "support-bot", "baseline": "v1", "candidate": "v2"}
    r = shipped("/v1/gate", {**base, "candidate": "v9"})
    assert r.status_code == 404 and "'v9'" in r.json()["detail"]
    r = shipped("/v1/gate", {**base, "candidate_run": "nope"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "candidate_run"
    r = shipped("/v1/gate", {**base, "metrics": ["helpfulness"]})
    assert r.status_code == 422 and "helpfulness" in r.json()["detail"][0]["message"]
    r = shipped("/v1/gate", {**base, "max_drop": -1})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.max_drop"


def test_another_projects_key_cannot_gate_or_see_these_runs(client, shipped, embedded_store):
    ship(shipped, eval_run("r1", BASE))
    ship(shipped, eval_run("r2", BASE, prompt_version="v2", offset=1000))
    other, record = new_key("globex", ["read"])
    embedded_store.put_api_key(record)
    r = client.post(
        "/v1/gate",
        json={"app": "support-bot", "baseline": "v1", "candidate": "v2"},
        headers=auth(other),
    )
    assert r.status_code == 404
    assert "question" not in r.text and "r1" not in r.text


HOSTILE = "<img src=x onerror=alert(1)> @here [link](http://evil) `x` \x1b[2J\u202e| *b*"


def hostile_result() -> dict[str, Any]:
    case = {
        "case_id": HOSTILE,
        "baseline": 1.0,
        "candidate": 0.0,
        "change": -1.0,
        "input": HOSTILE,
        "baseline_output": HOSTILE,
        "candidate_output": HOSTILE + "\n## heading",
    }
    metric = {
        "metric": "correct",
        "source": "app",
        "kind": "pass_fail",
        "verdict": "fail",
        "why": "lower by 0.04",
        "test": "mcnemar_exact",
        "cases": 300,
        "baseline_mean": 0.9,
        "candidate_mean": 0.86,
        "effect": -0.04,
        "ci_low": -0.06,
        "ci_high": -0.02,
        "p_holm": 0.0005,
        "regressed": [case],
        "improved": [],
    }
    side = {"version": HOSTILE, "run_id": HOSTILE}
    return {
        "verdict": "fail",
        "app": HOSTILE,
        "environment": "eval",
        "compared": "prompt_version",
        "baseline": side,
        "candidate": side,
        "cases_only_in_baseline": [HOSTILE],
        "cases_only_in_candidate": [],
        "metrics": [metric],
        "warnings": [],
    }


def test_llm_output_in_the_markdown_comment_and_the_terminal_text_is_inert():
    markdown = render_markdown(hostile_result())
    assert "<img" not in markdown and "&lt;img src=x onerror=alert\\(1\\)&gt;" in markdown
    assert "@here" not in markdown and "&#64;here" in markdown
    assert "](http" not in markdown and "`" not in markdown.replace("\\`", "")
    assert "\x1b" not in markdown and "\u202e" not in markdown
    assert "\n## heading" not in markdown
    for line in markdown.splitlines():  # no table row broken by a stray pipe
        if line.startswith("| case-") or HOSTILE[:4] in line:
            assert "\\|" in line or "|" not in line.replace("\\|", "")
    text = render_text(hostile_result())
    assert "\x1b" not in text and "\u202e" not in text and "\n## heading" not in text
    assert "<img src=x onerror=alert(1)>" in text  # plain text stays readable, just inert


def _sh_post(port: int, key: str) -> Any:
    def post(path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"http://127.0.0.1:{port}{path}",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )

    return post


def test_the_cli_gates_against_a_live_server_and_against_the_embedded_store(tmp_path):
    data = tmp_path / "data"
    created = cli(data, "keys", "create", "--project", "shop", "--scopes", "ingest,read")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    port = free_port()
    server = start_server(data, port)
    args = ["gate", "--app", "support-bot", "--baseline", "v1", "--candidate", "v2"]
    try:
        post = _sh_post(port, key)
        ship(post, eval_run("r1", BASE))
        ship(post, eval_run("r2", broken(BASE, BROKEN), prompt_version="v2", offset=1000))
        ship(post, eval_run("tiny-a", BASE[:10], prompt_version="t1", offset=2000))
        ship(post, eval_run("tiny-b", BASE[:10], prompt_version="t2", offset=3000))
        remote = [*args, "--url", f"http://127.0.0.1:{port}", "--api-key", key]
        text = cli(data, *remote)
        assert text.returncode == 1, text.stderr
        assert "promptblame gate: FAIL" in text.stdout
        assert all(f"case-{i:03d}" in text.stdout for i in BROKEN)
        md = cli(data, *remote, "--format", "markdown")
        assert md.returncode == 1 and "| correct (app) | mcnemar_exact | 300 |" in md.stdout
        assert "12 regressed cases of correct" in md.stdout
        live = json.loads(cli(data, *remote, "--format", "json").stdout)
        tiny = cli(
            data,
            "gate",
            "--app",
            "support-bot",
            "--baseline",
            "t1",
            "--candidate",
            "t2",
            "--url",
            f"http://127.0.0.1:{port}",
            "--api-key",
            key,
        )
        assert tiny.returncode == 3 and "cases would be needed" in tiny.stdout
        missing = cli(data, *remote[:-4], "--candidate", "v9", *remote[-4:])
        assert missing.returncode == 2 and "v9" in missing.stderr
        locked = cli(data, *args, "--project", "shop")
        assert locked.returncode != 0 and "--url" in locked.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
    embedded = cli(data, *args, "--project", "shop", "--format", "json")
    assert embedded.returncode == 1, embedded.stderr
    assert json.loads(embedded.stdout) == live
    assert cli(data, *args, "--project", "nobody").returncode == 2
