"""The faster paths of a detection pass (issue 18) give exactly what the plain ones give:
statistics-cell rows converted column by column, packed segment costs, and the verdicts of a
series whose inputs did not change since the last run."""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from promptblame.analysis import detection
from promptblame.analysis.changepoints import _Cost
from promptblame.store.rows import to_dicts

T0 = datetime(2026, 11, 2, tzinfo=UTC)


def test_cell_rows_converted_by_column_equal_arrow_rows_with_nulls_and_chunks() -> None:
    hours = pa.array([3_600_000 * (i % 3) for i in range(7)], pa.timestamp("ms", tz="UTC"))
    part = pa.table(
        {
            "app": pa.array(["a", "b", None, "a", "b", "a", ""]),
            "bucket": hours,
            "day": pa.array([None, 20_000, 20_000, 20_001, None, 20_000, 1], pa.date32()),
            "n": pa.array([1, 2, 3, None, 2**63, 0, 7], pa.uint64()),
            "total": pa.array([0.5, -0.0, float("nan"), 1e300, None, 2.5, 3.0]),
        }
    )
    table = pa.concat_tables([part, part.slice(2, 3)])  # two chunks per column
    assert table.column("app").num_chunks == 2
    got, want = to_dicts(table), table.to_pylist()
    assert repr(got) == repr(want)  # repr: NaN, -0.0 and each tzinfo compared too
    assert [type(v) for r in got for v in r.values()] == [type(v) for r in want for v in r.values()]
    assert to_dicts(part.slice(0, 0)) == []


@pytest.mark.parametrize("binomial", [True, False])
@pytest.mark.parametrize("size", [1, 2, 7, 200])
def test_packed_segment_costs_are_the_per_end_costs_element_by_element(
    binomial: bool, size: int
) -> None:
    """The dense path's packed costs against `_Cost.__call__`, the costs PELT reads for a
    series too long for the dense path: the two paths see the same numbers."""
    rng = np.random.default_rng(size)
    y = rng.random(size)
    y[::5] = 0.0  # segments at the bound: the clipped logarithms
    w = rng.random(size) * 50 + 0.5
    cost = _Cost.build(y, w, y * (1 - y) + 0.01 if binomial else None)
    packed, offsets = cost.rows()
    assert packed.size == size * (size + 1) // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in range(1, size + 1):
            row = packed[offsets[t] : offsets[t] + t]
            assert row.tobytes() == cost(np.arange(t), t).tobytes()


def _rows(seed: int, *, regress: float) -> list[dict[str, Any]]:
    """8 days of hourly cells on two routes; prompt v2 replaces v1 on day 5 and moves the pass
    rate by `regress`."""
    rng = np.random.default_rng(seed)
    out = []
    for h in range(8 * 24):
        start = T0 + timedelta(hours=h)
        v2 = h >= 5 * 24
        for route, size in (("billing", 60), ("refunds", 30)):
            n = int(rng.poisson(size))
            passed = int(rng.binomial(n, 0.85 - (regress if v2 else 0.0)))
            out.append(
                {
                    "bucket": start,
                    "route": route,
                    "environment": "prod",
                    "prompt": "answer@v2" if v2 else "answer@v1",
                    "model_label": "gpt-4o",
                    "n": n,
                    "total": float(passed),
                    "total_sq": float(passed),
                    "non_binary": 0,
                }
            )
    return out


def test_a_series_with_unchanged_inputs_keeps_its_verdicts_and_any_change_finds_them_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(detection, "_last_shifts", OrderedDict())
    found_afresh: list[int] = []
    real = detection.shifts

    def counted(rows: list[dict[str, Any]], **kw: Any) -> Any:
        found_afresh.append(len(rows))
        return real(rows, **kw)

    monkeypatch.setattr(detection, "shifts", counted)
    rows = _rows(1, regress=0.2)
    moves = [{"prompt_id": "answer", "to_version": "v2", "label": "prod", "claimed_at": T0}]
    args: dict[str, Any] = {"since": T0, "bucket_seconds": 3600, "higher_is_better": True}

    def run(rows: list[dict[str, Any]], key: str = "bot", **kw: Any) -> str:
        [found] = detection._shifts_unless_unchanged(
            [(("acme", key, "correct", "judge"), rows, {**args, "label_moves": moves, **kw})],
            processes=1,
        )
        return repr(found)

    first = run(rows)
    assert "answer@v2" in first  # the regression was found and blamed
    assert first == repr(real(rows, **args, label_moves=moves))
    assert len(found_afresh) == 1
    # the same values in new objects (the next run's read): not analysed again
    assert run([dict(r) for r in rows]) == first
    assert len(found_afresh) == 1
    # one late score in one cell, a label move, a window, a bucket width, the direction, or
    # another series with these cells: analysed again, and the same as `shifts` says
    late = [dict(r) for r in rows]
    late[100]["n"] += 1
    late[100]["total"] += 1.0
    changes: list[tuple[list[dict[str, Any]], dict[str, Any]]] = [
        (late, {}),
        (rows, {"label_moves": [{**moves[0], "claimed_at": T0 + timedelta(days=1)}]}),
        (rows, {"since": T0 - timedelta(hours=1)}),
        (rows, {"bucket_seconds": 7200}),
        (rows, {"higher_is_better": False}),
        (rows, {"key": "other-app"}),
    ]
    for i, (changed, kw) in enumerate(changes, start=2):
        got = run(changed, **kw)
        assert len(found_afresh) == i
        kw.pop("key", None)
        assert got == repr(real(changed, **{**args, "label_moves": moves, **kw}))
    # a series with no shift is remembered too (an empty list is a result)
    flat = _rows(2, regress=0.0)
    assert run(flat, key="flat") == "[]" == run(flat, key="flat")
    assert len(found_afresh) == len(changes) + 2


def test_worker_processes_find_the_same_verdicts_as_the_job_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parallel path (threshold patched down to this small data) against `shifts` in
    this process: the same verdicts, in the series' order, from a pool that really ran."""
    monkeypatch.setattr(detection, "_PARALLEL_MIN_ROWS", 1)
    moves = [{"prompt_id": "answer", "to_version": "v2", "label": "prod", "claimed_at": T0}]
    series: list[tuple[int, float, dict[str, Any]]] = [
        (1, 0.2, {"label_moves": moves}),
        (2, 0.0, {"label_moves": moves}),
        (3, 0.2, {"higher_is_better": False}),
        (4, 0.0, {}),
    ]
    work = [
        (_rows(seed, regress=regress), {"since": T0, "bucket_seconds": 3600, **kw})
        for seed, regress, kw in series
    ]
    here = detection._run_shifts(work, processes=1)
    try:
        there = detection._run_shifts(work, processes=2)
        assert detection._pool is not None and detection._pool[0] == 2
    finally:
        if detection._pool is not None:
            detection._pool[1].shutdown()
            detection._pool = None
    assert "answer@v2" in repr(here[0])
    assert repr(there) == repr(here)
