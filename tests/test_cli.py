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


def test_a_data_directory_without_a_store_is_an_error_not_an_empty_all_clear(tmp_path):
    """`report overview` on the wrong directory once wrote "No open incidents" with exit 0."""
    data = tmp_path / "nothing-here"
    out = tmp_path / "x.html"
    for args in (
        ("report", "overview", "--project", "demo", "--out", str(out)),
        ("incidents", "list"),
        ("keys", "list"),
        ("detect",),
    ):
        r = cli(data, *args)
        assert r.returncode == 1, (args, r.stderr)
        assert "holds no promptblame store" in r.stderr and "PROMPTBLAME_DATA_DIR" in r.stderr
    assert not out.exists() and not (data / "metadata").exists()
    assert cli(data, "migrate").returncode == 0  # the explicit way to create one
    assert cli(data, "incidents", "list").returncode == 0


def test_incidents_list_and_show_read_the_store_and_version_and_help_are_whole(tmp_path):
    from promptblame import __version__
    from promptblame.settings import Settings
    from promptblame.store import open_store
    from tests.test_reports import report_traffic

    data = tmp_path / "d"
    store = open_store(Settings(data_dir=data))
    try:
        incident_id = report_traffic(store)
    finally:
        store.close()
    listed = cli(data, "incidents", "list", "--project", "acme")
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith(incident_id))
    assert "critical" in line and "Prompt answer@v2 regressed correct on bot by -22.5 pt" in line
    shown = cli(data, "incidents", "show", incident_id, "--project", "acme")
    assert shown.returncode == 0 and "The arrival of prompt answer@v2" in shown.stdout
    assert "bucket" not in shown.stdout and "2026-" in shown.stdout
    missing = cli(data, "incidents", "show", "nope", "--project", "acme")
    assert missing.returncode == 1 and "no incident 'nope'" in missing.stderr
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(main, ["--help"], terminal_width=80)
    commands = r.output.split("Commands:")[1]
    assert "..." not in commands and "incidents" in commands


def test_detect_prints_the_series_it_cannot_analyse_and_why(tmp_path):
    from datetime import UTC, datetime, timedelta

    from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
    from promptblame.ingest.rows import responses_table, scores_table
    from promptblame.settings import Settings
    from promptblame.store import open_store

    data = tmp_path / "d"
    store = open_store(Settings(data_dir=data))
    now = datetime.now(UTC)
    try:
        events = [
            ResponseEvent(
                event_id=f"t{i}", ts=now - timedelta(hours=5 * i + 1), app="tiny", model="m"
            )
            for i in range(30)
        ]
        scores = [ScoreEvent(event_id=f"t{i}", name="helpful", value=1.0) for i in range(30)]
        store.insert("responses", responses_table("shop", events, now))
        store.insert("scores", scores_table("shop", scores, now))
        store.materialize_scores()
    finally:
        store.close()
    r = cli(data, "detect")
    assert r.returncode == 0, r.stderr
    assert "not analysed  shop  tiny helpful (app): too few scores, 30 scores in the window" in (
        r.stdout
    )
    assert "0 series; 1 not analysed (too little data)" in r.stderr
    r = cli(data, "detect", "--project", "shop")  # one project: its name is not repeated
    assert "not analysed  tiny helpful (app): too few scores" in r.stdout


def test_one_detection_pass_runs_in_process_unless_the_worker_processes_are_set():
    """A one-shot `promptblame detect` does not repay starting the worker pool."""
    from promptblame.api.cli import _one_pass
    from promptblame.settings import Settings

    assert Settings().detection_processes == 0  # the server's default: one worker per core
    assert _one_pass(Settings()).detection_processes == 1
    assert _one_pass(Settings(detection_processes=0)).detection_processes == 0  # asked for
    assert _one_pass(Settings(detection_processes=3)).detection_processes == 3
