"""kill -9 the server mid-stream, restart on the same data directory: every event that got a
2xx is there exactly once, and clients' retries of what was not acknowledged add no copies."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.helpers import auth, body, event
from tests.server_process import cli, free_port, start_server

CLIENTS = 4
BATCH = 200


def test_acknowledged_events_survive_kill_9_exactly_once(tmp_path):
    data = tmp_path / "data"
    created = cli(data, "keys", "create", "--project", "crash")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    port = free_port()
    server = start_server(data, port)
    url = f"http://127.0.0.1:{port}/v1/responses"

    acked: list[set[str]] = [set() for _ in range(CLIENTS)]
    unacked: list[list[list[dict]]] = [[] for _ in range(CLIENTS)]
    stop = threading.Event()

    def client(c: int) -> None:
        n = 0
        with httpx.Client(timeout=10) as http:
            while not stop.is_set() and n < 10_000:
                items = [event(c * 100_000 + n + i) for i in range(BATCH)]
                n += BATCH
                try:
                    r = http.post(url, content=body("responses", items), headers=auth(key))
                except httpx.HTTPError:
                    unacked[c].append(items)
                    continue
                if r.status_code == 200:
                    acked[c].update(e["event_id"] for e in items)
                else:
                    unacked[c].append(items)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while sum(map(len, acked)) < 4_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.send_signal(signal.SIGKILL)  # mid-stream: clients are still posting
    server.wait()
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    acknowledged = set().union(*acked)
    assert len(acknowledged) >= 4_000
    assert any(unacked), "the kill should have caught some requests in flight"

    server = start_server(data, port)
    try:
        with httpx.Client(timeout=30) as http:
            # clients retry what was not acknowledged, and re-send one acknowledged batch
            for c in range(CLIENTS):
                for items in unacked[c]:
                    r = http.post(url, content=body("responses", items), headers=auth(key))
                    assert r.status_code == 200
            again = [event(int(eid.removeprefix("evt-"))) for eid in sorted(acked[0])[:BATCH]]
            assert http.post(url, content=body("responses", again), headers=auth(key)).is_success

            stored: list[str] = []
            cursor = None
            while True:
                params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                page = http.get(
                    f"http://127.0.0.1:{port}/v1/responses", params=params, headers=auth(key)
                ).json()
                stored += [r["event_id"] for r in page["responses"]]
                if not (cursor := page["next_cursor"]):
                    break
            versions = http.get(f"http://127.0.0.1:{port}/v1/versions", headers=auth(key)).json()[
                "versions"
            ]
    finally:
        server.terminate()
        server.wait(30)

    sent = acknowledged | {e["event_id"] for c in unacked for items in c for e in items}
    assert len(stored) == len(set(stored)), "an event is listed twice"
    assert acknowledged <= set(stored), "an acknowledged event was lost"
    assert set(stored) == sent
    assert sum(v["responses"] for v in versions) == len(sent)
