"""The evaluator kinds by name, and how to build one from a validated definition."""

from __future__ import annotations

from typing import Any

from promptblame.analysis.scoring.base import Evaluator, Params
from promptblame.analysis.scoring.custom import Custom, CustomParams
from promptblame.analysis.scoring.judge import Judge, JudgeParams, judge_identity
from promptblame.analysis.scoring.limits import Cost, Latency
from promptblame.analysis.scoring.reference import ExactMatch, TokenF1
from promptblame.analysis.scoring.structure import JsonSchema, JsonValid
from promptblame.analysis.scoring.text import Contains, Length, Refusal, Regex
from promptblame.settings import Settings

KINDS: dict[str, type[Evaluator[Any]]] = {
    k.kind: k
    for k in (
        JsonValid,
        JsonSchema,
        Regex,
        Contains,
        Length,
        Refusal,
        Latency,
        Cost,
        ExactMatch,
        TokenF1,
        Judge,
        Custom,
    )
}


def parse_params(kind: str, params: dict[str, Any]) -> Params:
    """Validate a kind's params (pydantic ValidationError names the field)."""
    return KINDS[kind].params_model.model_validate(params)


def build(kind: str, params: Params, settings: Settings) -> Evaluator[Any]:
    """A ready evaluator; ValueError when it cannot run here (missing judge URL, module not
    allowed)."""
    if isinstance(params, JudgeParams):
        return Judge(
            params,
            base_url=settings.judge_base_url,
            api_key=settings.judge_api_key.get_secret_value(),
            default_model=settings.judge_model,
            timeout=settings.judge_timeout_seconds,
            max_retries=settings.judge_max_retries,
            concurrency=settings.judge_concurrency,
        )
    if isinstance(params, CustomParams):
        return Custom(params, allowed_modules=settings.custom_modules())
    return KINDS[kind](params)


def source_of(name: str, version: int, params: Params, settings: Settings) -> str:
    """The score source: `evaluator:<name>@<version>`, plus the judge's model and rubric."""
    source = f"evaluator:{name}@{version}"
    if isinstance(params, JudgeParams):
        source += "/" + judge_identity(params, settings.judge_model)
    return source
