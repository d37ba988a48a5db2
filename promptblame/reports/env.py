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

from promptblame.analysis.attribution.verdict import fmt_effect
from promptblame.display import visible
from promptblame.reports.words import fmt_num, fmt_p, fmt_pct, fmt_ts, p_eq


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
    env.filters.update(p=fmt_p, p_eq=p_eq, num=fmt_num, pct=fmt_pct, ts=fmt_ts, effect=fmt_effect)
    return env


def _shown(value: Any) -> Any:
    """Applied to every `{{ }}` value before autoescape; markup we made (macros, charts) stays."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value)
    return value
