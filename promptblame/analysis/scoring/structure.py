"""Deterministic checks on structure: JSON validity and JSON-schema compliance."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from pydantic import field_validator

from promptblame.analysis.scoring.base import Evaluator, Outcome, Params, Response

# ```json ... ``` around an answer is common and often accepted by the consuming code.
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


class JsonValidParams(Params):
    strip_code_fence: bool = False
    require_object: bool = False


def _parse(text: str, strip_code_fence: bool) -> tuple[Any, str]:
    """(document, "") or (None, why it is not JSON)."""
    if strip_code_fence:
        m = _FENCE.match(text)
        text = m.group(1) if m else text
    try:
        return json.loads(text), ""
    except (json.JSONDecodeError, RecursionError) as exc:
        return None, f"not JSON: {exc}"[:300]


class JsonValid(Evaluator[JsonValidParams]):
    """Passes when the output parses as JSON (optionally: as an object)."""

    kind = "json_valid"
    params_model = JsonValidParams

    def evaluate(self, response: Response) -> Outcome:
        doc, why = _parse(response["output"] or "", self.params.strip_code_fence)
        if why:
            return Outcome.passed(False, why)
        if self.params.require_object and not isinstance(doc, dict):
            return Outcome.passed(False, f"JSON {type(doc).__name__}, not an object")
        return Outcome.passed(True)


class JsonSchemaParams(Params):
    json_schema: dict[str, Any]
    strip_code_fence: bool = False

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.validators.validator_for(v).check_schema(v)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"is not a valid JSON schema: {exc.message}") from None
        return v


class JsonSchema(Evaluator[JsonSchemaParams]):
    """Passes when the output is JSON that the schema accepts; explains the first violation."""

    kind = "json_schema"
    params_model = JsonSchemaParams

    def __init__(self, params: JsonSchemaParams) -> None:
        super().__init__(params)
        cls = jsonschema.validators.validator_for(params.json_schema)
        self._validator = cls(params.json_schema)

    def evaluate(self, response: Response) -> Outcome:
        doc, why = _parse(response["output"] or "", self.params.strip_code_fence)
        if why:
            return Outcome.passed(False, why)
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(doc))
        if error is None:
            return Outcome.passed(True)
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return Outcome.passed(False, f"{where}: {error.message}"[:300])
