"""The one Jinja2 environment of the reports: autoescape on, templates shipped in the package.

LLM output and version names are untrusted; autoescape makes every `{{ }}` safe. The only
`|safe` in the templates is chart SVG, which matplotlib's XML writer already escaped. Every
`{{ }}` value also passes through `display.visible` first, so control characters and bidi
overrides in untrusted text show as symbols instead of reordering or hiding the page's text.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from promptblame.display import visible
from promptblame.reports.words import (
    ci_label,
    fmt_age,
    fmt_delta,
    fmt_num,
    fmt_p,
    fmt_pct,
    fmt_ts,
    fmt_value,
    p_eq,
    test_name,
    words,
)


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("promptblame.reports", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_shown,
    )
    env.filters.update(
        p=fmt_p,
        p_eq=p_eq,
        num=fmt_num,
        pct=fmt_pct,
        ts=fmt_ts,
        age=fmt_age,
        effect=_effect,
        value=_value,
        test=test_name,
        words=words,
        ci_label=ci_label,
    )
    return env


def _shown(value: Any) -> Any:
    """Applied to every `{{ }}` value before autoescape; markup we made (macros, charts) stays."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value)
    return value


def _effect(x: float | None, kind: str = "mean", metric: str = "", width: Any = None) -> str:
    return fmt_delta(x, metric=metric, kind=kind, width=width)


def _value(x: float | None, kind: str = "mean", metric: str = "", width: Any = None) -> str:
    return fmt_value(x, metric=metric, kind=kind, width=width)
