"""The schema on a ClickHouse cluster: single-node DDL rewritten to replicated, sharded DDL.

`schema.MIGRATIONS` stays the one source of truth; this module derives the cluster form of any
statement, so a new migration needs no cluster twin. Two kinds of table:

- **Sharded** (the table has `project_id` and `event_id` columns: responses, scores, scored,
  score_errors, ...): `<name>_local` is a Replicated* table on every shard (its Keeper path holds
  `{shard}`), and `<name>` is a Distributed front over them with the sharding key
  `cityHash64(project_id, event_id)`. Every row of one event, in every such table, lands on one
  shard, so ReplacingMergeTree's deduplication (which works within a shard only) and FINAL stay
  exact, and joins/`IN` between these tables on (project, event) can run shard-locally
  (`distributed_product_mode = 'local'`). The app's SQL names `<name>` and never changes.
- **Replicated on every node** (everything else: api_keys, prompt_versions, label_events,
  rollout_events, job_state, incidents, statistics cells, schema_migrations, ...): one Replicated*
  table whose Keeper path has no `{shard}`, so every node of the cluster holds the whole table.
  These are small, and several hold compare-and-set claims (store/base.py `_claim`) or whole
  recomputed cells that must replace each other: splitting them over shards would split the rows
  that have to meet. Writes to them are quorum inserts and reads of them sequentially
  consistent (`consistency_settings`), so a row acknowledged on one node is seen from any node.

Statements are rewritten by their form; a form this module does not know is refused with the
statement named (tests/test_cluster.py runs every migration through it, so a new form fails the
suite instead of reaching a cluster unconverted).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from promptblame.store.schema import MIGRATIONS, MIGRATIONS_TABLE

SHARD_COLUMNS = ("project_id", "event_id")
SHARDING_KEY = "cityHash64(project_id, event_id)"
LOCAL_SUFFIX = "_local"
KEEPER_ROOT = "/clickhouse/tables"

_MERGE_TREES = {
    "MergeTree",
    "ReplacingMergeTree",
    "SummingMergeTree",
    "AggregatingMergeTree",
    "CollapsingMergeTree",
    "VersionedCollapsingMergeTree",
    "GraphiteMergeTree",
}
_F = re.IGNORECASE | re.DOTALL
_CREATE_TABLE = re.compile(
    r"^\s*CREATE\s+TABLE\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+)\s*"
    r"\((?P<body>.*)\)\s*ENGINE\s*=\s*(?P<engine>\w+)\s*(?:\((?P<args>[^()]*)\))?(?P<rest>.*)$",
    _F,
)
_CREATE_MV = re.compile(
    r"^\s*CREATE\s+MATERIALIZED\s+VIEW\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+)\s+"
    r"TO\s+(?P<target>\w+)\s*(?P<cols>\([^()]*(?:\([^()]*\)[^()]*)*\))?\s*AS\s+(?P<select>.*)$",
    _F,
)
_CREATE_VIEW = re.compile(
    r"^\s*CREATE\s+(?P<or>OR\s+REPLACE\s+)?VIEW\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+)"
    r"\s+AS\s+(?P<select>.*)$",
    _F,
)
_ALTER = re.compile(r"^\s*ALTER\s+TABLE\s+(?P<name>\w+)\s+(?P<action>.*)$", _F)
_COLUMN_ACTION = re.compile(r"\b(ADD|DROP|MODIFY|RENAME|COMMENT)\s+COLUMN\b", re.IGNORECASE)
_DROP = re.compile(
    r"^\s*DROP\s+(?P<kind>TABLE|VIEW)\s+(?P<ie>IF\s+EXISTS\s+)?(?P<name>\w+)\s*(?P<sync>SYNC)?\s*$",
    _F,
)
_DELETE = re.compile(r"^\s*DELETE\s+FROM\s+(?P<name>\w+)\s+(?P<where>WHERE\s.*)$", _F)
_OPTIMIZE = re.compile(r"^\s*OPTIMIZE\s+TABLE\s+(?P<name>\w+)(?P<rest>.*)$", _F)
_EXCHANGE = re.compile(r"^\s*EXCHANGE\s+TABLES\s+(?P<a>\w+)\s+AND\s+(?P<b>\w+)\s*$", _F)
_TRUNCATE = re.compile(r"^\s*TRUNCATE\s+TABLE\s+(?P<ie>IF\s+EXISTS\s+)?(?P<name>\w+)\s*$", _F)
_PASS_THROUGH = re.compile(r"^\s*(INSERT|SELECT|WITH)\b", re.IGNORECASE)
_TABLE_REF = re.compile(r"\b(FROM|JOIN)\s+(\w+)\b", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnsupportedStatement(ValueError):
    """A statement whose cluster form this module cannot derive (add its form here)."""


def _top_level_split(body: str) -> list[str]:
    """Split a column list at the commas outside parentheses and quotes."""
    parts: list[str] = []
    cur: list[str] = []
    depth, quote = 0, ""
    for ch in body:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _columns(body: str) -> list[str]:
    names = []
    for item in _top_level_split(body):
        word = item.split(None, 1)[0].strip('`"')
        if word.upper() not in {"INDEX", "PROJECTION", "CONSTRAINT"}:
            names.append(word)
    return names


@dataclass
class ClusterSchema:
    """Rewrites statements for `cluster`, remembering which tables are sharded as it goes.

    Feed it statements in migration order (`from_migrations` does); `statements(sql)` returns
    what to run on the cluster instead of `sql`, in order.
    """

    cluster: str
    database: str
    sharded: set[str] = field(default_factory=set)
    replicated: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for what, value in (("cluster", self.cluster), ("database", self.database)):
            if not _NAME.match(value):
                raise ValueError(f"{what} name {value!r} is not a plain identifier")

    @classmethod
    def from_migrations(cls, cluster: str, database: str) -> ClusterSchema:
        """The layout after every migration (what a running ServerStore needs to know)."""
        layout = cls(cluster, database)
        for _ in layout.migration_statements():
            pass
        return layout

    def migration_statements(self) -> Iterable[tuple[int, str]]:
        """(version, cluster statement) for the migrations table and every migration."""
        for sql in self.statements(MIGRATIONS_TABLE):
            yield 0, sql
        for m in MIGRATIONS:
            for statement in (*m.statements, *(m.rebuild.ddl() if m.rebuild else ())):
                for sql in self.statements(statement):
                    yield m.version, sql

    # -- the rewrite -----------------------------------------------------------------------
    def statements(self, sql: str) -> list[str]:
        sql = sql.strip().rstrip(";").strip()
        on = f"ON CLUSTER {self.cluster}"
        if m := _CREATE_TABLE.match(sql):
            return self._create_table(m)
        if m := _CREATE_MV.match(sql):
            target = self._local(m["target"])
            select = self._local_refs(m["select"])
            cols = f" {m['cols']}" if m["cols"] else ""
            return [
                f"CREATE MATERIALIZED VIEW {m['ine'] or ''}{m['name']} {on}"
                f" TO {target}{cols} AS {select}"
            ]
        if m := _CREATE_VIEW.match(sql):
            return [f"CREATE {m['or'] or ''}VIEW {m['ine'] or ''}{m['name']} {on} AS {m['select']}"]
        if m := _ALTER.match(sql):
            name, action = m["name"], m["action"]
            if name not in self.sharded:
                self._known(name, sql)
                return [f"ALTER TABLE {name} {on} {action}"]
            column_ops = bool(_COLUMN_ACTION.search(action))
            other_ops = len(_top_level_split(action)) > len(_COLUMN_ACTION.findall(action))
            local = f"ALTER TABLE {name}{LOCAL_SUFFIX} {on} {action}"
            if column_ops and other_ops:
                raise UnsupportedStatement(
                    f"split column changes from other changes of {name}: {sql[:200]}"
                )
            # The Distributed front must carry the same columns; indexes, settings and
            # mutations are the local tables' business only.
            return [local, f"ALTER TABLE {name} {on} {action}"] if column_ops else [local]
        if m := _DROP.match(sql):
            name, ie = m["name"], m["ie"] or ""
            out = [f"DROP {m['kind'].upper()} {ie}{name} {on} SYNC"]
            if name in self.sharded:
                out.append(f"DROP TABLE {ie}{name}{LOCAL_SUFFIX} {on} SYNC")
                self.sharded.discard(name)
            self.replicated.discard(name)
            return out
        if m := _DELETE.match(sql):
            name = m["name"]
            if name in self.sharded:
                return [f"DELETE FROM {name}{LOCAL_SUFFIX} {on} {m['where']}"]
            self._known(name, sql)
            return [sql]  # a replicated table's mutation reaches every replica through Keeper
        if m := _OPTIMIZE.match(sql):
            return [f"OPTIMIZE TABLE {self._local(m['name'])} {on}{m['rest']}"]
        if m := _TRUNCATE.match(sql):
            return [f"TRUNCATE TABLE {m['ie'] or ''}{self._local(m['name'])} {on}"]
        if m := _EXCHANGE.match(sql):
            # A rebuild's swap (store/rebuild.py): swap the shards' local tables, and the
            # Distributed fronts, which name their local table, read the swapped ones.
            a, b = m["a"], m["b"]
            if (a in self.sharded) != (b in self.sharded):
                raise UnsupportedStatement(f"{a} and {b} are not laid out alike: {sql[:200]}")
            return [f"EXCHANGE TABLES {self._local(a)} AND {self._local(b)} {on}"]
        if _PASS_THROUGH.match(sql):
            return [sql]  # inserts and reads go through the Distributed fronts unchanged
        raise UnsupportedStatement(f"no cluster form for: {sql[:200]}")

    def _create_table(self, m: re.Match[str]) -> list[str]:
        name, engine, args = m["name"], m["engine"], (m["args"] or "").strip()
        if engine not in _MERGE_TREES:
            raise UnsupportedStatement(
                f"{name}: engine {engine} has no Replicated form: {m.string[:200]}"
            )
        columns = _columns(m["body"])
        sharded = all(c in columns for c in SHARD_COLUMNS)
        local = f"{name}{LOCAL_SUFFIX}" if sharded else name
        shard = "{shard}" if sharded else "all"
        path = f"'{KEEPER_ROOT}/{shard}/{self.database}/{local}', '{{replica}}'"
        engine_sql = f"Replicated{engine}({path}{', ' + args if args else ''})"
        on = f"ON CLUSTER {self.cluster}"
        ine = m["ine"] or ""
        rest = m["rest"].strip()
        out = [f"CREATE TABLE {ine}{local} {on} ({m['body']}) ENGINE = {engine_sql} {rest}"]
        if sharded:
            out.append(
                f"CREATE TABLE {ine}{name} {on} AS {local}"
                f" ENGINE = Distributed({self.cluster}, {self.database}, {local}, {SHARDING_KEY})"
            )
            self.sharded.add(name)
        else:
            self.replicated.add(name)
        return out

    def _local(self, name: str) -> str:
        return f"{name}{LOCAL_SUFFIX}" if name in self.sharded else name

    def _local_refs(self, select: str) -> str:
        """A materialized view fires on inserts into its FROM table: on a cluster that is the
        shard's local table (the Distributed front only forwards), so name the local tables."""
        return _TABLE_REF.sub(lambda r: f"{r[1]} {self._local(r[2])}", select)

    def _known(self, name: str, sql: str) -> None:
        if name not in self.replicated:
            raise UnsupportedStatement(f"{name} is not a table of the schema: {sql[:200]}")

    # -- runtime ---------------------------------------------------------------------------
    def consistency_settings(self, sql: str) -> Mapping[str, Any]:
        """Per-statement settings: inserts into a replicated-on-every-node table wait for a
        majority of replicas, and reads of one see every such acknowledged insert, so a
        compare-and-set claim read back on any node sees every claim acknowledged before."""
        if insert := _INSERT_TARGET.match(sql):  # the target decides, whatever it reads
            if insert[1] in self.replicated:
                return {"insert_quorum": "auto", "insert_quorum_parallel": 0}
            return {}
        if {r[2] for r in _TABLE_REF.finditer(sql)} & self.replicated:
            return {"select_sequential_consistency": 1}
        return {}


_INSERT_TARGET = re.compile(r"^\s*INSERT\s+INTO\s+(?:TABLE\s+)?(\w+)", re.IGNORECASE)

# Session settings of a ServerStore on a cluster (see README "Running on a ClickHouse cluster").
CLUSTER_SESSION_SETTINGS: Mapping[str, Any] = {
    # An INSERT into a Distributed front returns once every shard has its rows (not when the
    # receiving node has queued them on its disk): the writer's acknowledgement means stored.
    "distributed_foreground_insert": 1,
    # JOIN / IN between co-sharded tables (scores to responses by event) run shard by shard.
    "distributed_product_mode": "local",
    # ON CLUSTER statements wait for every host, so a migration is applied when it returns.
    "distributed_ddl_task_timeout": 300,
}
