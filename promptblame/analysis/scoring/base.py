"""What every evaluator kind shares: its outcome type, the batch it reads, and the
per-response error boundary.

An evaluator is built once from validated params and then scores batches of responses. A batch
holds `responses` columns (input, output, expected_output, case_id, latency_ms, cost_usd,
input_tokens, output_tokens, status, tags, ...); kinds that only read a column or two loop over
that column (the scoring job's hot path), the others get one dict per response. Values are
0..1, 1 meaning "passes"; an exception on one response becomes that response's error, never a
score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

Response = Mapping[str, Any]


class Outcome(NamedTuple):
    value: float | None  # None: an error, or (no error) not scored now and left for later
    explanation: str = ""
    error: str = ""

    @classmethod
    def passed(cls, ok: bool, explanation: str = "") -> Outcome:
        return cls(1.0 if ok else 0.0, explanation)

    @classmethod
    def failed(cls, error: str) -> Outcome:
        return cls(None, "", error[:2000])


PASS, FAIL = Outcome(1.0), Outcome(0.0)


class Batch:
    """Responses of one chunk, column by column; columns and rows are converted on demand."""

    def __init__(self, table: pa.Table | None = None, rows: list[dict[str, Any]] | None = None):
        self._table = table
        self._rows = rows
        self._columns: dict[str, list[Any]] = {}

    @classmethod
    def of(cls, rows: list[dict[str, Any]]) -> Batch:
        """A batch of dicts (tests, callers outside the job)."""
        return cls(rows=rows)

    def __len__(self) -> int:
        return self._table.num_rows if self._table is not None else len(self._rows or ())

    def column(self, name: str) -> list[Any]:
        if name not in self._columns:
            if self._table is not None:
                self._columns[name] = self._table.column(name).to_pylist()
            else:
                self._columns[name] = [r.get(name) for r in self.rows()]
        return self._columns[name]

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            assert self._table is not None
            self._rows = self._table.to_pylist()
            if "tags" in self._table.column_names:
                for r in self._rows:
                    r["tags"] = dict(r["tags"] or ())
        return self._rows

    def take(self, indices: list[int]) -> Batch:
        if len(indices) == len(self):
            return self
        if self._table is not None:
            return Batch(self._table.take(indices))
        rows = self.rows()
        return Batch(rows=[rows[i] for i in indices])


def safely(fn: Callable[[Any], Outcome], value: Any) -> Outcome:
    try:
        return fn(value)
    except Exception as exc:  # an evaluator bug or hostile input: record it, go on
        return Outcome.failed(f"{type(exc).__name__}: {exc}")


class Params(BaseModel):
    """Base of every kind's params: unknown keys are an error (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=Params)


class Evaluator(Generic[P]):
    """One kind of check. Subclasses set `kind` and `params_model`, and implement `evaluate`
    (one response) or, when they read a single column, `check` (one value of `column`)."""

    kind: ClassVar[str]
    params_model: ClassVar[type[Params]]
    column: str | None = None  # the column `check` reads, for kinds that implement it

    def __init__(self, params: P) -> None:
        self.params = params

    def evaluate(self, response: Response) -> Outcome:
        assert self.column is not None
        return self.check(response.get(self.column))

    def check(self, value: Any) -> Outcome:
        raise NotImplementedError

    def score(self, batch: Batch) -> list[Outcome]:
        """Outcomes in batch order; one response's exception never stops the others."""
        if self.column is not None:
            return [safely(self.check, v) for v in batch.column(self.column)]
        return [safely(self.evaluate, r) for r in batch.rows()]

    def close(self) -> None:
        """Release what the evaluator holds (HTTP clients); most hold nothing."""
