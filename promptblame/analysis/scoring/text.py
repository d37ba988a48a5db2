"""Deterministic checks on text: regex, contains, length bounds, refusal detection."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from promptblame.analysis.scoring.base import PASS, Evaluator, Outcome, Params

TextField = Literal["output", "input", "expected_output"]

_FLAGS = {"ignorecase": re.IGNORECASE, "multiline": re.MULTILINE, "dotall": re.DOTALL}


class RegexParams(Params):
    pattern: Annotated[str, Field(min_length=1, max_length=10_000)]
    must_match: bool = True
    flags: tuple[Literal["ignorecase", "multiline", "dotall"], ...] = ()
    field: TextField = "output"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression: {exc}") from None
        return v


class Regex(Evaluator[RegexParams]):
    """Passes when the pattern is found (must_match) or is absent (must_match: false)."""

    kind = "regex"
    params_model = RegexParams

    def __init__(self, params: RegexParams) -> None:
        super().__init__(params)
        flags = 0
        for f in params.flags:
            flags |= _FLAGS[f]
        self._re = re.compile(params.pattern, flags)
        self.column = params.field

    def check(self, text: str | None) -> Outcome:
        p = self.params
        m = self._re.search(text or "")
        if p.must_match:
            return PASS if m else Outcome(0.0, "pattern not found")
        return PASS if m is None else Outcome(0.0, f"matched {m.group(0)[:80]!r}")


class ContainsParams(Params):
    values: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)]
    mode: Literal["all", "any", "none"] = "all"
    case_sensitive: bool = False
    field: TextField = "output"


class Contains(Evaluator[ContainsParams]):
    """all: every value present; any: at least one; none: no value present."""

    kind = "contains"
    params_model = ContainsParams

    def __init__(self, params: ContainsParams) -> None:
        super().__init__(params)
        self._values = (
            params.values if params.case_sensitive else [v.lower() for v in params.values]
        )
        self.column = params.field

    def check(self, text: str | None) -> Outcome:
        p = self.params
        text = text or ""
        if not p.case_sensitive:
            text = text.lower()
        found = [v for v in self._values if v in text]
        if p.mode == "all":
            missing = [v for v in self._values if v not in found]
            return Outcome(0.0, f"missing {missing[:5]}") if missing else PASS
        if p.mode == "any":
            return PASS if found else Outcome(0.0, "none of the values found")
        return Outcome(0.0, f"found {found[:5]}") if found else PASS


class LengthParams(Params):
    min: Annotated[int, Field(ge=0)] | None = None
    max: Annotated[int, Field(ge=0)] | None = None
    unit: Literal["chars", "tokens"] = "chars"

    @model_validator(mode="after")
    def _bounds(self) -> LengthParams:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        return self


class Length(Evaluator[LengthParams]):
    """Output length within bounds; `tokens` uses the recorded output_tokens (never a guess)."""

    kind = "length"
    params_model = LengthParams

    def __init__(self, params: LengthParams) -> None:
        super().__init__(params)
        self.column = "output_tokens" if params.unit == "tokens" else "output"

    def check(self, value: str | int | None) -> Outcome:
        p = self.params
        if isinstance(value, int):
            size = value
        elif value is None and p.unit == "tokens":
            return Outcome.failed("output_tokens is not recorded for this response")
        else:
            size = len(value or "")
        ok = (p.min is None or size >= p.min) and (p.max is None or size <= p.max)
        return PASS if ok else Outcome(0.0, f"{size} {p.unit}")


DEFAULT_REFUSALS = (
    "i can't help with",
    "i cannot help with",
    "i can't assist",
    "i cannot assist",
    "i'm unable to",
    "i am unable to",
    "i'm not able to",
    "i am not able to",
    "i won't be able to",
    "i'm sorry, but",
    "i am sorry, but",
    "i apologize, but",
    "as an ai language model",
    "as an ai, i",
    "i must decline",
    "i can't provide",
    "i cannot provide",
)


class RefusalParams(Params):
    phrases: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)] = (
        DEFAULT_REFUSALS
    )
    field: TextField = "output"


class Refusal(Evaluator[RefusalParams]):
    """Passes when the text does not refuse or apologise (case-insensitive, curly quotes
    folded to straight ones)."""

    kind = "refusal"
    params_model = RefusalParams

    def __init__(self, params: RefusalParams) -> None:
        super().__init__(params)
        self._phrases = [_fold(p) for p in params.phrases]
        self.column = params.field

    def check(self, text: str | None) -> Outcome:
        folded = _fold(text or "")
        for phrase in self._phrases:  # `in` is a C substring search: far faster than a regex
            if phrase in folded:
                return Outcome(0.0, f"refusal: {phrase!r}")
        return PASS


def _fold(text: str) -> str:
    text = text.lower()
    if "\u2019" in text or "\u2018" in text:
        text = text.replace("\u2019", "'").replace("\u2018", "'")
    return text
