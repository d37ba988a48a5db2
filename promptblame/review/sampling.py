"""Which responses a queue holds and who labels them: deterministic, so the same config over the
same responses always yields the same items, in the same order, on any machine.

An item's rank is its position in [0, 1) under the queue's seed (sha256, as traffic splits:
`releases.splits.position`). A sampling rate keeps rank < rate; a stratified sample keeps the
`per_stratum` lowest ranks of each stratum (each version gets its share however unequal the
traffic); either way the lowest ranks are served first and `max_items` keeps the lowest. An
item is on the overlap (labelled by two reviewers) when its position under a second seed is
below the overlap rate, independent of its rank.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from promptblame.releases.splits import position


@dataclass(frozen=True)
class Item:
    event_id: str
    stratum: str
    rank: float
    needed: int  # reviewers who label it: 2 on the overlap, else 1


def sample(
    rows: Iterable[tuple[str, str]],
    *,
    seed: str,
    rate: float = 1.0,
    per_stratum: int | None = None,
    max_items: int,
    overlap: float = 0.0,
) -> list[Item]:
    """rows: (event_id, stratum). The sampled items by rank."""
    ranked = sorted(((position(seed, e), e, s) for e, s in rows), key=lambda t: (t[0], t[1]))
    if per_stratum is not None:
        taken: dict[str, int] = {}
        kept = []
        for r in ranked:
            if taken.get(r[2], 0) < per_stratum:
                taken[r[2]] = taken.get(r[2], 0) + 1
                kept.append(r)
        ranked = kept
    else:
        ranked = [r for r in ranked if r[0] < rate]
    return [
        Item(e, s, h, 2 if position(f"{seed}:overlap", e) < overlap else 1)
        for h, e, s in ranked[:max_items]
    ]
