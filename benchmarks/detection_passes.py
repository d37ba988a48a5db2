"""Detection passes on one stored data set, for comparing code versions on the same store.

`detection_speed.py` builds its store, times three passes and deletes it. Here the store is
built once (`build`) and kept, so several versions of the code can be timed on it in turn
(`run`; one process at a time: chDB locks its data directory):

    .venv/bin/python benchmarks/detection_passes.py build /tmp/pb-passes 2000000
    .venv/bin/python benchmarks/detection_passes.py run /tmp/pb-passes
    # another commit's code, on the same store:
    git archive <commit> promptblame | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old:.venv/lib/python3.11/site-packages .venv/bin/python -S \\
        benchmarks/detection_passes.py run /tmp/pb-passes

`run` makes one warm-up pass, then three timed passes of `run_detection` (wall clock, and the
process's CPU time, which a machine shared with other work disturbs less), each followed by the
reads alone (`_series_rows`: the cells of every series), and prints them. The data are
`detection_speed.py`'s: 14 days, 10 apps x 3 routes, 5 metrics (50 series), one regression.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import detection_speed as ds

import promptblame
from promptblame.analysis import detection
from promptblame.settings import Settings
from promptblame.store import open_store


def main() -> None:
    mode, path = sys.argv[1], Path(sys.argv[2])
    settings = Settings(data_dir=path, database="bench", detection_window_days=ds.DAYS)
    store = open_store(settings)
    try:
        if mode == "build":
            rows = int(sys.argv[3])
            rng = np.random.default_rng(20261124)
            slices = max(1, rows // ds.CHUNK)
            for k in range(slices):
                lo, hi = k * rows // slices, (k + 1) * rows // slices
                window = (k * ds.DAYS * 86400 / slices, (k + 1) * ds.DAYS * 86400 / slices)
                responses, scores = ds.chunk(rng, lo, hi - lo, window)
                store.insert("responses", responses)
                store.insert("scores", scores)
                store.materialize_scores()
            print(f"stored {rows:,} responses + scores in {path}")
            return
        detection.run_detection(store, settings, project_id="bench", now=ds.END)
        bs = settings.detection_bucket_seconds
        until = datetime.fromtimestamp(ds.END.timestamp() // bs * bs, UTC)
        since = until - timedelta(days=settings.detection_window_days)
        passes, reads, cpu = [], [], []
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            run = detection.run_detection(store, settings, project_id="bench", now=ds.END)
            passes.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            t = time.perf_counter()
            detection._series_rows(store, settings, "bench", since=since, until=until)
            reads.append(time.perf_counter() - t)
        print(
            f"code {Path(promptblame.__file__).parent}: {run.series} series; detection pass "
            f"{' '.join(f'{x:.2f}' for x in passes)} s (CPU of the process, all threads: "
            f"{' '.join(f'{x:.2f}' for x in cpu)} s); its reads alone "
            f"{' '.join(f'{x:.2f}' for x in reads)} s"
        )
    finally:
        store.close()


if __name__ == "__main__":
    main()
