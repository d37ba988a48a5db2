"""The cluster deployment, checked without a cluster.

Docker and ClickHouse servers do not run where this suite runs, so: every migration is rewritten
for a cluster and each statement is parsed by the real ClickHouse parser (chDB's formatQuery);
the local tables, with their Replicated engine turned back into the plain one, are created and
altered by the real engine and must come out exactly like the single-node tables; and
docker-compose.cluster.yml and its ClickHouse/Keeper configs are parsed and cross-checked. What
this does not prove: Keeper, replication, Distributed queries and ON CLUSTER execution on real
servers (README "Running on a ClickHouse cluster" says so).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptblame.settings import load_settings
from promptblame.store import Store
from promptblame.store.cluster import (
    SHARD_COLUMNS,
    ClusterSchema,
    UnsupportedStatement,
)
from promptblame.store.schema import MIGRATIONS
from tests.conftest import fresh_database
from tests.test_compose import command_path, container_command, environment, settings_for

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_COMPOSE = ROOT / "docker-compose.cluster.yml"
CLICKHOUSE_XML = ROOT / "deploy" / "cluster" / "clickhouse.xml"
KEEPER_XML = ROOT / "deploy" / "cluster" / "keeper.xml"
CLUSTER, DATABASE = "promptblame", "promptblame"

EVENT_TABLES = {"responses", "scores", "scored", "score_errors"}
CLAIM_TABLES = {"label_events", "rollout_events", "api_keys", "job_state", "schema_migrations"}


def cluster_statements() -> list[tuple[int, str]]:
    return list(ClusterSchema(CLUSTER, DATABASE).migration_statements())


def formatted(store: Store, sql: str) -> str:
    """The statement as ClickHouse's own parser reads it (raises on a syntax error)."""
    rows = store._rows("SELECT formatQuery({q:String}) AS f", q=sql)
    return str(rows[0]["f"])


_CREATE = re.compile(r"^CREATE TABLE (?:IF NOT EXISTS )?(\w+) ON CLUSTER (\w+)", re.MULTILINE)
_ENGINE = re.compile(r"^ENGINE = (\w+)\((.*)\)\s*$", re.MULTILINE)


def creates(store: Store) -> dict[str, tuple[str, str]]:
    """table -> (engine, engine arguments) of every CREATE TABLE, as ClickHouse parsed it."""
    out = {}
    for _, sql in cluster_statements():
        text = formatted(store, sql)
        if m := _CREATE.match(text):
            assert m[2] == CLUSTER
            engine = _ENGINE.search(text)
            assert engine, text
            out[m[1]] = (engine[1], engine[2])
    return out


def test_every_migration_has_a_cluster_form_the_clickhouse_parser_accepts(
    embedded_store: Store,
) -> None:
    statements = cluster_statements()
    versions = {v for v, _ in statements}
    assert versions == {0} | {m.version for m in MIGRATIONS}
    for _, sql in statements:
        text = formatted(embedded_store, sql)
        if text.startswith(("CREATE", "ALTER", "DROP", "OPTIMIZE", "TRUNCATE", "EXCHANGE")):
            assert f"ON CLUSTER {CLUSTER}" in text, text


def test_every_table_is_replicated_and_every_event_table_has_a_distributed_front_by_event(
    embedded_store: Store,
) -> None:
    tables = creates(embedded_store)
    fronts = {n: args for n, (engine, args) in tables.items() if engine == "Distributed"}
    for name, (engine, args) in tables.items():
        if engine == "Distributed":
            continue
        assert engine.startswith("Replicated") and engine.endswith("MergeTree"), (name, engine)
        path = args.split(",")[0].strip("'")
        assert path.endswith(f"/{DATABASE}/{name}"), (name, path)
        assert "'{replica}'" in args
        if name.endswith("_local"):
            assert "{shard}" in path, f"{name}: a sharded table needs a Keeper path per shard"
            assert name.removesuffix("_local") in fronts, f"{name} has no Distributed front"
        else:
            assert "{shard}" not in path, f"{name}: one copy per node, one Keeper path"
    assert fronts.keys() >= EVENT_TABLES
    for name, args in fronts.items():
        cluster, database, local, key = (a.strip() for a in args.split(",", 3))
        assert (cluster, database, local) == (CLUSTER, DATABASE, f"{name}_local")
        assert tables[local][0].startswith("Replicated")
        # every row of one event on one shard: the key is a function of (project, event) only
        assert re.fullmatch(r"cityHash64\(project_id, event_id\)", key), key


def test_claim_and_small_tables_are_on_every_node_not_sharded() -> None:
    layout = ClusterSchema.from_migrations(CLUSTER, DATABASE)
    assert layout.sharded >= EVENT_TABLES
    assert layout.replicated >= CLAIM_TABLES
    assert not layout.sharded & layout.replicated


def test_tables_keyed_by_event_are_sharded_whatever_migration_adds_them() -> None:
    layout = ClusterSchema(CLUSTER, DATABASE)
    for m in MIGRATIONS:
        for statement in m.statements:
            layout.statements(statement)
            created = re.match(
                r"\s*CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*)\)\s*ENGINE", statement, re.S
            )
            if created:
                has_event = all(re.search(rf"^\s*{c}\s", created[2], re.M) for c in SHARD_COLUMNS)
                assert (created[1] in layout.sharded) == has_event, created[1]


_REPLICATED_ARGS = re.compile(r"Replicated(\w*MergeTree)\('[^']*', '\{replica\}'(?:, )?")


def single_node_form(sql: str) -> str | None:
    """A cluster statement as one node runs it: no ON CLUSTER, plain engines, no fronts."""
    if "ENGINE = Distributed(" in sql:
        return None
    sql = sql.replace(f" ON CLUSTER {CLUSTER}", "")
    return _REPLICATED_ARGS.sub(lambda m: f"{m[1]}(", sql)


def table_shapes(store: Store, database: str) -> dict[str, dict[str, Any]]:
    tables = store._rows(
        "SELECT name, engine, sorting_key, primary_key, partition_key, create_table_query"
        " FROM system.tables WHERE database = {d:String}",
        d=database,
    )
    columns = store._rows(
        "SELECT table, name, type, default_kind, default_expression, compression_codec"
        " FROM system.columns WHERE database = {d:String} ORDER BY table, position",
        d=database,
    )
    shapes: dict[str, dict[str, Any]] = {}
    for t in tables:
        settings = re.search(r"SETTINGS (.*)$", t["create_table_query"])
        ttl = re.search(r" TTL (.*?)(?: SETTINGS|$)", t["create_table_query"])
        shapes[t["name"].removesuffix("_local")] = {
            "engine": t["engine"],
            "keys": (t["sorting_key"], t["primary_key"], t["partition_key"]),
            "settings": settings[1] if settings else "",
            "ttl": ttl[1] if ttl else "",
            "columns": [tuple(c.values())[1:] for c in columns if c["table"] == t["name"]],
        }
    return shapes


def test_local_tables_come_out_exactly_like_the_single_node_tables(embedded_store: Store) -> None:
    """Run every cluster statement (Replicated engines turned back into plain ones) on the real
    engine in a second database: columns, codecs, keys, TTL and settings equal the single-node
    schema's, so the rewrite loses nothing (a new migration is covered without a new test)."""
    own = embedded_store.database  # type: ignore[attr-defined]
    other = fresh_database()
    fronts = ClusterSchema.from_migrations(CLUSTER, DATABASE).sharded
    embedded_store._exec(f"CREATE DATABASE {other}")
    embedded_store._exec(f"USE {other}")  # the writing connection: where _exec runs
    try:
        for _, sql in cluster_statements():
            local = single_node_form(sql)
            altered = re.match(r"ALTER TABLE (\w+) ", local or "")
            if local is None or (altered and altered[1] in fronts):
                continue  # the Distributed fronts do not exist on one node
            if local.startswith("INSERT"):
                continue  # moves rows through the fronts: no shape to compare
            embedded_store._exec(local)
    finally:
        embedded_store._exec(f"USE {own}")
    single = table_shapes(embedded_store, own)
    local_shapes = table_shapes(embedded_store, other)
    assert single.keys() == local_shapes.keys()
    for name, shape in single.items():
        assert local_shapes[name] == shape, name


@pytest.fixture
def layout() -> ClusterSchema:
    return ClusterSchema.from_migrations(CLUSTER, DATABASE)


def test_materialized_views_fire_on_the_shards_local_tables_into_local_targets(
    layout: ClusterSchema,
) -> None:
    (mv,) = layout.statements(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS scored_mv TO scored AS SELECT s.project_id,"
        " s.event_id FROM scores AS s INNER JOIN responses AS r ON r.event_id = s.event_id"
    )
    assert mv.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS scored_mv ON CLUSTER {CLUSTER}")
    assert " TO scored_local " in mv
    assert "FROM scores_local AS s INNER JOIN responses_local AS r" in mv
    (to_small,) = layout.statements(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS m TO job_state (job String)"
        " AS SELECT 'x' AS job FROM responses"
    )
    assert " TO job_state (job String) AS SELECT 'x' AS job FROM responses_local" in to_small


def test_alters_reach_local_tables_and_column_changes_the_fronts_too(
    layout: ClusterSchema,
) -> None:
    on = f"ON CLUSTER {CLUSTER}"
    assert layout.statements("ALTER TABLE responses ADD INDEX IF NOT EXISTS i (x) TYPE set(0)") == [
        f"ALTER TABLE responses_local {on} ADD INDEX IF NOT EXISTS i (x) TYPE set(0)"
    ]
    assert layout.statements("ALTER TABLE scored ADD COLUMN IF NOT EXISTS c UInt8") == [
        f"ALTER TABLE scored_local {on} ADD COLUMN IF NOT EXISTS c UInt8",
        f"ALTER TABLE scored {on} ADD COLUMN IF NOT EXISTS c UInt8",
    ]
    assert layout.statements("ALTER TABLE job_state ADD COLUMN c UInt8") == [
        f"ALTER TABLE job_state {on} ADD COLUMN c UInt8"
    ]
    assert layout.statements("DELETE FROM responses WHERE project_id = {p:String}") == [
        f"DELETE FROM responses_local {on} WHERE project_id = {{p:String}}"
    ]
    assert layout.statements("OPTIMIZE TABLE scores FINAL") == [
        f"OPTIMIZE TABLE scores_local {on} FINAL"
    ]
    assert layout.statements("DROP TABLE IF EXISTS scores") == [
        f"DROP TABLE IF EXISTS scores {on} SYNC",
        f"DROP TABLE IF EXISTS scores_local {on} SYNC",
    ]
    insert = "INSERT INTO responses SELECT * FROM responses"
    assert layout.statements(insert) == [insert]


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (a UInt8) ENGINE = Memory",
        "RENAME TABLE responses TO r2",
        "ALTER TABLE nowhere ADD COLUMN c UInt8",
        "ALTER TABLE responses ADD COLUMN c UInt8, ADD INDEX i (c) TYPE minmax",
        "CREATE MATERIALIZED VIEW v ENGINE = MergeTree ORDER BY a AS SELECT 1 AS a",
    ],
)
def test_a_statement_without_a_known_cluster_form_is_refused_by_name(
    layout: ClusterSchema, sql: str
) -> None:
    with pytest.raises(UnsupportedStatement, match=re.escape(sql[:20])):
        layout.statements(sql)


def test_claims_write_to_a_quorum_and_read_with_sequential_consistency(
    layout: ClusterSchema,
) -> None:
    insert = layout.consistency_settings("INSERT INTO label_events (project_id) VALUES ('p')")
    assert insert == {"insert_quorum": "auto", "insert_quorum_parallel": 0}
    read = layout.consistency_settings("SELECT token FROM rollout_events WHERE seq = 1")
    assert read == {"select_sequential_consistency": 1}
    assert layout.consistency_settings("SELECT count() FROM responses FINAL") == {}
    assert layout.consistency_settings("INSERT INTO responses SELECT 1") == {}
    into_events = "INSERT INTO scored SELECT * FROM scores WHERE ts > (SELECT ts FROM job_state)"
    assert layout.consistency_settings(into_events) == {}  # sharded: no quorum on the shards


def test_a_cluster_name_needs_a_server_url() -> None:
    with pytest.raises(ValueError, match=r"PROMPTBLAME_CLICKHOUSE_CLUSTER: .*CLICKHOUSE_URL"):
        load_settings(clickhouse_cluster="promptblame", clickhouse_url=None)
    with pytest.raises(ValueError, match="PROMPTBLAME_CLICKHOUSE_CLUSTER"):
        load_settings(clickhouse_cluster="bad name", clickhouse_url="http://ch:8123")


# -- docker-compose.cluster.yml and its configs -----------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(CLUSTER_COMPOSE.read_text())
    found = data["services"]
    assert isinstance(found, dict)
    return found


def xml_root(path: Path) -> ET.Element:
    return ET.parse(path).getroot()  # noqa: S314 - this repository's own config file


def remote_servers() -> dict[str, list[list[str]]]:
    root = xml_root(CLICKHOUSE_XML)
    clusters: dict[str, list[list[str]]] = {}
    for cluster in root.find("remote_servers") or []:
        shards = []
        for shard in cluster.findall("shard"):
            assert shard.findtext("internal_replication") == "true", cluster.tag
            shards.append([r.findtext("host") or "" for r in shard.findall("replica")])
        clusters[cluster.tag] = shards
    return clusters


def by_command(services: dict[str, dict[str, Any]], *words: str) -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in services.items()
        if "command" in s and command_path(container_command(s)) == list(words)
    }


def test_cluster_is_two_shards_of_two_replicas_on_the_compose_nodes(
    services: dict[str, dict[str, Any]],
) -> None:
    clusters = remote_servers()
    assert list(clusters) == [CLUSTER]
    shards = clusters[CLUSTER]
    assert [len(s) for s in shards] == [2, 2]
    nodes = {n for s in shards for n in s}
    assert len(nodes) == 4 and nodes <= services.keys()
    macros = set()
    for shard_no, shard in enumerate(shards, 1):
        for host in shard:
            env = environment(services[host])
            assert int(env["CLICKHOUSE_SHARD"]) == shard_no, host
            assert env["CLICKHOUSE_REPLICA"] == host
            macros.add((env["CLICKHOUSE_SHARD"], env["CLICKHOUSE_REPLICA"]))
            mounts = " ".join(services[host]["volumes"])
            assert "deploy/cluster/clickhouse.xml:/etc/clickhouse-server/config.d/" in mounts
            assert services[host]["image"].startswith("clickhouse/clickhouse-server:")
    assert len(macros) == 4  # every replica's Keeper name is its own
    root = xml_root(CLICKHOUSE_XML)
    assert {m.tag: m.get("from_env") for m in root.find("macros") or []} == {
        "shard": "CLICKHOUSE_SHARD",
        "replica": "CLICKHOUSE_REPLICA",
    }


def test_three_keepers_form_one_raft_ensemble_the_servers_use(
    services: dict[str, dict[str, Any]],
) -> None:
    keeper = xml_root(KEEPER_XML).find("keeper_server")
    assert keeper is not None
    raft = {
        (s.findtext("id"), s.findtext("hostname"))
        for s in keeper.iter("server")
        if s.findtext("hostname")
    }
    keepers = {
        n: s for n, s in services.items() if s["image"].startswith("clickhouse/clickhouse-keeper")
    }
    assert len(keepers) == 3
    assert raft == {(environment(s)["KEEPER_SERVER_ID"], n) for n, s in keepers.items()}
    used = {n.findtext("host") for n in xml_root(CLICKHOUSE_XML).iter("node")}
    assert used == keepers.keys()


def test_several_api_processes_one_worker_and_a_migration_before_them(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    apis = by_command(services, "serve")
    workers = by_command(services, "worker")
    (migrate,) = by_command(services, "migrate").values()
    assert len(apis) >= 2
    assert (
        len(workers) == 1 and next(iter(workers.values())).get("deploy", {}).get("replicas", 1) == 1
    )
    nodes = {n for s in remote_servers()[CLUSTER] for n in s}
    for name, service in {**apis, **workers, "migrate": migrate}.items():
        settings = settings_for(service, monkeypatch, tmp_path)
        assert settings.clickhouse_cluster == CLUSTER, name
        assert (
            settings.clickhouse_url and settings.clickhouse_url.split("@")[1].split(":")[0] in nodes
        )
        if service is not migrate:
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # several api processes serving forms need one shared form key
    keys = {
        settings_for(s, monkeypatch, tmp_path).report_form_secret.get_secret_value()
        for s in apis.values()
    }
    assert len(keys) == 1 and keys != {""}


# -- ServerStore in cluster mode, through a recording double of clickhouse-connect's client ----


class RecordingClientDouble:
    """A test double of clickhouse-connect's client (no cluster can run here): records every
    statement with its settings, answers reads with empty tables, and refuses the first
    quorum insert it sees as a busy quorum would."""

    def __init__(self, log: list[tuple[str, dict[str, Any]]]) -> None:
        self.log = log
        self.busy_once = True

    def command(self, sql: str, parameters: Any = None, settings: Any = None) -> None:
        if settings and settings.get("insert_quorum") and self.busy_once:
            self.busy_once = False
            raise RuntimeError("Code: 286. DB::Exception: UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE")
        self.log.append((sql, dict(settings or {})))

    def query_arrow(self, sql: str, parameters: Any = None, settings: Any = None) -> Any:
        import pyarrow as pa

        self.log.append((sql, dict(settings or {})))
        if "token FROM" in sql:
            return pa.table({"token": ["t1"]})
        return pa.table({"version": pa.array([], pa.uint32())})

    def insert_arrow(self, table: str, data: Any, settings: Any = None) -> None:
        self.log.append((f"INSERT INTO {table}", dict(settings or {})))

    def close(self) -> None:
        pass


def test_a_server_store_on_a_cluster_migrates_on_cluster_and_claims_with_quorum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import clickhouse_connect

    from promptblame.store.server import ServerStore

    log: list[tuple[str, dict[str, Any]]] = []
    made: list[dict[str, Any]] = []

    def get_client(**kwargs: Any) -> RecordingClientDouble:
        made.append(kwargs)
        return RecordingClientDouble(log)

    monkeypatch.setattr(clickhouse_connect, "get_client", get_client)
    store = ServerStore("http://ch-s1r1:8123", "promptblame", cluster=CLUSTER)
    store.migrate()
    sent = [sql for sql, _ in log]
    assert sent[0] == f"CREATE DATABASE IF NOT EXISTS promptblame ON CLUSTER {CLUSTER}"
    expected = [sql for _, sql in cluster_statements()]
    ddl = [s for s in sent if s.startswith(("CREATE TABLE", "ALTER", "CREATE MATERIALIZED"))]
    assert ddl == [s for s in expected if s.startswith(("CREATE TABLE", "ALTER", "CREATE MAT"))]
    # every migration recorded once, the first after its quorum insert was refused and retried
    recorded = [s for s in sent if s.startswith("INSERT INTO schema_migrations")]
    assert len(recorded) == len(MIGRATIONS)
    assert made[-1]["settings"]["distributed_foreground_insert"] == 1
    assert made[-1]["settings"]["distributed_product_mode"] == "local"

    log.clear()
    won = store.claim_rollout_event(
        "p",
        {
            "rollout_id": "r1",
            "seq": 1,
            "token": "t1",
            **{k: "" for k in ("prompt_id", "label", "model", "incumbent", "candidate")},
            **{k: "" for k in ("config", "state", "action", "reason", "detail", "key_id")},
            "step": 0,
            "step_started_at": "2026-01-01 00:00:00.000",
        },
    )
    assert won
    (insert_sql, insert_settings), (read_sql, read_settings) = log
    assert "FROM rollout_events" in read_sql
    assert insert_sql.startswith("INSERT INTO rollout_events")
    assert insert_settings == {"insert_quorum": "auto", "insert_quorum_parallel": 0}
    assert read_settings == {"select_sequential_consistency": 1}
    store.close()
