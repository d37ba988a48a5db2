"""The CLI: keys are printed once and stored hashed; commands that need the data directory
while `serve` holds it fail with a clear message, not a crash."""

from __future__ import annotations

import httpx
from click.testing import CliRunner

from promptblame.api.cli import main
from tests.server_process import cli, free_port, start_server


def test_keys_create_prints_a_working_key_and_list_shows_it_without_the_secret(tmp_path):
    data = tmp_path / "d"
    created = cli(data, "keys", "create", "--project", "shop", "--scopes", "read", "--name", "ci")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("pb_") and "shown once" in created.stderr
    listed = cli(data, "keys", "list")
    assert "shop\tread\tactive\tci" in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout
    key_id = key.split("_")[1]
    assert cli(data, "keys", "revoke", key_id).returncode == 0
    assert "revoked" in cli(data, "keys", "list").stdout


def test_keys_create_while_serve_holds_the_data_directory_explains_instead_of_crashing(
    tmp_path,
):
    data = tmp_path / "d"
    port = free_port()
    server = start_server(data, port)
    try:
        r = cli(data, "keys", "create", "--project", "shop")
        assert r.returncode == 1
        assert "in use by pid" in r.stderr and "promptblame serve" in r.stderr
        assert "Traceback" not in r.stderr
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        server.terminate()
        server.wait(30)


def test_bad_scopes_and_bad_settings_are_named():
    r = CliRunner().invoke(main, ["keys", "create", "--project", "p", "--scopes", "root"])
    assert r.exit_code == 2 and "scopes must be some of ingest, read, admin" in r.output
    r = CliRunner().invoke(main, ["migrate"], env={"PROMPTBLAME_PORT": "http"})
    assert r.exit_code == 1 and "PROMPTBLAME_PORT: Input should be a valid integer" in r.output
    r = CliRunner().invoke(main, ["serve", "--port", "70000"])
    assert r.exit_code == 1 and "PROMPTBLAME_PORT" in r.output
    r = CliRunner().invoke(main, ["worker"])
    assert r.exit_code == 1 and "PROMPTBLAME_CLICKHOUSE_URL" in r.output
