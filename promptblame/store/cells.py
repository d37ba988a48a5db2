"""SQL of the statistics cells (`score_cells`): hourly sums of `scored` for hours that have passed.

Aggregate reads over weeks of scores (the detection pass, the overview's trends, the incident
charts) summed every raw row under FINAL: seconds at 10M rows. Here the scored-table job sums
each hour once it is SEAL_AFTER old; reads take the sealed hours from the cells and only the
rest (the last hour or two, partial hours at the edges) from raw rows.

Exact by construction: a cell is always recomputed whole from `scored` FINAL, never incremented,
so a retried run, a duplicate or a corrected score cannot count twice. Rows the job (re)writes
carry `materialized_at`; those that land in a sealed hour (a late or corrected score, a response
that arrived after its scores) mark their cell, which the next run recomputes. Why not sum live
hours too: traffic lands in the current hour, so it would be recomputed on every run (the
`issue-18a` branch did that, and reads under ingest became 10x slower).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from promptblame.store.filters import FAR_FUTURE, FAR_PAST

SEAL_AFTER = timedelta(hours=1)  # an hour is summed once it ended this long ago
HOUR = 3600

DIMS = (
    "route, environment, prompt_id, prompt_version, model, model_version, provider, experiment,"
    " variant"
)
KEY = f"project_id, name, app, hour, source, {DIMS}"
_HOUR_OF_TS = "toDateTime64(toStartOfHour(ts), 3, 'UTC')"
_SUMS = (
    "count() AS n, sum(value) AS total, sum(value * value) AS total_sq,"
    " countIf(value NOT IN (0, 1)) AS non_binary"
)

WATERMARKS = (
    "SELECT key, ts FROM job_state FINAL WHERE job = 'cells' AND key IN ('sealed', 'started')"
)
SET_WATERMARK = (
    "INSERT INTO job_state (job, key, ts, n) VALUES ('cells', {k:String}, {ts:DateTime64(3)}, 0)"
)

# Hours [lo, hi) of every project, summed for the first time.
SEAL = (
    f"INSERT INTO score_cells SELECT project_id, name, app, {_HOUR_OF_TS} AS hour, source, {DIMS},"
    f" {_SUMS}, now64(6) FROM scored FINAL"
    " WHERE ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)}"
    f" GROUP BY {KEY}"
)

# Sealed cells holding rows the job (re)wrote since {since}: (project, name, app, hour epoch s).
TOUCHED = (
    "SELECT DISTINCT project_id, name, app, toInt64(toUnixTimestamp(toStartOfHour(ts))) AS h"
    " FROM scored WHERE materialized_at >= {since:DateTime64(3)} AND ts < {sealed:DateTime64(3)}"
)

_CELLS_IN = (
    "({cells_of}) IN (SELECT arrayJoin(JSONExtract({cells:String},"
    " 'Array(Tuple(String, String, String, Int64))')))"
)
# The named cells recomputed from `scored`, and a zero row for each combination of dimensions
# they held before that has no rows now (a score deleted, a response's version corrected).
RECOMPUTE = (
    f"INSERT INTO score_cells SELECT {KEY}, sum(n), sum(total), sum(total_sq), sum(non_binary),"
    " now64(6) FROM ("
    f"  SELECT project_id, name, app, {_HOUR_OF_TS} AS hour, source, {DIMS}, {_SUMS}"
    "  FROM scored FINAL WHERE ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)} AND "
    + _CELLS_IN.replace(
        "{cells_of}", "project_id, name, app, toInt64(toUnixTimestamp(toStartOfHour(ts)))"
    )
    + f"  GROUP BY {KEY}"
    f"  UNION ALL SELECT {KEY}, 0, 0, 0, 0 FROM score_cells FINAL WHERE n > 0"
    "  AND hour >= {lo:DateTime64(3)} AND hour < {hi:DateTime64(3)} AND "
    + _CELLS_IN.replace("{cells_of}", "project_id, name, app, toInt64(toUnixTimestamp(hour))")
    + f") GROUP BY {KEY}"
)


def sealed_target(now: datetime) -> datetime:
    """The hour before which every hour is summed (hours that ended SEAL_AFTER ago)."""
    t = now - SEAL_AFTER
    return t.replace(minute=0, second=0, microsecond=0)


def split(
    since: datetime, until: datetime, bucket_seconds: int, sealed: datetime
) -> tuple[datetime, datetime]:
    """[lo, hi): the whole sealed hours inside [since, until) a read takes from the cells (the
    rest it takes from raw rows). Empty (lo == hi) when buckets are not whole hours."""
    if bucket_seconds % HOUR:
        return FAR_PAST, FAR_PAST
    lo = _hour_ceil(max(since, FAR_PAST))
    hi = min(_hour_floor(min(until, FAR_FUTURE)), sealed)
    return (lo, hi) if lo < hi else (FAR_PAST, FAR_PAST)


def _hour_floor(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _hour_ceil(t: datetime) -> datetime:
    floor = _hour_floor(t)
    return floor if floor == t else floor + timedelta(hours=1)


# Rows of score series as attribution reads them: the cells of [lo, hi) and the raw rows of the
# rest of [since, until). Columns: app, name, source, ts (an hour or a response time), the cell
# dimensions, n, total, total_sq, non_binary. Binds {p}, {m}, {app}, {src} ('' = all).
_SERIES = (
    "({m:String} = '' OR name = {m:String}) AND ({app:String} = '' OR app = {app:String})"
    " AND ({src:String} = '' OR source = {src:String})"
)
_CELL_ROWS = (
    f"SELECT app, name, source, hour AS ts, {DIMS}, n, total, total_sq, non_binary"
    " FROM score_cells FINAL WHERE project_id = {p:String} AND n > 0"
    f" AND hour >= {{lo:DateTime64(3)}} AND hour < {{hi:DateTime64(3)}} AND {_SERIES}"
)
_RAW_WINDOW = "ts >= {r0:DateTime64(3)} AND ts < {r1:DateTime64(3)}"
_RAW_ROWS = (
    f"SELECT app, name, source, ts, {DIMS}, toUInt64(1) AS n, value AS total,"
    " value * value AS total_sq, toUInt64(value NOT IN (0, 1)) AS non_binary"
    f" FROM scored FINAL WHERE project_id = {{p:String}} AND {_RAW_WINDOW} AND {_SERIES}"
)


def score_rows(
    since: datetime, until: datetime, lo: datetime, hi: datetime
) -> tuple[str, dict[str, datetime]]:
    """SQL and time parameters of the rows of [since, until): cells for [lo, hi), raw rows for
    the (usually short) ranges outside it. A raw range that is empty is left out, not filtered
    to nothing: FINAL would still read the whole table."""
    parts: list[str] = []
    params: dict[str, datetime] = {}
    if lo < hi:
        parts.append(_CELL_ROWS)
        params.update(lo=lo, hi=hi)
        ranges = [(since, lo), (hi, until)]
    else:
        ranges = [(since, until)]
    for k, (a, b) in enumerate(r for r in ranges if r[0] < r[1]):
        parts.append(_RAW_ROWS.replace("{r0:", f"{{r{k}a:").replace("{r1:", f"{{r{k}b:"))
        params.update({f"r{k}a": a, f"r{k}b": b})
    if not parts:  # an empty window: no rows, same columns
        parts.append(_RAW_ROWS.replace("{r0:", "{r0a:").replace("{r1:", "{r0b:"))
        params.update(r0a=since, r0b=since)
    return " UNION ALL ".join(parts), params
