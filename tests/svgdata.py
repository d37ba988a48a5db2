"""Read the data back out of a chart's SVG: pixel positions of the plotted artists (found by
their ids) mapped to data values through the axis' own tick marks and labels. Lets tests check
what a chart draws, not only what the view model says it should draw."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

NS = {"s": "http://www.w3.org/2000/svg", "x": "http://www.w3.org/1999/xlink"}
_HREF = "{http://www.w3.org/1999/xlink}href"


def _group(root: ET.Element, gid: str) -> ET.Element | None:
    return root.find(f".//s:g[@id='{gid}']", NS)


def _path_points(g: ET.Element) -> list[tuple[float, float]]:
    path = g.find(".//s:path", NS)
    assert path is not None
    nums = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", path.get("d", ""))]
    return list(zip(nums[0::2], nums[1::2], strict=True))


def _ticks(axis: ET.Element, attr: str) -> list[tuple[float, str]]:
    out = []
    for tick in axis.findall("s:g", NS):
        use = tick.find(".//s:use", NS)
        text = tick.find(".//s:text", NS)
        if use is not None and text is not None and text.text:
            out.append((float(use.get(attr, "nan")), text.text))
    return out


@dataclass
class ChartData:
    series: list[tuple[float, float]]  # (x pixel, y value)
    lines: dict[str, list[tuple[float, float]]]  # artist id -> (x pixel, y value)
    x_labels: list[tuple[float, str]]  # the bottom axis' tick labels at their x pixels


def read_chart(
    svg: str,
    ids: tuple[str, ...] = ("level-before", "level-after", "trend"),
    *,
    series_id: str = "series",
    axes: tuple[str, str] = ("matplotlib.axis_2", "matplotlib.axis_3"),
) -> ChartData:
    """`axes`: the ids of the y axis the values are read through (the incident chart's top
    axes) and of the x axis with the time labels (its bottom axes, shared)."""
    root = ET.fromstring(svg)  # noqa: S314 (our own chart, made by matplotlib in the test)
    yaxis = _group(root, axes[0])
    xaxis = _group(root, axes[1])
    assert yaxis is not None and xaxis is not None
    ticks = [(y, float(t.replace("%", "").replace("−", "-"))) for y, t in _ticks(yaxis, "y")]
    slope, icept = np.polyfit([p for p, _ in ticks], [v for _, v in ticks], 1)

    def value(px: float) -> float:
        return float(slope * px + icept)

    series = _group(root, series_id)
    assert series is not None
    lines = {}
    for gid in ids:
        g = _group(root, gid)
        if g is not None:
            lines[gid] = [(x, value(y)) for x, y in _path_points(g)]
    return ChartData(
        series=[(x, value(y)) for x, y in _path_points(series)],
        lines=lines,
        x_labels=_ticks(xaxis, "x"),
    )


def x_to_time(data: ChartData, first: datetime, last: datetime) -> Callable[[float], datetime]:
    """Pixel -> time, from the series' first and last point (plotted at `first`, `last`)."""
    (x0, _), (x1, _) = data.series[0], data.series[-1]
    t0, t1 = first.timestamp(), last.timestamp()

    def at(px: float) -> datetime:
        return datetime.fromtimestamp(t0 + (px - x0) * (t1 - t0) / (x1 - x0), UTC)

    return at
