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

from promptblame.store.filters import FAR_FUTURE, FAR_PAST, json_rows

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

# A scored row's cell: (project_id, name, app, h: its hour in epoch seconds).
CELL_OF_ROW = "project_id, name, app, toInt64(toUnixTimestamp(toStartOfHour(ts))) AS h"
# Sealed cells holding rows the job (re)wrote since {since}.
TOUCHED = (
    f"SELECT DISTINCT {CELL_OF_ROW}"
    " FROM scored WHERE materialized_at >= {since:DateTime64(3)} AND ts < {sealed:DateTime64(3)}"
)

_CELLS_IN = (
    "({cells_of}) IN (SELECT " + json_rows("cells", "Tuple(String, String, String, Int64)") + ")"
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
# The raw rows deduplicated as FINAL would (per key the row with the newest score_ts, then
# the one written last) but by a GROUP BY: FINAL cannot skip parts by time, and scored's key
# puts ts after name and app, so FINAL read every series' boundary granules (~120 ms at 10M
# rows) even for an empty hour.
_LATEST = ", ".join(f"t.{i + 2} AS {c.strip()}" for i, c in enumerate(DIMS.split(",")))
_RAW_ROWS = (
    f"SELECT app, name, source, ts, {_LATEST}, toUInt64(1) AS n, t.1 AS total,"
    " total * total AS total_sq, toUInt64(total NOT IN (0, 1)) AS non_binary FROM ("
    f"  SELECT app, name, source, ts, argMax(tuple(value, {DIMS}),"
    "   (score_ts, materialized_at)) AS t"
    f"  FROM scored WHERE project_id = {{p:String}} AND {_RAW_WINDOW} AND {_SERIES}"
    "  GROUP BY app, name, ts, event_id, source)"
)


def score_rows(
    since: datetime, until: datetime, lo: datetime, hi: datetime
) -> tuple[str, dict[str, datetime]]:
    """SQL and time parameters of the score rows of [since, until)."""
    return _union(_CELL_ROWS, _RAW_ROWS, since, until, lo, hi)


# Where each score series' data ends: without FINAL, as a max needs no deduplication (a
# superseded row can only make a series look newer; FINAL would read every key column).
_END_CELLS = (
    "SELECT app, name, source, hour AS ts FROM score_cells WHERE project_id = {p:String}"
    " AND n > 0 AND hour >= {lo:DateTime64(3)} AND hour < {hi:DateTime64(3)}"
)
_END_RAW = (
    f"SELECT app, name, source, ts FROM scored WHERE project_id = {{p:String}} AND {_RAW_WINDOW}"
)


def end_rows(
    since: datetime, until: datetime, lo: datetime, hi: datetime
) -> tuple[str, dict[str, datetime]]:
    """SQL of (app, name, source, ts) rows whose max per series is where its data ends (the
    start of the hour, when that hour is summed)."""
    return _union(_END_CELLS, _END_RAW, since, until, lo, hi)


def _union(
    cells: str, raw: str, since: datetime, until: datetime, lo: datetime, hi: datetime
) -> tuple[str, dict[str, datetime]]:
    """Cells for [lo, hi), raw rows for the (usually short) ranges of [since, until) outside
    it. A raw range that is empty is left out, not filtered to nothing: FINAL would still read
    the whole table."""
    parts: list[str] = []
    params: dict[str, datetime] = {}
    if lo < hi:
        parts.append(cells)
        params.update(lo=lo, hi=hi)
        ranges = [(since, lo), (hi, until)]
    else:
        ranges = [(since, until)]
    for k, (a, b) in enumerate(r for r in ranges if r[0] < r[1]):
        parts.append(raw.replace("{r0:", f"{{r{k}a:").replace("{r1:", f"{{r{k}b:"))
        params.update({f"r{k}a": a, f"r{k}b": b})
    if not parts:  # an empty window: no rows, same columns
        parts.append(raw.replace("{r0:", "{r0a:").replace("{r1:", "{r0b:"))
        params.update(r0a=since, r0b=since)
    return " UNION ALL ".join(parts), params


# -- responses -----------------------------------------------------------------------------------
RESPONSE_DIMS = (
    "app, route, environment, prompt_id, prompt_version, model, model_version, provider,"
    " experiment, variant"
)
RESPONSE_KEY = (
    "project_id, app, hour, route, environment, prompt_id, prompt_version, model, model_version,"
    " provider, experiment, variant"
)
_RESPONSE_VALUES = (
    "n, errors, latency_n, latency_total, latency_total_sq, cost_n, cost_total, cost_total_sq,"
    " first_seen, last_seen"
)
# Per raw row, the values a cell sums (and the min/max of its times).
_RESPONSE_ROW = (
    "toUInt64(1) AS n, toUInt64(status = 'error') AS errors,"
    " toUInt64(isNotNull(latency_ms)) AS latency_n,"
    " ifNull(latency_ms, 0) AS latency_total,"
    " ifNull(latency_ms * latency_ms, 0) AS latency_total_sq,"
    " toUInt64(isNotNull(cost_usd)) AS cost_n, ifNull(cost_usd, 0) AS cost_total,"
    " ifNull(cost_usd * cost_usd, 0) AS cost_total_sq, ts AS first_seen, ts AS last_seen"
)
RESPONSE_SUMS = (
    "sum(n) AS n, sum(errors) AS errors, sum(latency_n) AS latency_n,"
    " sum(latency_total) AS latency_total, sum(latency_total_sq) AS latency_total_sq,"
    " sum(cost_n) AS cost_n, sum(cost_total) AS cost_total, sum(cost_total_sq) AS cost_total_sq,"
    " min(first_seen) AS first_seen, max(last_seen) AS last_seen"
)
_RAW_RESPONSES = f"SELECT {RESPONSE_DIMS}, ts, {_RESPONSE_ROW} FROM responses FINAL"
_RESPONSE_CELL_OF_ROW = (  # RESPONSE_KEY's columns, of a raw row
    f"SELECT {RESPONSE_KEY.replace('hour', _HOUR_OF_TS + ' AS hour')}, {_RESPONSE_ROW}"
    " FROM responses FINAL WHERE ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)}"
)

SEAL_RESPONSES = (
    f"INSERT INTO response_cells SELECT {RESPONSE_KEY}, {RESPONSE_SUMS}, now64(6) FROM ("
    f"{_RESPONSE_CELL_OF_ROW}) GROUP BY {RESPONSE_KEY}"
)
# Summed hours holding responses received in the scored-table job's window ({since}): late or
# repeated responses (cell: project, '', app, hour epoch s — the score cells' shape).
# ... and with every other app summed in those hours: a response sent again under another app
# replaced its row, and the old app's cell still counts it.
TOUCHED_RESPONSES = (
    "WITH touched AS (SELECT DISTINCT project_id, app,"
    " toInt64(toUnixTimestamp(toStartOfHour(ts))) AS h FROM responses"
    " WHERE received_at >= {since:DateTime64(3)} AND ts < {sealed:DateTime64(3)})"
    " SELECT project_id, '' AS name, app, h FROM touched UNION DISTINCT"
    " SELECT project_id, '' AS name, app, toInt64(toUnixTimestamp(hour)) AS h"
    " FROM response_cells FINAL WHERE n > 0"
    " AND (project_id, toInt64(toUnixTimestamp(hour))) IN (SELECT project_id, h FROM touched)"
)
RECOMPUTE_RESPONSES = (
    f"INSERT INTO response_cells SELECT {RESPONSE_KEY}, {RESPONSE_SUMS}, now64(6) FROM ("
    f"{_RESPONSE_CELL_OF_ROW} AND "
    + _CELLS_IN.replace(
        "{cells_of}", "project_id, '', app, toInt64(toUnixTimestamp(toStartOfHour(ts)))"
    )
    + f"  UNION ALL SELECT {RESPONSE_KEY}, 0, 0, 0, 0, 0, 0, 0, 0,"
    "  toDateTime64('2200-01-01 00:00:00', 3, 'UTC'), toDateTime64(0, 3, 'UTC')"
    "  FROM response_cells FINAL WHERE n > 0"
    "  AND hour >= {lo:DateTime64(3)} AND hour < {hi:DateTime64(3)} AND "
    + _CELLS_IN.replace("{cells_of}", "project_id, '', app, toInt64(toUnixTimestamp(hour))")
    + f") GROUP BY {RESPONSE_KEY}"
)


def response_rows(
    since: datetime, until: datetime, lo: datetime, hi: datetime
) -> tuple[str, dict[str, datetime]]:
    """As score_rows, for responses: columns RESPONSE_DIMS, ts, then the cell values. Binds {p}."""
    cells = (
        f"SELECT {RESPONSE_DIMS}, hour AS ts, {_RESPONSE_VALUES} FROM response_cells FINAL"
        " WHERE project_id = {p:String} AND n > 0"
        " AND hour >= {lo:DateTime64(3)} AND hour < {hi:DateTime64(3)}"
    )
    raw = f"{_RAW_RESPONSES} WHERE project_id = {{p:String}} AND {_RAW_WINDOW}"
    return _union(cells, raw, since, until, lo, hi)
