"""Custom evaluators: a Python callable named by import path, `package.module:function`.

The callable gets the response dict plus the configured `args` as keyword arguments and returns
a bool, a number in 0..1, or (value, explanation). Only modules under the prefixes listed in
PROMPTBLAME_CUSTOM_EVALUATOR_MODULES may be named: evaluator configs are applied through the API,
and a project key must not be able to make the server call arbitrary code.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import Field

from promptblame.analysis.scoring.base import Evaluator, Outcome, Params, Response


class CustomParams(Params):
    callable: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
    args: dict[str, Any] = Field(default_factory=dict)


def allowed(path: str, prefixes: Sequence[str]) -> bool:
    module = path.split(":", 1)[0]
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def load(path: str, prefixes: Sequence[str]) -> Callable[..., Any]:
    """Import `module:function`; ValueError says why it cannot be used."""
    if not allowed(path, prefixes):
        raise ValueError(
            f"module of {path!r} is not allowed; list its package in"
            " PROMPTBLAME_CUSTOM_EVALUATOR_MODULES"
        )
    module_name, attr = path.split(":", 1)
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {path!r}: {exc}") from None
    if not callable(fn):
        raise ValueError(f"{path!r} is not callable")
    return fn


class Custom(Evaluator[CustomParams]):
    kind = "custom"
    params_model = CustomParams

    def __init__(self, params: CustomParams, *, allowed_modules: Sequence[str] = ()) -> None:
        super().__init__(params)
        self._fn = load(params.callable, allowed_modules)

    def evaluate(self, response: Response) -> Outcome:
        result = self._fn(response, **self.params.args)
        value, explanation = result if isinstance(result, tuple) else (result, "")
        if isinstance(value, bool):
            return Outcome.passed(value, str(explanation))
        if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
            return Outcome.failed(f"returned {value!r}; expected a bool or a number in 0..1")
        return Outcome(float(value), str(explanation))
