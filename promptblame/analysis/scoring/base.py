"""What every evaluator kind shares: its outcome type and the per-response error boundary.

An evaluator is built once from validated params and then called on many responses. A response
is a plain dict of `responses` columns (input, output, expected_output, case_id, latency_ms,
cost_usd, input_tokens, output_tokens, status, tags, ...). Values are 0..1, 1 meaning "passes";
an exception on one response becomes that response's error, never a score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

Response = Mapping[str, Any]

TEXT_FIELDS = ("output", "input", "expected_output")


@dataclass(frozen=True)
class Outcome:
    value: float | None  # None: an error, or (no error) not scored now and left for later
    explanation: str = ""
    error: str = ""

    @classmethod
    def passed(cls, ok: bool, explanation: str = "") -> Outcome:
        return cls(1.0 if ok else 0.0, explanation)

    @classmethod
    def failed(cls, error: str) -> Outcome:
        return cls(None, error=error[:2000])


class Params(BaseModel):
    """Base of every kind's params: unknown keys are an error (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=Params)


class Evaluator(Generic[P]):
    """One kind of check. Subclasses set `kind` and `params_model`, and implement `evaluate`."""

    kind: ClassVar[str]
    params_model: ClassVar[type[Params]]

    def __init__(self, params: P) -> None:
        self.params = params

    def evaluate(self, response: Response) -> Outcome:
        raise NotImplementedError

    def score(self, responses: Sequence[Response]) -> list[Outcome]:
        """Evaluate a batch; one response's exception never stops the others."""
        out = []
        for r in responses:
            try:
                out.append(self.evaluate(r))
            except Exception as exc:  # an evaluator bug or hostile input: record, go on
                out.append(Outcome.failed(f"{type(exc).__name__}: {exc}"))
        return out

    def close(self) -> None:
        """Release what the evaluator holds (HTTP clients); most hold nothing."""
