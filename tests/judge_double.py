"""A test double of an OpenAI-compatible chat-completions endpoint, for the LLM judge.

It is not a model: each request is answered by `behaviour(request_json, call_number)`, which
returns (status, body-or-None); None drops the connection without an answer. It records every
request it got, so tests can check what the judge sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Behaviour = Callable[[dict[str, Any], int], tuple[int, Any]]


def completion(
    content: str, prompt_tokens: int = 100, completion_tokens: int = 10
) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


@contextmanager
def judge_double(behaviour: Behaviour) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Yields (base_url, requests received)."""
    received: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                received.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), **body}
                )
                n = len(received)
            status, answer = behaviour(body, n)
            if answer is None:
                self.close_connection = True
                self.connection.close()
                return
            raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the judge gave up waiting (timeout tests)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", received
    finally:
        server.shutdown()
        server.server_close()
