"""Attribution: which prompt or model version explains a quality shift — or why none can be named.

Pure functions on aggregated cells (one per time bucket × route × environment × prompt × model,
with n / sum / sum of squares of the metric); no I/O. Entry points:

* `attribute(cells, change_index=..., ...)` — one shift at a known (or detected) bucket;
* `find_and_attribute(cells, ...)` — change points of the aggregate series, each attributed.

Both return `Verdict`s (`culprit`, `confounded`, `no_version_cause`, `no_shift`,
`insufficient_data`) with the evidence, a one-line `summary` and a JSON-ready `as_dict()`.
See `attribute.py` for the method.
"""

from promptblame.analysis.attribution.attribute import (
    KnownArrival,
    attribute,
    find_and_attribute,
)
from promptblame.analysis.attribution.cells import Cell, MetricKind
from promptblame.analysis.attribution.decompose import Decomposition, SegmentShift, decompose
from promptblame.analysis.attribution.effects import Estimate, stratified_difference
from promptblame.analysis.attribution.verdict import Evidence, Verdict, VerdictKind

__all__ = [
    "Cell",
    "Decomposition",
    "Estimate",
    "Evidence",
    "KnownArrival",
    "MetricKind",
    "SegmentShift",
    "Verdict",
    "VerdictKind",
    "attribute",
    "decompose",
    "find_and_attribute",
    "stratified_difference",
]
