"""Charts as inline SVG strings, rendered on the server by matplotlib (Agg, no pyplot state).

Text stays text (`svg.fonttype: none`), so matplotlib's XML writer escapes every label; mathtext
is off (`text.parse_math`), so `$` and backslashes in a version name are shown as they are; labels
pass through `_plain` so control characters or bidi overrides show as symbols
(`display.visible`; NUL is not even valid XML).
The XML header and metadata are stripped and width/height dropped so the SVG scales with its
container.
"""

from __future__ import annotations

import functools
import io
import itertools
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.dates as mdates
from markupsafe import escape
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from promptblame.display import visible

# Labels are user text in any script; a glyph the font lacks is drawn by the browser anyway
# (the SVG keeps text as text), so matplotlib's warning per missing glyph is only noise.
warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)

INK, MUTED, GRID = "#1f2328", "#656d76", "#d8dee4"
BLUE, RED, GREEN, AMBER = "#0969da", "#cf222e", "#1a7f37", "#9a6700"
PURPLE, ORANGE = "#8250df", "#bc4c00"
PALETTE = ["#0969da", "#cf222e", "#8250df", "#1a7f37", "#bc4c00", "#1b7c83", "#656d76"]

_RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "text.parse_math": False,  # labels are user text: "$x$" is not a formula
    "font.family": "sans-serif",
    "font.sans-serif": ["Inter", "Segoe UI", "Helvetica", "Arial", "DejaVu Sans"],
    "font.size": 9,
    "axes.edgecolor": GRID,
    "axes.labelcolor": MUTED,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "path.simplify": False,  # every point drawn where it is: what the page states, exactly
}
_salt = itertools.count()
_dates_mod: Any = mdates  # partly untyped in matplotlib's stubs
_date2num: Any = mdates.date2num


def _style(salt: str, **extra: Any) -> Any:
    """Our rc settings for one chart; a unique hash salt keeps SVG ids apart on one page."""
    rc: Any = {**_RC, "svg.hashsalt": f"{salt}{next(_salt)}", **extra}
    return rc_context(rc)


def _x(ts: Sequence[datetime] | datetime) -> Any:
    """Datetimes as matplotlib date numbers (floats): what the axes plot."""
    return _date2num(ts)


def _y(values: Sequence[float | None]) -> Any:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@dataclass(frozen=True)
class Point:
    t: datetime
    mean: float | None
    low: float | None
    high: float | None
    n: int = 0


@dataclass(frozen=True)
class Segment:
    """A horizontal line over [start, end) at `value`: a level (segment mean) or, with
    `end_value`, a straight trend from `value` at start to `end_value` at end."""

    start: datetime
    end: datetime
    value: float
    end_value: float | None = None
    label: str = ""
    color: str = ""
    gid: str = ""


@dataclass(frozen=True)
class Marker:
    t: datetime
    label: str
    kind: str  # prompt | model | label (a label move) | rollout (a step or decision) | change


def _plain(text: str) -> str:
    """User text for a label: control characters shown (mathtext is off in `_RC`)."""
    return visible(text)


def _svg(fig: Figure, title: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    end = text.index(">")
    text = re.sub(r'\s(?:width|height)="[^"]*"', "", text[:end]) + text[end:]
    return text.replace(
        "<svg ", f'<svg role="img" aria-label="{escape(visible(title))}" class="chart" ', 1
    ).strip()


def _figure(width: float, height: float, *, left: float = 0.6, right: float = 0.15) -> Figure:
    """Fixed margins in inches: a layout engine would cost more than the drawing itself."""
    fig = Figure(figsize=(width, height), dpi=72)
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=0.45 / height, top=1 - 0.12 / height
    )
    return fig


def _dates(ax: Axes, times: Sequence[datetime]) -> None:
    """Every tick names its month ("Nov 24", "Nov 24 06:00"): no offset text to misread."""
    loc = _dates_mod.AutoDateLocator(minticks=4, maxticks=8)
    ax.xaxis.set_major_locator(loc)
    span = (max(times) - min(times)).total_seconds() if len(times) > 1 else 0
    fmt = "%b %d" if span > 3 * 86400 else "%b %d %H:%M" if span > 1800 else "%b %d %H:%M:%S"
    ax.xaxis.set_major_formatter(_dates_mod.DateFormatter(fmt))


def incident_chart(
    points: Sequence[Point],
    markers: Sequence[Marker],
    *,
    metric: str,
    segments: Sequence[Segment],
    times: Sequence[datetime],
    shares: dict[str, list[float]],
    share_title: str = "version",
    colors: dict[str, str] | None = None,
    rate: bool = False,
) -> str:
    """The metric per bucket with its 95% band, rollout markers, the change point and the
    levels (or trend) the page states, above the traffic share of each version (or route) on
    the same time axis (one figure: cheaper, and aligned). Artists carry ids (`series`,
    `level-before`, ...) so tests can read the plotted data back from the SVG."""
    with _style("i"):
        widest = max((len(k) for k in shares), default=8)
        fig = _figure(10.5, 5.4, left=0.7, right=min(0.5 + 0.075 * max(widest, 10), 3.0))
        ax, bx = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.25])
        fig.subplots_adjust(hspace=0.12)
        _metric(ax, points, markers, metric=metric, segments=segments, rate=rate)
        _shares(bx, times, shares, title=share_title, colors=colors or {})
        for m in markers:
            if m.kind == "change":
                bx.axvline(_x(m.t), color=RED, linewidth=1.6)
        _dates(bx, [p.t for p in points] or list(times))
        return _svg(fig, f"{metric} over time with 95% confidence band, and traffic share")


def _empty(ax: Axes) -> None:
    ax.text(
        0.5,
        0.5,
        "no scored responses in this window",
        ha="center",
        va="center",
        color=MUTED,
        transform=ax.transAxes,
    )
    ax.set_yticks([])


def _metric(
    ax: Axes,
    points: Sequence[Point],
    markers: Sequence[Marker],
    *,
    metric: str,
    segments: Sequence[Segment],
    rate: bool,
) -> None:
    shown = [p for p in points if p.mean is not None]
    if not shown:
        _empty(ax)
        return
    ts = _x([p.t for p in shown])
    ax.fill_between(
        ts,
        _y([p.low if p.low is not None else p.mean for p in shown]),
        _y([p.high if p.high is not None else p.mean for p in shown]),
        color=BLUE,
        alpha=0.15,
        linewidth=0,
        label="95% CI",
    )
    ax.plot(
        ts,
        _y([p.mean for p in shown]),
        color=BLUE,
        linewidth=1.3,
        label=_plain(metric),
        gid="series",
    )
    for seg in segments:
        end = seg.value if seg.end_value is None else seg.end_value
        ax.plot(
            _x([seg.start, seg.end]),
            [seg.value, end],
            color=seg.color or INK,
            linestyle="--",
            linewidth=1.4 if not seg.color else 1.1,
            label=_plain(seg.label) if seg.label else None,
            gid=seg.gid or None,
        )
    if rate:
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, -0.02), min(high, 1.02))
    top = ax.get_ylim()[1]
    for i, m in enumerate(markers):
        color = {"prompt": PURPLE, "model": ORANGE, "label": PURPLE, "rollout": AMBER}.get(
            m.kind, RED
        )
        ax.axvline(
            _x(m.t),
            color=color,
            linestyle={"change": "-", "label": "--", "rollout": "-."}.get(m.kind, ":"),
            linewidth=1.6,
        )
        ax.annotate(
            _plain(m.label),
            (_x(m.t), top),
            xytext=(-4, -4 - 12 * (i % 4)),
            textcoords="offset points",
            color=color,
            fontsize=9,
            va="top",
            ha="right",
            fontweight="bold" if m.kind == "change" else "normal",
        )
    ax.set_ylabel(_plain(metric))
    ax.margins(x=0.005)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def _shares(
    ax: Axes,
    times: Sequence[datetime],
    shares: dict[str, list[float]],
    *,
    title: str,
    colors: dict[str, str],
) -> None:
    labels = list(shares)
    if not labels or not times:
        _empty(ax)
        return
    calm = [c for c in PALETTE if c != RED]  # red is the culprit's alone
    ax.stackplot(
        _x(list(times)),
        *[shares[k] for k in labels],
        labels=[_plain(k) for k in labels],
        colors=[colors.get(k) or calm[i % len(calm)] for i, k in enumerate(labels)],
        alpha=0.75,
        linewidth=0,
    )
    ax.set_ylim(0, 1)
    ax.set_yticks([0, 0.5, 1], ["0%", "50%", "100%"])
    ax.set_ylabel(f"{_plain(title)} share")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def sparkline(
    times: Sequence[datetime], means: Sequence[float], *, marks: Sequence[datetime]
) -> str:
    """A small trend line for the overview, incidents marked."""
    return _sparkline(tuple(times), tuple(means), tuple(marks))


@functools.lru_cache(maxsize=256)
def _sparkline(
    times: tuple[datetime, ...], means: tuple[float, ...], marks: tuple[datetime, ...]
) -> str:
    """Cached: each visit to the overview draws every trend (~25 ms each), and most of them
    have not changed since the last visit."""
    with _style("k", **{"axes.grid": False}):
        fig = Figure(figsize=(4, 1.4), dpi=72)
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.2, top=0.95)
        ax = fig.add_subplot()
        ax.plot(_x(list(times)), _y(list(means)), color=BLUE, linewidth=1.2, gid="series")
        for t in marks:
            ax.axvline(_x(t), color=RED, linewidth=1, linestyle=":")
        loc = _dates_mod.AutoDateLocator(minticks=2, maxticks=4)
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(_dates_mod.DateFormatter("%b %d"))
        ax.tick_params(axis="both", labelsize=9)
        ax.locator_params(axis="y", nbins=3)
        ax.spines["left"].set_visible(False)
        ax.margins(x=0)
        return _svg(fig, "trend")


def _times(x: float | None, k: float) -> float | None:
    return None if x is None else x * k


def effect_chart(
    rows: Sequence[tuple[str, float | None, float | None, float | None]],
    *,
    points: bool = False,
    unit: str = "",
) -> str:
    """Effects with their confidence intervals, one row each, against a zero line; rates in
    points (`points`), other metrics in their unit, as the page's numbers."""
    if points:
        rows = [
            (label, _times(e, 100), _times(lo, 100), _times(hi, 100)) for label, e, lo, hi in rows
        ]
    with _style("e"):
        widest = max((len(r[0]) for r in rows), default=8)
        fig = _figure(8, 0.9 + 0.4 * max(len(rows), 1), left=min(0.3 + 0.075 * widest, 3.0))
        ax = fig.add_subplot()
        for i, (_label, effect, low, high) in enumerate(reversed(rows)):
            if effect is None:
                continue
            # Direction-neutral: whether higher is better depends on the metric.
            color = BLUE if (low or 0) > 0 or (high or 0) < 0 else MUTED
            if low is not None and high is not None:
                ax.hlines(i, low, high, colors=color, linewidth=3, alpha=0.6)
            ax.plot([effect], [i], "o", color=color)
        ax.axvline(0, color=INK, linewidth=1)
        ax.set_yticks(range(len(rows)), [_plain(r[0]) for r in reversed(rows)])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        what = " in points" if points else f" in {unit}" if unit else ""
        ax.set_xlabel(f"effect (B − A){what} with confidence interval")
        ax.grid(axis="y", visible=False)
        return _svg(fig, "effects with confidence intervals")


@dataclass(frozen=True)
class Estimate:
    """A guardrail's estimate at one look: effect and always-valid bounds, negative = worse."""

    t: datetime
    effect: float
    low: float | None
    high: float | None


def guardrail_chart(
    paths: Mapping[str, Sequence[Estimate]],
    markers: Sequence[Marker],
    *,
    metric: str,
    threshold: float,
    rate: bool,
) -> str:
    """Each compared arm's estimate over time with its always-valid 95% band, the zero line and
    the allowed drop (crossing it with the whole band is what rolls back), decisions marked.
    Rates in points, as the page's numbers; artists carry ids (`effect-<arm>`, `allowed-drop`)
    so tests can read the plotted data back."""
    k = 100.0 if rate else 1.0
    unit = " (pt)" if rate else ""
    with _style("g"):
        widest = max((len(a) + len(" − control") for a in paths), default=8)
        fig = _figure(10.5, 3.4, left=0.8, right=min(0.3 + 0.075 * max(widest, 12), 3.0))
        ax = fig.add_subplot()
        times = [e.t for es in paths.values() for e in es]
        if not times:
            _empty(ax)
            return _svg(fig, f"{metric}: no responses yet")
        calm = [c for c in PALETTE if c != RED]
        for i, (name, es) in enumerate(paths.items()):
            color = calm[i % len(calm)]
            ts = _x([e.t for e in es])
            ax.fill_between(
                ts,
                _y([k * (e.low if e.low is not None else e.effect) for e in es]),
                _y([k * (e.high if e.high is not None else e.effect) for e in es]),
                color=color,
                alpha=0.15,
                linewidth=0,
            )
            ax.plot(
                ts,
                _y([k * e.effect for e in es]),
                color=color,
                linewidth=1.4,
                marker="o" if len(es) < 3 else None,
                label=_plain(f"{name} − control"),
                gid=f"effect-{name}",
            )
        # The first looks' intervals are wide by design; the limits follow the later ones (and
        # keep zero and the allowed drop in view), so the decisive part is readable.
        later = [e for es in paths.values() for e in es[len(es) // 4 :]]
        span = [k * x for e in later for x in (e.low, e.high, e.effect) if x is not None]
        low, high = min([*span, 0.0, -k * threshold]), max([*span, 0.0])
        pad = 0.08 * (high - low or 1.0)
        ax.set_ylim(low - pad, high + pad)
        ax.axhline(0, color=INK, linewidth=0.9)
        ax.axhline(
            -k * threshold,
            color=RED,
            linestyle="--",
            linewidth=1.2,
            label="allowed drop",
            gid="allowed-drop",
        )
        top = ax.get_ylim()[1]
        for i, m in enumerate(markers):
            ax.axvline(_x(m.t), color=MUTED, linestyle=":", linewidth=1.2)
            ax.annotate(
                _plain(m.label),
                (_x(m.t), top),
                xytext=(-3, -4 - 12 * (i % 3)),
                textcoords="offset points",
                color=MUTED,
                fontsize=9,
                va="top",
                ha="right",
            )
        ax.set_ylabel(_plain(f"{metric} effect{unit}"))
        _dates(ax, times)
        ax.margins(x=0.01)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        return _svg(fig, f"{metric}: estimate over time with always-valid 95% interval")
