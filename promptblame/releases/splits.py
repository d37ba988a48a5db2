"""Traffic splits: which arm a unit (user, session, conversation) gets, deterministically.

A unit's position h in [0, 1) is the first 8 bytes of sha256("<seed>:<unit>") read as an integer
and divided by 2**64 (never Python's `hash()`, which is salted per process). Arms take
consecutive ranges of [0, 1) in the order given (as GrowthBook's bucket ranges), so with the
candidate first, "candidate iff h < p": ramping p up only moves units from the incumbent to the
candidate, never back. Each rollout has its own seed, so the units that see one candidate first
are not the same in the next rollout. A request without a unit is placed by a fresh random
unit: an honest split per request, just not sticky.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence


def position(seed: str, unit: str) -> float:
    """h in [0, 1) for this unit under this seed."""
    digest = hashlib.sha256(f"{seed}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def arm(seed: str, unit: str, weights: Sequence[tuple[str, float]]) -> str:
    """The arm whose range holds the unit; weights are percents summing to 100."""
    h = position(seed, unit or uuid.uuid4().hex) * 100.0
    edge = 0.0
    for name, weight in weights:
        edge += weight
        if h < edge:
            return name
    return weights[-1][0]  # rounding at the top edge
