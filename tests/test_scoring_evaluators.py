"""Each evaluator kind on crafted responses, including hostile and garbled output."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError

from promptblame.analysis.scoring.base import Batch, Outcome
from promptblame.analysis.scoring.judge import Judge, JudgeParams, parse_verdict
from promptblame.analysis.scoring.reference import token_f1
from promptblame.analysis.scoring.registry import build, parse_params
from promptblame.settings import Settings
from tests.judge_double import completion, judge_double


def resp(output: str = "", **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "event_id": "e1",
        "input": "question",
        "output": output,
        "expected_output": "",
        "case_id": "",
        "latency_ms": None,
        "cost_usd": None,
        "output_tokens": None,
        "tags": {},
    }
    r.update(over)
    return r


def run(kind: str, params: dict[str, Any], *responses: dict[str, Any]) -> list[Outcome]:
    ev = build(kind, parse_params(kind, params), Settings())
    return ev.score(Batch.of(list(responses)))


def values(outcomes: list[Outcome]) -> list[float | None]:
    return [o.value for o in outcomes]


HOSTILE = [
    "",
    "\x00\x01\x02",
    "<script>alert(1)</script>",
    "\ufffd\ufffd broken \ud800 surrogate",
    "[" * 100_000,
    "x" * 1_000_000,
    "😀" * 1000,
]


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("json_valid", {}),
        ("json_schema", {"json_schema": {"type": "object"}}),
        ("regex", {"pattern": r"\d+"}),
        ("contains", {"values": ["refund"]}),
        ("length", {"max": 100}),
        ("refusal", {}),
        ("exact_match", {"normalized": True}),
        ("token_f1", {}),
    ],
)
def test_every_deterministic_kind_survives_hostile_output_without_raising(kind, params):
    outs = run(kind, params, *(resp(h, expected_output="ref") for h in HOSTILE))
    assert len(outs) == len(HOSTILE)
    for o in outs:
        assert (o.value is None) == bool(o.error)
        assert o.value is None or 0.0 <= o.value <= 1.0


def test_json_valid_passes_json_and_explains_what_is_not():
    outs = run("json_valid", {}, resp('{"a": 1}'), resp("[1, 2]"), resp("{'a': 1}"), resp(""))
    assert values(outs) == [1.0, 1.0, 0.0, 0.0]
    assert "not JSON" in outs[2].explanation


def test_json_valid_can_require_an_object_and_strip_code_fences():
    fenced = '```json\n{"a": 1}\n```'
    assert values(run("json_valid", {}, resp(fenced))) == [0.0]
    assert values(run("json_valid", {"strip_code_fence": True}, resp(fenced))) == [1.0]
    assert values(run("json_valid", {"require_object": True}, resp("[1]"))) == [0.0]


def test_json_schema_names_the_violated_field():
    schema = {
        "type": "object",
        "required": ["answer", "confidence"],
        "properties": {"confidence": {"type": "number", "maximum": 1}},
    }
    outs = run(
        "json_schema",
        {"json_schema": schema},
        resp('{"answer": "x", "confidence": 0.5}'),
        resp('{"answer": "x", "confidence": 7}'),
        resp('{"answer": "x"}'),
        resp("nope"),
    )
    assert values(outs) == [1.0, 0.0, 0.0, 0.0]
    assert outs[1].explanation.startswith("confidence:")
    assert "confidence" in outs[2].explanation


def test_an_invalid_json_schema_or_regex_is_refused_when_the_config_is_read():
    with pytest.raises(ValidationError, match="not a valid JSON schema"):
        parse_params("json_schema", {"json_schema": {"type": "nonsense"}})
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        parse_params("regex", {"pattern": "(unclosed"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        parse_params("regex", {"pattern": "x", "must_mach": True})


def test_regex_must_and_must_not_match_with_flags():
    assert values(
        run("regex", {"pattern": "order #\\d+"}, resp("Order #12"), resp("order #12"))
    ) == [
        0.0,
        1.0,
    ]
    assert values(run("regex", {"pattern": "order", "flags": ["ignorecase"]}, resp("ORDER"))) == [
        1.0
    ]
    outs = run("regex", {"pattern": "as an ai", "must_match": False}, resp("As an AI"), resp("ok"))
    assert values(outs) == [1.0, 1.0]
    outs = run("regex", {"pattern": "(?i)as an ai", "must_match": False}, resp("As an AI model"))
    assert values(outs) == [0.0] and "As an AI" in outs[0].explanation


def test_contains_all_any_none_and_case():
    r = resp("Your REFUND is on its way")
    assert values(run("contains", {"values": ["refund", "way"]}, r)) == [1.0]
    assert values(run("contains", {"values": ["refund"], "case_sensitive": True}, r)) == [0.0]
    assert values(run("contains", {"values": ["nope", "way"], "mode": "any"}, r)) == [1.0]
    assert values(run("contains", {"values": ["refund"], "mode": "none"}, r)) == [0.0]


def test_length_in_chars_and_in_recorded_tokens_never_guessed():
    assert values(run("length", {"min": 2, "max": 5}, resp("abc"), resp("abcdef"), resp("a"))) == [
        1.0,
        0.0,
        0.0,
    ]
    outs = run("length", {"max": 10, "unit": "tokens"}, resp("x", output_tokens=12), resp("x"))
    assert outs[0].value == 0.0
    assert outs[1].value is None and "output_tokens" in outs[1].error
    with pytest.raises(ValidationError, match="min is greater than max"):
        parse_params("length", {"min": 5, "max": 2})


def test_refusal_detection_with_default_and_custom_phrases():
    outs = run(
        "refusal",
        {},
        resp("I\u2019m sorry, but I can\u2019t help with that."),
        resp("AS AN AI LANGUAGE MODEL I cannot"),
        resp("Sure! Here is your refund status."),
    )
    assert values(outs) == [0.0, 0.0, 1.0]
    assert values(run("refusal", {"phrases": ["no can do"]}, resp("No can do, pal"))) == [0.0]


def test_latency_and_cost_thresholds_and_missing_values_are_errors():
    outs = run("latency", {"max_ms": 500}, resp(latency_ms=499.0), resp(latency_ms=501.0), resp())
    assert values(outs) == [1.0, 0.0, None]
    outs = run("cost", {"max_usd": 0.01}, resp(cost_usd=0.001), resp(cost_usd=0.02))
    assert values(outs) == [1.0, 0.0]


def test_exact_and_normalized_match_against_expected_output_or_a_dataset_case():
    r = resp("The Eiffel Tower!", expected_output="eiffel tower", case_id="c1")
    assert values(run("exact_match", {}, r)) == [0.0]
    assert values(run("exact_match", {"normalized": True}, r)) == [1.0]
    ds = {"dataset": {"c1": "Big Ben"}, "normalized": True}
    assert values(run("exact_match", ds, r)) == [0.0]
    missing = run("exact_match", {"dataset": {"c9": "x"}}, r)[0]
    assert missing.value is None and "no reference" in missing.error


def test_token_f1_matches_the_squad_definition():
    assert token_f1("the cat sat on the mat", "a cat sat on a mat") == 1.0
    # pred tokens: cat sat; ref: cat sat on mat -> p = 1, r = 0.5, f1 = 2/3
    assert token_f1("cat sat", "cat sat on mat") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    assert values(run("token_f1", {}, resp("dog", expected_output="cat"))) == [0.0]


def test_custom_callables_need_an_allowed_module():
    settings = Settings(custom_evaluator_modules="tests")
    params = parse_params("custom", {"callable": "tests.custom_evaluators:mentions_refund"})
    ev = build("custom", params, settings)
    outs = ev.score(Batch.of([resp("refund issued"), resp("nothing"), resp("boom")]))
    assert values(outs) == [1.0, 0.0, None]
    assert "RuntimeError" in outs[2].error
    with pytest.raises(ValueError, match="not allowed"):
        build("custom", params, Settings())
    bad = parse_params("custom", {"callable": "tests.custom_evaluators:out_of_range"})
    assert (
        build("custom", bad, settings)
        .score(Batch.of([resp("x")]))[0]
        .error.startswith("returned 7")
    )


def test_judge_verdicts_are_parsed_strictly():
    assert parse_verdict('{"score": 5, "reason": "good"}', 1, 5) == Outcome(1.0, "good")
    assert parse_verdict('{"score": 3}', 1, 5).value == 0.5
    for garbage in ["5", "Score: 5", '{"score": 6}', '{"score": 4.5}', '{"score": true}', "[]", ""]:
        o = parse_verdict(garbage, 1, 5)
        assert o.value is None and o.error, garbage


def judge(url: str, **params: Any) -> Judge:
    p = JudgeParams(rubric="Is it helpful?", **params)
    return Judge(
        p, base_url=url, api_key="sk-test", default_model="judge-1", timeout=0.5, backoff=0.01
    )


def test_the_judge_sends_the_rubric_and_data_and_scores_valid_replies():
    with judge_double(lambda body, n: (200, completion('{"score": 4, "reason": "ok"}'))) as (
        url,
        seen,
    ):
        outs = judge(url).score(Batch.of([resp("an answer", input="a question <script>")]))
    assert outs == [Outcome(0.75, "ok")]
    assert seen[0]["model"] == "judge-1" and seen[0]["auth"] == "Bearer sk-test"
    assert "Is it helpful?" in seen[0]["messages"][0]["content"]
    assert "a question <script>" in seen[0]["messages"][1]["content"]


def test_judge_garbage_500s_timeouts_and_dropped_connections_become_errors_not_scores():
    def behaviour(body: dict[str, Any], n: int) -> tuple[int, Any]:
        out = body["messages"][1]["content"]
        if "garbage" in out:
            return 200, completion("I think it deserves a 5!")
        if "fivehundred" in out:
            return 500, {"error": "boom"}
        if "slow" in out:
            time.sleep(1.0)
            return 200, completion('{"score": 5}')
        if "drop" in out:
            return 0, None
        if "nocontent" in out:
            return 200, {"choices": []}
        return 200, completion('{"score": 5}')

    with judge_double(behaviour) as (url, seen):
        outs = judge(url).score(
            Batch.of(
                [resp(x) for x in ("garbage", "fivehundred", "slow", "drop", "nocontent", "fine")]
            )
        )
    assert [o.value for o in outs] == [None, None, None, None, None, 1.0]
    assert "not JSON" in outs[0].error
    assert "unavailable after 4 tries: HTTP 500" in outs[1].error
    assert "ReadTimeout" in outs[2].error
    assert "no choices" in outs[4].error
    assert sum("fivehundred" in r["messages"][1]["content"] for r in seen) == 4  # 1 + 3 retries


def test_a_judge_retry_that_succeeds_gives_a_score():
    with judge_double(
        lambda body, n: (503, {}) if n == 1 else (200, completion('{"score": 1}'))
    ) as (url, seen):
        assert judge(url).score(Batch.of([resp("x")])) == [Outcome(0.0, "")]
    assert len(seen) == 2


def test_the_judge_cost_cap_leaves_the_rest_for_later_instead_of_erroring():
    # each call: 1000 prompt tokens at $0.01/1k = $0.01; cap $0.025 -> 3 calls, then stop
    reply = completion('{"score": 5}', prompt_tokens=1000, completion_tokens=0)
    with judge_double(lambda body, n: (200, reply)) as (url, seen):
        j = judge(url, input_price_per_1k=0.01, max_cost_usd=0.025)
        j._concurrency = 1
        outs = j.score(Batch.of([resp(str(i)) for i in range(6)]))
    assert [o.value for o in outs] == [1.0, 1.0, 1.0, None, None, None]
    assert all(not o.error for o in outs)
    assert len(seen) == 3 and j.cost_usd == pytest.approx(0.03)
