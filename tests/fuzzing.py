"""Shared by the fuzz tests: the hypothesis profile and the tallies they print.

Deterministic on CI: `derandomize=True` (examples come from a fixed seed derived from each test),
no example database, no deadline (a 2-core machine shared with other jobs has slow moments).
`PROMPTBLAME_FUZZ_SCALE=10` multiplies the example counts for a longer local run.
"""

from __future__ import annotations

import collections
import os
import sys

import pytest
from hypothesis import HealthCheck, settings

SCALE = max(1, int(os.environ.get("PROMPTBLAME_FUZZ_SCALE", "1")))

settings.register_profile(
    "promptblame-fuzz",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
PROFILE = settings.get_profile("promptblame-fuzz")


def examples(n: int) -> settings:
    """The profile with `n` examples per test (times PROMPTBLAME_FUZZ_SCALE)."""
    return settings(PROFILE, max_examples=n * SCALE)


class Tally:
    """How many requests/examples each test generated, printed when the module finishes."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def report(self, config: pytest.Config) -> None:
        """One line per group ("<group>: <what>" or "<group>  <operation>") with its total."""
        groups: dict[str, list[int]] = {}
        for what, n in self.counts.items():
            group = what.split(":")[0] if ":" in what else what[:14].strip()
            groups.setdefault(group, []).append(n)
        total = sum(self.counts.values())
        lines = [f"{self.title}: {total} examples/requests generated"]
        lines += [
            f"  {sum(ns):6d}  {group}" + (f" ({len(ns)} kinds/operations)" if len(ns) > 1 else "")
            for group, ns in sorted(groups.items())
        ]
        capture = config.pluginmanager.get_plugin("capturemanager")
        if capture is not None:
            with capture.global_and_fixture_disabled():
                print("\n" + "\n".join(lines), file=sys.stderr)
