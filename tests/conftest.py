"""Shared fixtures: real stores only.

Embedded tests share one chDB data path per test session (chDB allows one path per process) and
get a fresh database each, so they never see each other's rows. The server-store leg runs the
same tests through clickhouse-connect against PROMPTBLAME_TEST_CLICKHOUSE_URL when it is set,
else against tests/clickhouse_double.py — a ClickHouse-HTTP-compatible test double backed by
chDB in a subprocess (see its docstring for what it does and does not prove).
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from promptblame.api.app import create_app
from promptblame.api.auth import new_key
from promptblame.settings import Settings
from promptblame.store import Store, open_store
from promptblame.store.embedded import EmbeddedStore

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session")
def clickhouse_url() -> Iterator[str]:
    """A ClickHouse HTTP endpoint: a real server if configured, else the chDB-backed double."""
    real = os.environ.get("PROMPTBLAME_TEST_CLICKHOUSE_URL")
    if real:
        yield real
        return
    from tests.clickhouse_double import running_double

    with running_double() as url:
        yield url


def fresh_database() -> str:
    return f"t{os.getpid()}_{next(_db_counter)}"


@pytest.fixture
def embedded_settings(chdb_path: Path) -> Settings:
    return Settings(data_dir=chdb_path, database=fresh_database())


def close_and_drop(store: Store) -> None:
    """Close a test's store, dropping its embedded database first: chDB attaches every database
    of the shared data path on each open (~20 ms each), so the databases earlier tests left
    behind made each later open slower (~6 s late in the suite)."""
    if isinstance(store, EmbeddedStore):
        store.save_marks()  # now, so that close has none to write into the dropped database
        store._command(f"DROP DATABASE IF EXISTS {store.database} SYNC")
    store.close()


@pytest.fixture
def embedded_store(embedded_settings: Settings) -> Iterator[Store]:
    store = open_store(embedded_settings)
    yield store
    close_and_drop(store)


@pytest.fixture(params=["embedded", "server"])
def any_store(request: pytest.FixtureRequest, chdb_path: Path) -> Iterator[Store]:
    """Each contract test runs once per transport."""
    if request.param == "embedded":
        settings = Settings(data_dir=chdb_path, database=fresh_database())
    else:
        url = request.getfixturevalue("clickhouse_url")
        settings = Settings(clickhouse_url=url, database=fresh_database())
    store = open_store(settings)
    yield store
    close_and_drop(store)


@pytest.fixture
def client(embedded_settings: Settings, embedded_store: Store) -> Iterator[TestClient]:
    """The API on a fresh embedded database, lifespan running."""
    with TestClient(create_app(embedded_settings, embedded_store)) as c:
        yield c


@pytest.fixture
def key(embedded_store: Store) -> str:
    """An ingest+read key of project "acme"."""
    plaintext, record = new_key("acme", ["ingest", "read"])
    embedded_store.put_api_key(record)
    return plaintext


@dataclass(frozen=True)
class DemoRun:
    done: subprocess.CompletedProcess[str]  # exit code, stdout and stderr
    data: Path  # its --data-dir: demo-key.txt, store/


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`promptblame demo --no-serve`, run once per session (it takes most of a minute):
    test_demo.py checks its output and runs its printed commands, test_reports_demo_browser.py
    serves its store. Neither changes what the other checks: the printed commands only read,
    and the browser tests add a read key and acknowledge one incident, which the printed
    commands' checks do not look at."""
    from tests.server_process import CLI, env_for, free_port

    root = tmp_path_factory.mktemp("demo")
    done = subprocess.run(
        [*CLI, "demo", "--data-dir", str(root / "d"), "--port", str(free_port()), "--no-serve"],
        env=env_for(root / "unused"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return DemoRun(done, root / "d")
