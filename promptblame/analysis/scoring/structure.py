"""Deterministic checks on structure: JSON validity and JSON-schema compliance."""

from __future__ import annotations

from typing import Any

import jsonschema
import pydantic_core
from pydantic import field_validator

from promptblame.analysis.scoring.base import PASS, Evaluator, Outcome, Params


class JsonValidParams(Params):
    strip_code_fence: bool = False
    require_object: bool = False


def _parse(text: str, strip_code_fence: bool) -> tuple[Any, str]:
    """(document, "") or (None, why it is not JSON). pydantic-core's parser: strict JSON, a
    few times faster than the json module, with a nesting limit."""
    if strip_code_fence:
        text = _unfence(text)
    try:
        return pydantic_core.from_json(text), ""
    except (ValueError, RecursionError) as exc:
        return None, f"not JSON: {exc}"[:300]


def _unfence(text: str) -> str:
    """The inside of a ```json ... ``` block (common around answers, and often accepted by the
    consuming code); other text unchanged."""
    inner = text.strip()
    if not (inner.startswith("```") and inner.endswith("```") and len(inner) > 6):
        return text
    first_line_end = inner.find("\n")
    return inner[first_line_end + 1 : -3] if first_line_end != -1 else text


class JsonValid(Evaluator[JsonValidParams]):
    """Passes when the output parses as JSON (optionally: as an object)."""

    kind = "json_valid"
    params_model = JsonValidParams

    column = "output"

    def check(self, text: str | None) -> Outcome:
        doc, why = _parse(text or "", self.params.strip_code_fence)
        if why:
            return Outcome(0.0, why)
        if self.params.require_object and not isinstance(doc, dict):
            return Outcome(0.0, f"JSON {type(doc).__name__}, not an object")
        return PASS


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

    column = "output"

    def check(self, text: str | None) -> Outcome:
        doc, why = _parse(text or "", self.params.strip_code_fence)
        if why:
            return Outcome(0.0, why)
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(doc))
        if error is None:
            return PASS
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return Outcome(0.0, f"{where}: {error.message}"[:300])
