"""Tables and their versioned migrations: the single source of truth of the data model.

Each migration is a list of idempotent statements (IF NOT EXISTS), so a run that died half way
can simply run again; a table rebuild (`Rebuild`, store/rebuild.py) records its progress and
resumes. `responses` and `scores` are ReplacingMergeTree keyed on their identity so retried events
collapse to one row; every read of them deduplicates (FINAL, or a GROUP BY keeping FINAL's row).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Rebuild:
    """A table copied into a new layout and swapped in (ClickHouse cannot change a sorting key
    in place): `create` makes the `<table>_next` table with the layout `key` names, as
    system.tables prints it. store/rebuild.py does the copy, resumably."""

    table: str
    create: str
    key: str

    @property
    def next(self) -> str:
        return f"{self.table}_next"

    def ddl(self) -> tuple[str, str, str]:
        """The schema statements of the rebuild, in order (the rows move in between)."""
        return (
            self.create,
            f"EXCHANGE TABLES {self.table} AND {self.next}",
            f"DROP TABLE IF EXISTS {self.next}",
        )


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    rebuild: Rebuild | None = None


MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree ORDER BY version
"""


# The columns of `responses` (migration 1; migration 23 rebuilt the table under a new key).
_RESPONSE_COLUMNS = """\
                project_id LowCardinality(String),
                event_id String,
                ts DateTime64(3, 'UTC'),
                app LowCardinality(String),
                route LowCardinality(String),
                environment LowCardinality(String),
                prompt_id LowCardinality(String),
                prompt_version LowCardinality(String),
                model LowCardinality(String),
                model_version LowCardinality(String),
                provider LowCardinality(String),
                experiment LowCardinality(String),
                variant LowCardinality(String),
                case_id String,
                trace_id String,
                span_id String,
                user_id String,
                session_id String,
                input String CODEC(ZSTD(1)),
                output String CODEC(ZSTD(1)),
                expected_output String CODEC(ZSTD(1)),
                latency_ms Nullable(Float64),
                input_tokens Nullable(UInt32),
                output_tokens Nullable(UInt32),
                cost_usd Nullable(Float64),
                status LowCardinality(String),
                error_type LowCardinality(String),
                tags Map(LowCardinality(String), String),
                received_at DateTime64(3, 'UTC')
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "responses, scores, prompt registry, api keys",
        (
            f"""
            CREATE TABLE IF NOT EXISTS responses (
{_RESPONSE_COLUMNS}            ) ENGINE = ReplacingMergeTree
            ORDER BY (project_id, event_id)
            """,
            """
            CREATE TABLE IF NOT EXISTS scores (
                project_id LowCardinality(String),
                event_id String,
                name LowCardinality(String),
                source LowCardinality(String),
                value Float64,
                comment String,
                ts DateTime64(3, 'UTC'),
                received_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(ts)
            ORDER BY (project_id, event_id, name, source)
            """,
            """
            CREATE TABLE IF NOT EXISTS prompt_versions (
                project_id LowCardinality(String),
                prompt_id String,
                version String,
                template String CODEC(ZSTD(1)),
                content_hash String,
                author String,
                labels Array(String),
                created_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(created_at)
            ORDER BY (project_id, prompt_id, version)
            """,
            """
            CREATE TABLE IF NOT EXISTS api_keys (
                key_id String,
                project_id String,
                secret_sha256 String,
                scopes Array(LowCardinality(String)),
                name String,
                created_at DateTime64(3, 'UTC'),
                revoked UInt8,
                updated_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(updated_at)
            ORDER BY key_id
            """,
        ),
    ),
    Migration(
        2,
        "scored: scores carrying their response's time and dimensions; job state",
        (
            # Analysis groups scores by the response's version, route and time. Joining 10M
            # scores to 10M responses per query costs seconds; this table, kept up to date
            # incrementally by Store.materialize_scores, makes it a single filtered scan.
            # ts (the response's, fixed per event) leads event_id in the key, so new parts only
            # overlap recent key ranges and FINAL merges little; time filters prune by index.
            """
            CREATE TABLE IF NOT EXISTS scored (
                project_id LowCardinality(String),
                name LowCardinality(String),
                source LowCardinality(String),
                event_id String,
                value Float64,
                score_ts DateTime64(3, 'UTC'),
                ts DateTime64(3, 'UTC'),
                app LowCardinality(String),
                route LowCardinality(String),
                environment LowCardinality(String),
                prompt_id LowCardinality(String),
                prompt_version LowCardinality(String),
                model LowCardinality(String),
                model_version LowCardinality(String),
                provider LowCardinality(String),
                experiment LowCardinality(String),
                variant LowCardinality(String),
                case_id String
            ) ENGINE = ReplacingMergeTree(score_ts)
            ORDER BY (project_id, name, app, ts, event_id, source)
            """,
            """
            CREATE TABLE IF NOT EXISTS job_state (
                job String,
                key String,
                ts DateTime64(3, 'UTC'),
                n UInt64,
                updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
            ) ENGINE = ReplacingMergeTree(updated_at)
            ORDER BY (job, key)
            """,
        ),
    ),
    Migration(
        3,
        "evaluators as config, their versions, scoring errors, job runs",
        (
            # The current definition of each evaluator (one row per name; `removed` keeps the
            # name's history when it leaves the config file).
            """
            CREATE TABLE IF NOT EXISTS evaluators (
                project_id LowCardinality(String),
                name String,
                version UInt32,
                kind LowCardinality(String),
                params String,
                content_hash String,
                filter String,
                sample_rate Float64,
                enabled UInt8,
                description String,
                removed UInt8,
                updated_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(updated_at)
            ORDER BY (project_id, name)
            """,
            # Every definition an evaluator ever had: scores name their version.
            """
            CREATE TABLE IF NOT EXISTS evaluator_versions (
                project_id LowCardinality(String),
                name String,
                version UInt32,
                kind LowCardinality(String),
                params String,
                content_hash String,
                created_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree
            ORDER BY (project_id, name, version)
            """,
            # A response an evaluator could not score (judge garbage, evaluator exception):
            # recorded instead of a score, and not retried by the scheduled job.
            """
            CREATE TABLE IF NOT EXISTS score_errors (
                project_id LowCardinality(String),
                source LowCardinality(String),
                event_id String,
                error String,
                ts DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(ts)
            ORDER BY (project_id, source, event_id)
            """,
            """
            CREATE TABLE IF NOT EXISTS job_runs (
                job LowCardinality(String),
                project_id LowCardinality(String),
                started_at DateTime64(3, 'UTC'),
                duration_s Float64,
                status LowCardinality(String),
                rows UInt64,
                error String
            ) ENGINE = MergeTree
            ORDER BY (job, project_id, started_at)
            TTL toDateTime(started_at) + INTERVAL 30 DAY
            """,
        ),
    ),
    Migration(
        4,
        "incidents with their verdict history, alert rules and channels, sent alerts",
        (
            # One row per shift found by the detection job: its latest verdict and status.
            """
            CREATE TABLE IF NOT EXISTS incidents (
                project_id LowCardinality(String),
                incident_id String,
                app LowCardinality(String),
                route LowCardinality(String),
                environment LowCardinality(String),
                metric LowCardinality(String),
                source LowCardinality(String),
                bucket_seconds UInt32,
                shift_start DateTime64(3, 'UTC'),
                direction LowCardinality(String),
                verdict LowCardinality(String),
                culprit String,
                summary String,
                effect Float64,
                p_value Float64,
                evidence String,
                status LowCardinality(String),
                status_note String,
                revision UInt32,
                created_at DateTime64(3, 'UTC'),
                updated_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(updated_at)
            ORDER BY (project_id, incident_id)
            """,
            # Every verdict an incident had: late scores can change the picture.
            """
            CREATE TABLE IF NOT EXISTS incident_revisions (
                project_id LowCardinality(String),
                incident_id String,
                revision UInt32,
                verdict LowCardinality(String),
                culprit String,
                summary String,
                effect Float64,
                p_value Float64,
                evidence String,
                created_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree
            ORDER BY (project_id, incident_id, revision)
            """,
            # alerts.yaml as applied: one row per channel or rule.
            """
            CREATE TABLE IF NOT EXISTS alert_config (
                project_id LowCardinality(String),
                section LowCardinality(String),
                name String,
                definition String,
                content_hash String,
                removed UInt8,
                updated_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(updated_at)
            ORDER BY (project_id, section, name)
            """,
            """
            CREATE TABLE IF NOT EXISTS alerts (
                project_id LowCardinality(String),
                incident_id String,
                rule String,
                channel String,
                event LowCardinality(String),
                revision UInt32,
                status LowCardinality(String),
                attempts UInt32,
                error String,
                text String,
                sent_at DateTime64(3, 'UTC')
            ) ENGINE = MergeTree
            ORDER BY (project_id, incident_id, rule, channel, sent_at)
            """,
        ),
    ),
    Migration(
        5,
        "responses: merge wider, rewrite less",
        (
            # Under load the group-commit writer makes a part every few tens of ms; with the
            # default merge selector (base 5, narrowed merges) every row is rewritten several
            # times and background merges took ~40 % of the CPU of a 2-core ingest. Merging
            # ~20 parts at once halves that; the part count stays low (13 after 1M rows).
            # benchmarks/README.md, "Ingest throughput", has the figures.
            """
            ALTER TABLE responses MODIFY SETTING
                merge_selector_base = 20,
                merge_selector_enable_heuristic_to_lower_max_parts_to_merge_at_once = 0
            """,
        ),
    ),
    Migration(
        6,
        "prompt releases: label moves, gate results",
        (
            # Append-only: every claim to move a label. A pointer (prompt, label, model) is the
            # winning claim with the highest seq; a claim wins its seq when it is the earliest
            # (claimed_at, token) of that seq. Compare-and-set without row locks: a mover
            # claims seq = current + 1 and reads back which claim won. model '' = every model
            # without a pointer of its own.
            """
            CREATE TABLE IF NOT EXISTS label_events (
                project_id LowCardinality(String),
                prompt_id String,
                label String,
                model String,
                seq UInt64,
                claimed_at DateTime64(6, 'UTC'),
                token String,
                from_version String,
                to_version String,
                key_id String,
                reason String,
                forced UInt8,
                incident_id String
            ) ENGINE = MergeTree
            ORDER BY (project_id, prompt_id, label, model, seq, claimed_at, token)
            """,
            # What a protected label checks: the gate's verdicts, kept as they were given.
            """
            CREATE TABLE IF NOT EXISTS gate_results (
                project_id LowCardinality(String),
                app String,
                environment String,
                compared LowCardinality(String),
                baseline String,
                candidate String,
                candidate_run String,
                prompt_ids Array(String),
                models Array(String),
                model_versions Array(String),
                verdict LowCardinality(String),
                result String CODEC(ZSTD(1)),
                ts DateTime64(3, 'UTC')
            ) ENGINE = MergeTree
            ORDER BY (project_id, compared, candidate, ts)
            """,
        ),
    ),
    Migration(
        7,
        "guarded rollouts: their states, one event per transition",
        (
            # Append-only like label_events: each event is the rollout's whole state after a
            # transition, claimed by seq (earliest claim wins), so a transition is one INSERT and
            # a crash leaves either the old state or the new one, never half of each.
            """
            CREATE TABLE IF NOT EXISTS rollout_events (
                project_id LowCardinality(String),
                rollout_id String,
                seq UInt64,
                claimed_at DateTime64(6, 'UTC'),
                token String,
                prompt_id String,
                label String,
                model String,
                incumbent String,
                candidate String,
                config String,
                state LowCardinality(String),
                step Int32,
                step_started_at DateTime64(3, 'UTC'),
                action LowCardinality(String),
                reason String,
                detail String CODEC(ZSTD(1)),
                key_id String
            ) ENGINE = MergeTree
            ORDER BY (project_id, rollout_id, seq, claimed_at, token)
            """,
        ),
    ),
    Migration(
        20,
        "human review: config (queues, trust rules), queue items, reviewers' labels",
        (
            # Queues and trust rules as config (review.yaml), one row per (section, name), as
            # alert_config: `removed` keeps a name's history when it leaves the file.
            """
            CREATE TABLE IF NOT EXISTS review_config (
                project_id LowCardinality(String),
                section LowCardinality(String),
                name String,
                definition String,
                content_hash String,
                removed UInt8,
                updated_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(updated_at)
            ORDER BY (project_id, section, name)
            """,
            # The sampled responses of a queue. rank: the item's deterministic position in
            # [0, 1) (serving order); needed: how many reviewers label it (2 on the overlap).
            """
            CREATE TABLE IF NOT EXISTS review_items (
                project_id LowCardinality(String),
                queue String,
                event_id String,
                stratum String,
                rank Float64,
                needed UInt8,
                added_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(added_at)
            ORDER BY (project_id, queue, event_id)
            """,
            # Each reviewer's answer on an item, latest row wins: action label (values as JSON
            # {field: number}), skip, lease (served, not answered yet) or undone.
            """
            CREATE TABLE IF NOT EXISTS review_labels (
                project_id LowCardinality(String),
                queue String,
                event_id String,
                reviewer String,
                action LowCardinality(String),
                labels String,
                comment String,
                key_id String,
                ts DateTime64(6, 'UTC')
            ) ENGINE = ReplacingMergeTree(ts)
            ORDER BY (project_id, queue, event_id, reviewer)
            """,
        ),
    ),
)


# Appended as its own tuple so migrations added elsewhere in parallel compose (the runner applies
# any version not yet applied, in order of this tuple).
MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        12,
        "responses: skip indexes for the explorer's text search and newest-first pages",
        (
            # The explorer searches input/output case-insensitively for a substring
            # (lowerUTF8(col) LIKE '%text%'): a bloom filter of each granule's 3-grams skips the
            # granules that cannot hold it. It serves selective text (an order id, an error
            # message); text found in most granules is served by the newest-first windows.
            """
            ALTER TABLE responses ADD INDEX IF NOT EXISTS text_ngrams
                (lowerUTF8(input), lowerUTF8(output)) TYPE ngrambf_v1(3, 32768, 3, 0)
                GRANULARITY 1
            """,
            # Per-granule time ranges: a page of the newest responses reads the newest parts
            # only (the key is (project_id, event_id), which says nothing about time).
            "ALTER TABLE responses ADD INDEX IF NOT EXISTS ts_minmax ts TYPE minmax GRANULARITY 1",
            # Existing parts get the indexes by a background mutation; until it is done their
            # granules are read as before (slower, same answers). New parts get them on insert.
            "ALTER TABLE responses MATERIALIZE INDEX text_ngrams",
            "ALTER TABLE responses MATERIALIZE INDEX ts_minmax",
        ),
    ),
)
MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        21,
        "statistics cells: hourly sums of the scored table for hours that have passed",
        (
            # When the scored-table job (re)wrote a row: a late or corrected score for an hour
            # already summed marks its cell for recomputation. Rows written before this
            # migration read as 1970 (never "new"); the job writes the time explicitly.
            """
            ALTER TABLE scored ADD COLUMN IF NOT EXISTS
                materialized_at DateTime64(3, 'UTC') DEFAULT toDateTime64(0, 3, 'UTC')
            """,
            """
            ALTER TABLE scored ADD INDEX IF NOT EXISTS materialized_minmax materialized_at
                TYPE minmax GRANULARITY 1
            """,
            "ALTER TABLE scored MATERIALIZE INDEX materialized_minmax",
            # n, sums and the count of values other than 0/1 of the scored rows of one hour (by
            # response time) and one combination of the dimensions reads group by. A cell is
            # always recomputed whole from `scored` (FINAL), never incremented, so it equals a
            # recomputation however often the job repeats; the newest computation wins, and a
            # combination that lost its rows gets a row with n = 0.
            """
            CREATE TABLE IF NOT EXISTS score_cells (
                project_id LowCardinality(String),
                name LowCardinality(String),
                app LowCardinality(String),
                hour DateTime64(3, 'UTC'),
                source LowCardinality(String),
                route LowCardinality(String),
                environment LowCardinality(String),
                prompt_id LowCardinality(String),
                prompt_version LowCardinality(String),
                model LowCardinality(String),
                model_version LowCardinality(String),
                provider LowCardinality(String),
                experiment LowCardinality(String),
                variant LowCardinality(String),
                n UInt64,
                total Float64,
                total_sq Float64,
                non_binary UInt64,
                computed_at DateTime64(6, 'UTC')
            ) ENGINE = ReplacingMergeTree(computed_at)
            ORDER BY (project_id, name, app, hour, source, route, environment, prompt_id,
                      prompt_version, model, model_version, provider, experiment, variant)
            """,
        ),
    ),
)
MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        22,
        "statistics cells of responses: hourly counts, errors, latency and cost sums",
        (
            # As score_cells, for what reads take off `responses` itself: version counts (with
            # first and last seen) and the built-in metrics. Latency and cost count only where
            # present (sums skip NULL, as the raw reads do).
            """
            CREATE TABLE IF NOT EXISTS response_cells (
                project_id LowCardinality(String),
                app LowCardinality(String),
                hour DateTime64(3, 'UTC'),
                route LowCardinality(String),
                environment LowCardinality(String),
                prompt_id LowCardinality(String),
                prompt_version LowCardinality(String),
                model LowCardinality(String),
                model_version LowCardinality(String),
                provider LowCardinality(String),
                experiment LowCardinality(String),
                variant LowCardinality(String),
                n UInt64,
                errors UInt64,
                latency_n UInt64,
                latency_total Float64,
                latency_total_sq Float64,
                cost_n UInt64,
                cost_total Float64,
                cost_total_sq Float64,
                first_seen DateTime64(3, 'UTC'),
                last_seen DateTime64(3, 'UTC'),
                computed_at DateTime64(6, 'UTC')
            ) ENGINE = ReplacingMergeTree(computed_at)
            ORDER BY (project_id, app, hour, route, environment, prompt_id, prompt_version, model,
                      model_version, provider, experiment, variant)
            """,
            # The job finds responses that arrived for hours already summed by received_at.
            """
            ALTER TABLE responses ADD INDEX IF NOT EXISTS received_minmax received_at
                TYPE minmax GRANULARITY 1
            """,
            "ALTER TABLE responses MATERIALIZE INDEX received_minmax",
        ),
    ),
)
MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        23,
        "responses: a time-first key, so reads of a time window merge only that window",
        (
            # Where a rebuild has got to: the old key's position it copied through, and when it
            # began (rows received since then are copied again before and after the swap).
            """
            CREATE TABLE IF NOT EXISTS table_rebuilds (
                name String,
                phase LowCardinality(String),
                project_id String,
                after String,
                started_at DateTime64(3, 'UTC'),
                caught_up_at DateTime64(3, 'UTC'),
                updated_at DateTime64(6, 'UTC') DEFAULT now64(6)
            ) ENGINE = ReplacingMergeTree(updated_at)
            ORDER BY name
            """,
        ),
        Rebuild(
            "responses",
            # Keyed (project, hour, event): a retry carries the same ts, so its rows still
            # collapse into one, while a time window reads (and FINAL merges) only its own
            # hours; months are partitions, so old months can be dropped whole. Look-ups by
            # event id go through `response_keys` (migration 24). The settings are migration
            # 5's (merge wider under ingest).
            f"""
            CREATE TABLE IF NOT EXISTS responses_next (
{_RESPONSE_COLUMNS},
                INDEX text_ngrams (lowerUTF8(input), lowerUTF8(output))
                    TYPE ngrambf_v1(3, 32768, 3, 0) GRANULARITY 1,
                INDEX ts_minmax ts TYPE minmax GRANULARITY 1,
                INDEX received_minmax received_at TYPE minmax GRANULARITY 1
            ) ENGINE = ReplacingMergeTree
            PARTITION BY toYYYYMM(ts)
            ORDER BY (project_id, toStartOfHour(ts), event_id)
            SETTINGS merge_selector_base = 20,
                merge_selector_enable_heuristic_to_lower_max_parts_to_merge_at_once = 0
            """,
            "project_id, toStartOfHour(ts), event_id",
        ),
    ),
)
MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        24,
        "response_keys: where each event's response lies in the time-first key",
        (
            # The scored-table job looks up thousands of responses by event id each run (new
            # scores' responses); the time-first key cannot find them and a bloom filter
            # passes every granule for thousands of ids. This narrow table, kept by a
            # materialized view on every insert, finds each id's hour by the id key; the
            # response is then one key look-up away. A retried insert adds identical rows.
            """
            CREATE TABLE IF NOT EXISTS response_keys (
                project_id LowCardinality(String),
                event_id String,
                hour DateTime('UTC')
            ) ENGINE = ReplacingMergeTree
            ORDER BY (project_id, event_id)
            """,
            """
            CREATE MATERIALIZED VIEW IF NOT EXISTS response_keys_mv TO response_keys
            AS SELECT project_id, event_id, toStartOfHour(ts) AS hour FROM responses
            """,
            # Rows stored before the view existed (run again after a crash: duplicates collapse).
            """
            INSERT INTO response_keys
            SELECT project_id, event_id, toStartOfHour(ts) AS hour FROM responses
            """,
        ),
    ),
)
MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        25,
        "response_keys: an event's hours kept apart until the job has dropped the old one",
        (
            # Keyed by (project, event) alone, a background merge folded an event's two hours
            # into one row before the job saw both (it finds a moved event by its two hours),
            # and the old hour's response was counted with the new. With the hour in the key
            # only retries (same hour) collapse; the job deletes the stale hour's row. The
            # table is derived from `responses`, so it is rebuilt whole: the view is made again
            # before the refill, so rows inserted meanwhile are in it (duplicates collapse).
            "DROP VIEW IF EXISTS response_keys_mv",
            "DROP TABLE IF EXISTS response_keys",
            """
            CREATE TABLE IF NOT EXISTS response_keys (
                project_id LowCardinality(String),
                event_id String,
                hour DateTime('UTC')
            ) ENGINE = ReplacingMergeTree
            ORDER BY (project_id, event_id, hour)
            """,
            """
            CREATE MATERIALIZED VIEW IF NOT EXISTS response_keys_mv TO response_keys
            AS SELECT project_id, event_id, toStartOfHour(ts) AS hour FROM responses
            """,
            """
            INSERT INTO response_keys
            SELECT project_id, event_id, toStartOfHour(ts) AS hour FROM responses
            """,
        ),
    ),
)
# Applied (and reported by /healthz) in version order, whichever order they were written in.
MIGRATIONS = tuple(sorted(MIGRATIONS, key=lambda m: m.version))

_TS = pa.timestamp("ms", tz="UTC")
_STR = pa.string()

# Arrow layouts of the rows the ingest writer hands to the store, in table column order.
RESPONSES_ARROW = pa.schema(
    [
        ("project_id", _STR),
        ("event_id", _STR),
        ("ts", _TS),
        ("app", _STR),
        ("route", _STR),
        ("environment", _STR),
        ("prompt_id", _STR),
        ("prompt_version", _STR),
        ("model", _STR),
        ("model_version", _STR),
        ("provider", _STR),
        ("experiment", _STR),
        ("variant", _STR),
        ("case_id", _STR),
        ("trace_id", _STR),
        ("span_id", _STR),
        ("user_id", _STR),
        ("session_id", _STR),
        ("input", _STR),
        ("output", _STR),
        ("expected_output", _STR),
        ("latency_ms", pa.float64()),
        ("input_tokens", pa.uint32()),
        ("output_tokens", pa.uint32()),
        ("cost_usd", pa.float64()),
        ("status", _STR),
        ("error_type", _STR),
        ("tags", pa.map_(_STR, _STR)),
        ("received_at", _TS),
    ]
)

SCORES_ARROW = pa.schema(
    [
        ("project_id", _STR),
        ("event_id", _STR),
        ("name", _STR),
        ("source", _STR),
        ("value", pa.float64()),
        ("comment", _STR),
        ("ts", _TS),
        ("received_at", _TS),
    ]
)

SCORE_ERRORS_ARROW = pa.schema(
    [("project_id", _STR), ("source", _STR), ("event_id", _STR), ("error", _STR), ("ts", _TS)]
)

_F64, _U32, _U8 = pa.float64(), pa.uint32(), pa.uint8()
_INCIDENT = [
    ("project_id", _STR),
    ("incident_id", _STR),
    ("app", _STR),
    ("route", _STR),
    ("environment", _STR),
    ("metric", _STR),
    ("source", _STR),
    ("bucket_seconds", _U32),
    ("shift_start", _TS),
    ("direction", _STR),
    ("verdict", _STR),
    ("culprit", _STR),
    ("summary", _STR),
    ("effect", _F64),
    ("p_value", _F64),
    ("evidence", _STR),
    ("status", _STR),
    ("status_note", _STR),
    ("revision", _U32),
    ("created_at", _TS),
    ("updated_at", _TS),
]
INCIDENTS_ARROW = pa.schema(_INCIDENT)
INCIDENT_REVISIONS_ARROW = pa.schema(
    [
        ("project_id", _STR),
        ("incident_id", _STR),
        ("revision", _U32),
        ("verdict", _STR),
        ("culprit", _STR),
        ("summary", _STR),
        ("effect", _F64),
        ("p_value", _F64),
        ("evidence", _STR),
        ("created_at", _TS),
    ]
)
ALERT_CONFIG_ARROW = pa.schema(
    [
        ("project_id", _STR),
        ("section", _STR),
        ("name", _STR),
        ("definition", _STR),
        ("content_hash", _STR),
        ("removed", _U8),
        ("updated_at", _TS),
    ]
)
ALERTS_ARROW = pa.schema(
    [
        ("project_id", _STR),
        ("incident_id", _STR),
        ("rule", _STR),
        ("channel", _STR),
        ("event", _STR),
        ("revision", _U32),
        ("status", _STR),
        ("attempts", _U32),
        ("error", _STR),
        ("text", _STR),
        ("sent_at", _TS),
    ]
)

EVALUATORS_ARROW = pa.schema(
    [
        ("project_id", _STR),
        ("name", _STR),
        ("version", _U32),
        ("kind", _STR),
        ("params", _STR),
        ("content_hash", _STR),
        ("filter", _STR),
        ("sample_rate", _F64),
        ("enabled", _U8),
        ("description", _STR),
        ("removed", _U8),
        ("updated_at", _TS),
    ]
)
EVALUATOR_VERSIONS_ARROW = pa.schema(
    [
        ("project_id", _STR),
        ("name", _STR),
        ("version", _U32),
        ("kind", _STR),
        ("params", _STR),
        ("content_hash", _STR),
        ("created_at", _TS),
    ]
)

# Templates may be 1 MB: a row, not a query parameter (clickhouse-connect sends parameters in
# the URL, which servers cap: ClickHouse's http_max_uri_size is 1 MiB).
PROMPT_VERSIONS_ARROW = pa.schema(
    [
        ("project_id", _STR),
        ("prompt_id", _STR),
        ("version", _STR),
        ("template", _STR),
        ("content_hash", _STR),
        ("author", _STR),
        ("labels", pa.list_(_STR)),
        ("created_at", _TS),
    ]
)

GATE_RESULTS_ARROW = pa.schema(
    [
        ("project_id", _STR),
        ("app", _STR),
        ("environment", _STR),
        ("compared", _STR),
        ("baseline", _STR),
        ("candidate", _STR),
        ("candidate_run", _STR),
        ("prompt_ids", pa.list_(_STR)),
        ("models", pa.list_(_STR)),
        ("model_versions", pa.list_(_STR)),
        ("verdict", _STR),
        ("result", _STR),
        ("ts", _TS),
    ]
)

INSERTABLE: dict[str, pa.Schema] = {
    "gate_results": GATE_RESULTS_ARROW,
    "responses": RESPONSES_ARROW,
    "scores": SCORES_ARROW,
    "score_errors": SCORE_ERRORS_ARROW,
    "incidents": INCIDENTS_ARROW,
    "incident_revisions": INCIDENT_REVISIONS_ARROW,
    "alert_config": ALERT_CONFIG_ARROW,
    "alerts": ALERTS_ARROW,
    "evaluators": EVALUATORS_ARROW,
    "evaluator_versions": EVALUATOR_VERSIONS_ARROW,
    "prompt_versions": PROMPT_VERSIONS_ARROW,
}

# -- human review (issue 19) ------------------------------------------------------------------
REVIEW_CONFIG_ARROW = pa.schema(
    [
        ("project_id", _STR),
        ("section", _STR),
        ("name", _STR),
        ("definition", _STR),
        ("content_hash", _STR),
        ("removed", _U8),
        ("updated_at", _TS),
    ]
)
REVIEW_ITEMS_ARROW = pa.schema(
    [
        ("project_id", _STR),
        ("queue", _STR),
        ("event_id", _STR),
        ("stratum", _STR),
        ("rank", _F64),
        ("needed", _U8),
        ("added_at", _TS),
    ]
)
REVIEW_LABELS_ARROW = pa.schema(
    [
        ("project_id", _STR),
        ("queue", _STR),
        ("event_id", _STR),
        ("reviewer", _STR),
        ("action", _STR),
        ("labels", _STR),
        ("comment", _STR),
        ("key_id", _STR),
        ("ts", pa.timestamp("us", tz="UTC")),
    ]
)
INSERTABLE.update(
    {
        "review_config": REVIEW_CONFIG_ARROW,
        "review_items": REVIEW_ITEMS_ARROW,
        "review_labels": REVIEW_LABELS_ARROW,
    }
)
