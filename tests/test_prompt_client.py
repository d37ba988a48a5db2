"""The Python client's get_prompt against a live server, a hanging one and none: cache hits,
background refresh, last good copy, bundled fallback, bounded waits, and responses tagged with
exactly what was served."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from promptblame.ingest.client import Client
from promptblame.ingest.prompt_cache import Prompt, PromptNotFound, PromptUnavailable
from tests.server_process import cli, free_port, start_server

V1 = 'Answer {{ question }} as JSON like {"answer": "..."}.'
V2 = "Answer {{question}} briefly."


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data = tmp_path_factory.mktemp("prompt-client") / "data"
    key = cli(data, "keys", "create", "--project", "app", "--scopes", "ingest,read,admin")
    assert key.returncode == 0, key.stderr
    port = free_port()
    server = start_server(data, port)
    url, k = f"http://127.0.0.1:{port}", key.stdout.strip()
    h = {"Authorization": f"Bearer {k}"}
    for v, text in (("v1", V1), ("v2", V2)):
        r = httpx.put(f"{url}/v1/prompts/answer/versions/{v}", json={"template": text}, headers=h)
        assert r.status_code == 201
    move(url, k, "v1")
    try:
        yield url, k
    finally:
        server.terminate()
        server.wait(timeout=30)


def move(url: str, key: str, version: str) -> None:
    r = httpx.put(
        f"{url}/v1/prompts/answer/labels/staging",
        json={"version": version},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text


def test_format_fills_double_brace_variables_and_names_a_missing_one():
    p = Prompt("answer", "v1", V1, "staging")
    assert p.variables == ("question",)
    assert p.format(question="Why?") == 'Answer Why? as JSON like {"answer": "..."}.'
    with pytest.raises(KeyError, match="answer@v1 needs question"):
        p.format(topic="x")


def test_a_resolved_prompt_is_cached_refreshed_in_the_background_and_logged_as_served(live):
    url, key = live
    move(url, key, "v1")
    with Client(url, key, app="bot", prompt_cache_ttl=0.3) as pb:
        p = pb.get_prompt("answer", label="staging")
        assert (p.version, p.template, p.is_fallback) == ("v1", V1, False)
        assert pb.get_prompt("answer", label="staging") is p  # a hit: no request
        move(url, key, "v2")
        time.sleep(0.4)
        assert pb.get_prompt("answer", label="staging") is p  # stale, served at once
        deadline = time.monotonic() + 5
        while pb.get_prompt("answer", label="staging").version != "v2":
            assert time.monotonic() < deadline, "the background refresh never landed"
            time.sleep(0.05)
        served = pb.get_prompt("answer", label="staging")
        with pb.trace(prompt=served, model="gpt-4o", event_id="served-1") as t:
            t.output = "ok"
        assert pb.flush(10)
    r = httpx.get(
        f"{url}/v1/responses",
        params={"prompt_id": "answer"},
        headers={"Authorization": f"Bearer {key}"},
    )
    (row,) = [x for x in r.json()["responses"] if x["event_id"] == "served-1"]
    assert (row["prompt_id"], row["prompt_version"]) == ("answer", "v2")
    assert row["tags"] == {"prompt_label": "staging"}


def test_an_unknown_prompt_or_label_raises_prompt_not_found(live):
    url, key = live
    with Client(url, key, app="bot") as pb:
        with pytest.raises(PromptNotFound, match="nope"):
            pb.get_prompt("nope", label="staging")
        with pytest.raises(PromptNotFound, match="canary"):
            pb.get_prompt("answer", label="canary")


@pytest.fixture
def hanging() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    t.join()
    for c in held:
        c.close()
    sock.close()


def test_a_hanging_server_never_blocks_longer_than_the_timeout(hanging, tmp_path: Path):
    bundle = tmp_path / "prompts.json"
    bundle.write_text(
        json.dumps(
            [
                {
                    "prompt_id": "answer",
                    "label": "production",
                    "version": "v7",
                    "template": "bundled {{q}}",
                }
            ]
        )
    )
    with Client(hanging, "pb_x_y", prompt_timeout=0.3, prompt_fallback_file=bundle) as pb:
        started = time.monotonic()
        p = pb.get_prompt("answer")
        took = time.monotonic() - started
        assert (p.version, p.template, p.is_fallback) == ("v7", "bundled {{q}}", True)
        assert took < 1.5, f"waited {took:.2f} s with a 0.3 s timeout"
        text = pb.get_prompt("other", fallback="inline {{q}}")
        assert (text.version, text.template, text.is_fallback) == ("", "inline {{q}}", True)
        with pytest.raises(PromptUnavailable, match=r"0\.3 s"):
            pb.get_prompt("third")
        with pb.trace(prompt=p, model="m") as t:
            t.output = "x"
        assert t.fields["prompt_version"] == "v7"
        assert t.fields["tags"] == {"prompt_label": "production", "prompt_fallback": "true"}


def test_the_last_good_copy_outlives_the_server(tmp_path: Path):
    data = tmp_path / "data"
    key = cli(data, "keys", "create", "--project", "app", "--scopes", "ingest,read,admin")
    port = free_port()
    server = start_server(data, port)
    url, k = f"http://127.0.0.1:{port}", key.stdout.strip()
    h = {"Authorization": f"Bearer {k}"}
    try:
        httpx.put(f"{url}/v1/prompts/answer/versions/v1", json={"template": V1}, headers=h)
        move(url, k, "v1")
        pb = Client(url, k, prompt_cache_ttl=0.1, prompt_timeout=0.5)
        assert pb.get_prompt("answer", label="staging").version == "v1"
    finally:
        server.terminate()
        server.wait(timeout=30)
    time.sleep(0.2)
    for _ in range(3):  # expired, the server gone: the last good copy, not a fallback
        p = pb.get_prompt("answer", label="staging")
        assert (p.version, p.is_fallback) == ("v1", False)
        time.sleep(0.1)
    pb.close(timeout=0.5)
