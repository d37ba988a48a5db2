"""Upgrading a data directory from before migration 23: the rebuild of `responses` under the
time-first key and the `response_keys` backfill (issue 18), timed on a copy.

    cp -r DIR COPY   # a store built before migration 23 (e.g. read_speed.py build at 946dcbd)
    .venv/bin/python benchmarks/rebuild.py --keep COPY

Prints the migrations applied, the wall time, the process's peak RSS, the deduplicated row
count before and after (they must be equal) and the tables' size on disk after.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from promptblame.store.embedded import EmbeddedStore

SIZES = (
    "SELECT table, count() AS parts, formatReadableSize(sum(bytes_on_disk)) AS size"
    " FROM system.parts WHERE database = currentDatabase() AND active"
    " AND table IN ('responses', 'response_keys') GROUP BY table ORDER BY table"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keep", type=Path, required=True, help="a copy of a data directory")
    args = ap.parse_args()
    store = EmbeddedStore(args.keep, "promptblame")
    count = "SELECT count() AS n FROM responses FINAL"
    before = store._rows(count)[0]["n"]
    t = time.perf_counter()
    applied = store.migrate()
    took = time.perf_counter() - t
    after = store._rows(count)[0]["n"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"migrations applied: {applied}; {took:.1f} s; peak RSS {rss:,.0f} MiB")
    print(f"responses (deduplicated): {before:,} before, {after:,} after", end="")
    print("  OK" if before == after else "  MISMATCH")
    for r in store._rows(SIZES):
        print(f"  {r['table']}: {r['parts']} parts, {r['size']}")
    store.close()


if __name__ == "__main__":
    main()
