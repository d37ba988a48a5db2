"""Callables named by `custom` evaluators in tests (an allowed module: PROMPTBLAME_CUSTOM_...)."""

from __future__ import annotations

from typing import Any


def mentions_refund(response: dict[str, Any]) -> tuple[bool, str]:
    if response["output"] == "boom":
        raise RuntimeError("evaluator bug")
    return "refund" in response["output"], "looked for 'refund'"


def out_of_range(response: dict[str, Any]) -> float:
    return 7
