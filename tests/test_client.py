"""The Python client against a live `promptblame serve`, directly and through a flaky proxy
double: every event arrives exactly once through 503s and dropped connections, the app thread
never waits on the network, overflow drops exactly what it counts, 4xx is not retried."""

from __future__ import annotations

import gc
import http.client
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from promptblame.ingest.client import Client
from tests.server_process import cli, free_port, start_server

FAST: dict[str, Any] = {"backoff_base": 0.05, "backoff_max": 0.5, "flush_interval": 0.05}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data = tmp_path_factory.mktemp("client-server")
    made = cli(data, "keys", "create", "--project", "clients")
    assert made.returncode == 0, made.stderr
    port = free_port()
    proc = start_server(data, port)
    try:
        yield f"http://127.0.0.1:{port}", made.stdout.strip()
    finally:
        proc.terminate()
        proc.wait(30)


def stored(server: tuple[str, str], app: str) -> int:
    url, key = server
    r = httpx.get(
        f"{url}/v1/versions",
        params={"app": app},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return sum(int(v["responses"]) for v in r.json()["versions"])


class FlakyProxy:
    """A test double of a bad network path in front of the real server: an HTTP proxy that,
    per POST it receives, follows `plan(n)` — "503" (answers 503 + Retry-After: 1 without
    forwarding), "413" (answers 413 without forwarding), "drop" (closes the connection
    without forwarding), "drop_after" (forwards, the server stores the batch, then closes the
    connection before answering: the client must retry and the server must deduplicate),
    "hold" (waits for `release` first), or "pass". It records each request's arrival time,
    action and forwarded events."""

    def __init__(self, upstream: str, plan: Callable[[int], str]) -> None:
        self.upstream = httpx.URL(upstream)
        self.plan = plan
        self.log: list[tuple[float, str]] = []
        self.forwarded_after_drop = 0
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy._lock:
                    action = proxy.plan(len(proxy.log))
                    proxy.log.append((time.monotonic(), action))
                if action == "503":
                    self.send_response(503)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if action == "413":
                    self.send_response(413)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if action == "drop":
                    self.close_connection = True
                    return
                if action == "hold":
                    proxy.held.set()
                    proxy.release.wait(60)
                status, headers, data = proxy.forward(self.path, body, self.headers)
                if action == "drop_after":
                    with proxy._lock:
                        proxy.forwarded_after_drop += 1
                    self.close_connection = True
                    return
                self.send_response(status)
                for k, v in headers:
                    if k.lower() in ("content-type", "retry-after"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def forward(self, path: str, body: bytes, headers: Any) -> tuple[int, Any, bytes]:
        conn = http.client.HTTPConnection(self.upstream.host, self.upstream.port, timeout=60)
        try:
            keep = ("authorization", "content-type", "content-encoding")
            conn.request(
                "POST",
                path,
                body=body,
                headers={k: v for k, v in headers.items() if k.lower() in keep},
            )
            r = conn.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            conn.close()

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def event(i: int, app: str) -> dict[str, Any]:
    return {
        "app": app,
        "model": "gpt-4o",
        "prompt_id": "answer",
        "prompt_version": "v1",
        "input": f"question {i}",
        "output": f"answer {i}",
        "latency_ms": 120.0,
    }


def test_ten_thousand_events_arrive_exactly_once_through_503s_and_dropped_connections(server):
    cycle = ["503", "drop", "drop_after", "pass", "drop_after", "pass"]
    with FlakyProxy(server[0], lambda n: cycle[n % len(cycle)] if n < 36 else "pass") as proxy:
        client = Client(proxy.url, server[1], batch_size=250, max_queue=20_000, **FAST)
        # A full garbage collection of this test process's heap (pytest, the app, pyarrow...)
        # pauses every thread for ~0.1 s; that is the interpreter, not the client, so the heap
        # that exists before the loop is frozen out of collection while it is measured.
        gc.freeze()
        durations = []
        try:
            for i in range(10_000):
                t0 = time.perf_counter()
                client.log_response(**event(i, "exactly-once"))
                durations.append(time.perf_counter() - t0)
        finally:
            gc.unfreeze()
        durations.sort()
        assert client.flush(120)
        stats = client.stats()
        client.close()

    assert stored(server, "exactly-once") == 10_000
    assert (stats.sent, stats.dropped, stats.rejected, stats.failed) == (10_000, 0, 0, 0)
    assert stats.retries >= 18 and proxy.forwarded_after_drop >= 12  # retries really happened
    # The sender meanwhile waited out 1-second Retry-Afters and dropped connections; a call
    # that waited on the network would take that long. The bound leaves room for the OS
    # descheduling this thread on a busy 2-core machine (the proxy runs in this process too).
    slowest, median = durations[-1], durations[len(durations) // 2]
    assert slowest < 0.5, f"log_response blocked the app thread for {slowest * 1000:.1f} ms"
    assert median < 0.001
    # Retry-After: 1 was honoured: the request after each 503 came at least a second later
    gaps = [b[0] - a[0] for a, b in zip(proxy.log, proxy.log[1:], strict=False) if a[1] == "503"]
    assert gaps and min(gaps) >= 0.95


def test_a_full_buffer_drops_the_newest_events_and_counts_exactly_those(server, caplog):
    with FlakyProxy(server[0], lambda n: "hold" if n == 0 else "pass") as proxy:
        client = Client(proxy.url, server[1], batch_size=10, max_queue=50, **FAST)
        client.log_response(**event(0, "overflow"))
        assert proxy.held.wait(10)  # the sender is stuck on the first batch
        with caplog.at_level(logging.WARNING, logger="promptblame.client"):
            for i in range(1, 501):
                client.log_response(**event(i, "overflow"))
        assert client.stats().dropped == 450  # 50 buffered, the 450 newest dropped
        assert "buffer full" in caplog.text
        proxy.release.set()
        assert client.flush(60)
        stats = client.stats()
        client.close()
    assert stored(server, "overflow") == 501 - stats.dropped == 51
    assert stats.sent == 51
    url, key = server
    r = httpx.get(
        f"{url}/v1/responses",
        params={"app": "overflow", "limit": 1000},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    kept = {x["output"] for x in r.json()["responses"]}
    assert kept == {f"answer {i}" for i in range(51)}  # the oldest were kept


def test_invalid_events_and_a_bad_key_are_rejected_once_not_retried(server, caplog):
    with FlakyProxy(server[0], lambda n: "pass") as proxy:
        client = Client(proxy.url, server[1], **FAST)
        with caplog.at_level(logging.ERROR, logger="promptblame.client"):
            client.log_response(**event(1, "rejects"))
            client.log_response(app="rejects", output="no model")
            assert client.flush(30)
        assert client.stats().rejected == 1 and client.stats().sent == 1
        assert "model" in caplog.text
        client.close()

        bad = Client(proxy.url, "pb_nope_nope", **FAST)
        bad.log_response(**event(2, "rejects"))
        assert bad.flush(30)
        assert (bad.stats().rejected, bad.stats().retries) == (1, 0)
        bad.close()
        assert len(proxy.log) == 2  # one request each: nothing was retried
    assert stored(server, "rejects") == 1


def test_trace_times_a_call_and_logs_errors_as_context_manager_and_decorator(server):
    url, key = server
    client = Client(url, key, app="traced", defaults={"prompt_id": "answer"}, **FAST)
    with client.trace(model="gpt-4o", prompt_version="v2", input="hi") as t:
        time.sleep(0.05)
        t.output = "hello"
        t.set(output_tokens=3)

    @client.trace(model="gpt-4o", prompt_version="v3")
    def ask(q: str) -> str:
        time.sleep(0.02)
        if q == "boom":
            raise TimeoutError("model timed out")
        return f"answer to {q}"

    assert ask("x") == "answer to x"
    with pytest.raises(TimeoutError):
        ask("boom")
    assert client.flush(30)
    client.close()

    r = httpx.get(
        f"{url}/v1/responses",
        params={"app": "traced"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    rows = {(x["prompt_version"], x["status"]): x for x in r.json()["responses"]}
    assert set(rows) == {("v2", "ok"), ("v3", "ok"), ("v3", "error")}
    first = rows[("v2", "ok")]
    assert first["event_id"] == t.event_id and first["prompt_id"] == "answer"
    assert (first["output"], first["output_tokens"]) == ("hello", 3)
    assert 50 <= first["latency_ms"] < 5_000
    assert rows[("v3", "ok")]["output"] == "answer to x"
    assert rows[("v3", "error")]["error_type"] == "TimeoutError"


def test_events_still_buffered_at_interpreter_exit_are_sent(server, tmp_path: Path):
    url, key = server
    script = textwrap.dedent(
        f"""
        from promptblame.ingest.client import Client
        c = Client({url!r}, {key!r}, app="at-exit", flush_interval=60)
        for i in range(300):
            c.log_response(model="gpt-4o", output=str(i))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, cwd=tmp_path)
    assert stored(server, "at-exit") == 300


def test_a_batch_refused_as_too_large_is_resent_in_halves_and_odd_values_sink_only_their_event(
    server,
):
    with FlakyProxy(server[0], lambda n: "413" if n == 0 else "pass") as proxy:
        client = Client(proxy.url, server[1], batch_size=100, flush_interval=5, backoff_base=0.05)
        for i in range(99):
            client.log_response(**{**event(i, "halves"), "latency_ms": Decimal("12.5")})
        client.log_response(
            **{**event(99, "halves"), "tags": {"x": object()}, "cost_usd": object()}
        )
        assert client.flush(30)
        stats = client.stats()
        client.close()
        assert [a for _, a in proxy.log] == ["413", "pass", "pass"]
    assert (stats.sent, stats.rejected, stats.failed) == (99, 1, 0)
    assert stored(server, "halves") == 99
