"""Pass/fail thresholds on what the app recorded: latency and cost."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from promptblame.analysis.scoring.base import PASS, Evaluator, Outcome, Params


class LatencyParams(Params):
    max_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Latency(Evaluator[LatencyParams]):
    kind = "latency"
    params_model = LatencyParams

    column = "latency_ms"

    def check(self, v: float | None) -> Outcome:
        if v is None:
            return Outcome.failed("latency_ms is not recorded for this response")
        return PASS if v <= self.params.max_ms else Outcome(0.0, f"{v:.0f} ms")


class CostParams(Params):
    max_usd: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Cost(Evaluator[CostParams]):
    kind = "cost"
    params_model = CostParams

    column = "cost_usd"

    def check(self, v: float | None) -> Outcome:
        if v is None:
            return Outcome.failed("cost_usd is not recorded for this response")
        return PASS if v <= self.params.max_usd else Outcome(0.0, f"${v:.6f}")
