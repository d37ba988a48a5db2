"""Reference-based checks: exact / normalized match and token-overlap F1 against the expected
output carried by the response (eval runs) or a dataset case looked up by case_id.

Normalization follows the SQuAD evaluation script (lowercase, drop punctuation and the articles
a/an/the, collapse whitespace), the usual definition of "normalized match" and token F1.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import Annotated

from pydantic import Field

from promptblame.analysis.scoring.base import Evaluator, Outcome, Params, Response

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class ReferenceParams(Params):
    # case_id -> expected output; when given, it wins over the response's expected_output.
    dataset: Annotated[dict[str, str], Field(max_length=1_000_000, default_factory=dict)]


def _reference(params: ReferenceParams, response: Response) -> str | None:
    case = response.get("case_id") or ""
    if params.dataset:
        return params.dataset.get(case)
    return response.get("expected_output") or None


class ExactMatchParams(ReferenceParams):
    normalized: bool = False


class ExactMatch(Evaluator[ExactMatchParams]):
    kind = "exact_match"
    params_model = ExactMatchParams

    def evaluate(self, response: Response) -> Outcome:
        ref = _reference(self.params, response)
        if ref is None:
            return Outcome.failed("no reference: neither expected_output nor a dataset case")
        out = response["output"] or ""
        if self.params.normalized:
            return Outcome.passed(normalize(out) == normalize(ref))
        return Outcome.passed(out.strip() == ref.strip())


class TokenF1(Evaluator[ReferenceParams]):
    kind = "token_f1"
    params_model = ReferenceParams

    def evaluate(self, response: Response) -> Outcome:
        ref = _reference(self.params, response)
        if ref is None:
            return Outcome.failed("no reference: neither expected_output nor a dataset case")
        return Outcome(token_f1(response["output"] or "", ref))
