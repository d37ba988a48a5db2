"""Soak with faults: mixed ingest at half capacity while the server is killed, cut off and flooded.

Run from the repository root (default 10 minutes of load, plus ~1 minute of set-up, two quiet
windows of ~1 minute and ~1-2 minutes of checks; needs the dev extra for opentelemetry-sdk):

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--load 0.5] [--seed 9]

What it does (loopback only, bounded in time and in count):

1. builds the traffic once: JSON batches of 1,000 events (~1.5 KB each, timestamps over the last
   72 hours, with a real regression in them: prompt v14 on helpdesk /refunds, 24 hours ago,
   stops citing the policy), 4,000-event burst batches, OTLP protobuf requests of 512 LLM spans
   (encoded by the real opentelemetry SDK), and a pool of events for the Python client;
2. calibrates: a throw-away `promptblame serve` takes unpaced JSON, then OTLP, from 4 threads for
   a few seconds each; capacity = acknowledged events/s (skipped when every --*-rate is given);
3. starts the server under test (embedded chDB; scoring every 10 s, detection every 20 s,
   write queue capped at 5,000 rows), applies two evaluators through PUT /v1/evaluators;
4. for --minutes, paced at --load of capacity (JSON 50 % of that budget, OTLP 30 %, the Python
   client 20 %), every sender holding one batch until it is acknowledged and retrying it with
   the same event ids — the same bytes — after connection errors, 5xx and 503 (after
   Retry-After), as a real client does; meanwhile
   - a reader GETs the report pages (/reports/ and an incident), /v1/incidents, /v1/versions
     with a metric, /v1/jobs, /v1/responses and /metrics, one round every 10 s;
   - the killer `kill -9`s the server (with the embedded store that is the whole process: API,
     writer, jobs and engine) and starts it again on the same data directory: after a first
     lifetime of 3 minutes, every 30-60 s, then leaves the last 3 minutes alone;
   - the dropper cuts connections mid-request every 2-6 s, in turn: half the body sent then
     closed; whole body sent then closed before the answer; whole body then a TCP reset;
   - the burster sends 8 parallel 4,000-event batches 5-12 s after every start and then every
     30-60 s, to fill the write queue (503 + Retry-After);
   - the server's RSS (with its OTLP worker processes) is sampled every second of every
     lifetime; 90 s into each of the two long
     lifetimes (RSS climbs for ~90 s after a start) the load pauses for a quiet window: every
     batch in hand and the client's buffer delivered, a scoring run with nothing left, then
     40 s of samples with only the scheduled jobs running (--minutes counts load time only);
5. stops the faults, lets every sender finish its batch, waits for a scoring run that finds
   nothing left to score and a detection run after it, reads the counts through the API, stops
   the server cleanly (SIGTERM), opens the store directly and checks: each acknowledged event
   present exactly once (FINAL, as the product reads), nothing stored that was never sent,
   scores unique per (event, metric, source) in `scores` and in `scored` (what analysis reads),
   scores all materialized, incidents unique (no two for one shift, as the detection job's
   merge defines it), each incident's revision recorded, job runs in every lifetime, no
   unhandled exception in the server log, no OTLP worker process outliving its killed server;
   memory: the quiet floor (lower quartile of RSS) after
   the load vs after warm-up in the same process, and after warm-up in the last vs the first
   lifetime, each ≤ +10 % (under load the floor follows the work in flight — client backlog
   after a kill, bursts — so that figure is printed, not judged).
   Prints the figures, PASS/FAIL per criterion, and exits 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from ingest import (  # benchmarks/ingest.py (the script's directory is on sys.path)
    HOST,
    SLOT,
    _text,
    cli,
    free_port,
    machine_cpu,
    mib,
    ms,
    percentile,
    pid_cpu,
    proc_status,
    process_cpu,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from otlp import children  # benchmarks/otlp.py
from otlp import make_bodies as make_otlp_bodies

from promptblame.ingest.client import Client

PROJECT = "soak"
JSON_BATCH = 1_000
BURST_BATCH = 4_000
BURST_REQUESTS = 8
OTLP_BATCH = 512
JSON_SENDERS = 6
OTLP_SENDERS = 3
CATCH_UP_S = 10.0
HOURS = 72  # event timestamps: the last 72 hours
REGRESSION_AGE_H = 24  # helpdesk /refunds moves to prompt v14 24 h before the start
SCORING_INTERVAL = 10
DETECTION_INTERVAL = 20
SCORED_REFRESH = 10
# RSS climbs for ~90 s after a start (caches, first merges, the allocator's arenas) before it
# levels off; the first and last lifetimes are kept long enough to judge what follows.
WARM_UP_S = 90.0
RSS_WINDOW_S = 30.0
QUIET_S = 40.0  # after the load and the catch-up: the floor a leak would raise
RSS_LIMIT = 0.10  # growth allowed after warm-up
METRIC = "cites_policy"

EVALUATORS = {
    "evaluators": [
        {
            "name": METRIC,
            "kind": "contains",
            "params": {"values": ["policy section"], "mode": "any"},
            "sample_rate": 0.2,
        },
        {
            "name": "not_too_long",
            "kind": "length",
            "params": {"max": 900},
            "sample_rate": 0.2,
        },
    ]
}

_APPS = ("helpdesk", "docs-qa", "sales-assist")
_ROUTES = ("/refunds", "/chat", "/answer")
_MODELS = (("gpt-4o-mini", "2024-07-18", "openai"), ("claude-sonnet-4", "20250514", "anthropic"))
_TAGS = {"tier": ("free", "pro", "enterprise"), "region": ("us-east-1", "eu-west-1")}


# --------------------------------------------------------------------------------------------
# Traffic
# --------------------------------------------------------------------------------------------


def soak_event(rng: random.Random, now: datetime) -> dict[str, Any]:
    """One response event (no event_id) somewhere in the last 72 hours."""
    age_h = rng.uniform(0, HOURS)
    app, route = rng.choice(_APPS), rng.choice(_ROUTES)
    model, model_version, provider = rng.choice(_MODELS)
    version, cites = "v13", 0.85
    if app == "helpdesk" and route == "/refunds" and age_h < REGRESSION_AGE_H:
        version, cites = "v14", 0.45
    output = ("Per policy section 4.2, " if rng.random() < cites else "") + _text(rng, 650)
    question = _text(rng, 600)
    return {
        "ts": (now - timedelta(hours=age_h)).isoformat(timespec="milliseconds"),
        "app": app,
        "route": route,
        "environment": "prod",
        "prompt_id": "answer",
        "prompt_version": version,
        "model": model,
        "model_version": model_version,
        "provider": provider,
        "input": question,
        "output": output,
        "latency_ms": round(rng.lognormvariate(6.5, 0.6), 1),
        "input_tokens": len(question) // 4,
        "output_tokens": len(output) // 4,
        "tags": {k: rng.choice(v) for k, v in _TAGS.items()},
    }


def json_templates(
    rng: random.Random, prefix: str, *, n: int, batch: int, now: datetime
) -> list[bytes]:
    """`{"responses": [...]}` bodies whose event ids are `<prefix>-<SLOT>-<i:05d>`."""
    slot = SLOT.decode()
    out = []
    for _ in range(n):
        events = [
            {"event_id": f"{prefix}-{slot}-{i:05d}", **soak_event(rng, now)} for i in range(batch)
        ]
        out.append(json.dumps({"responses": events}, separators=(",", ":")).encode())
    return out


@dataclass
class Batch:
    """One request's worth of events; `key` is what its event ids start with."""

    stream: str  # json, burst, drop, otlp
    key: str
    body: bytes
    events: int


class Source:
    """Fresh batches of one stream: a template with the slot replaced by a new sequence number."""

    def __init__(self, stream: str, templates: list[bytes], events: int, prefix: str) -> None:
        self.stream, self.templates, self.events, self.prefix = stream, templates, events, prefix
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def next(self) -> Batch:
        with self._lock:
            seq = next(self._seq)
        if self.stream == "otlp":  # trace id = 8 bytes of sequence + 8 random bytes
            slot = seq.to_bytes(8, "big")
            key = "otel:" + slot.hex()
        else:
            slot = b"%08x" % seq
            key = f"{self.prefix}-{slot.decode()}"
        body = self.templates[seq % len(self.templates)].replace(SLOT, slot)
        return Batch(self.stream, key, body, self.events)


def batch_key_sql() -> str:
    """The batch key of an event id, in SQL (see Source.next)."""
    return (
        "if(startsWith(event_id, 'otel:'), substring(event_id, 1, 21),"
        " substring(event_id, 1, length(event_id) - 6))"
    )


# --------------------------------------------------------------------------------------------
# Book-keeping
# --------------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What was sent, acknowledged, retried; shared by every sender thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    paused: threading.Event = field(default_factory=threading.Event)  # quiet RSS windows
    inflight: int = 0  # batches being delivered now
    sent: dict[str, int] = field(default_factory=dict)  # batch key -> events
    acked: set[str] = field(default_factory=set)
    abandoned: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    attempt_latency: dict[str, list[float]] = field(default_factory=dict)  # successful attempt
    ack_latency: dict[str, list[float]] = field(default_factory=dict)  # first attempt -> ack
    errors: list[str] = field(default_factory=list)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def error(self, text: str) -> None:
        with self.lock:
            self.counts["unexpected"] += 1
            if len(self.errors) < 20:
                self.errors.append(text)

    def events(self, keys: set[str] | None = None, streams: tuple[str, ...] = ()) -> int:
        with self.lock:
            pool = self.sent if keys is None else {k: self.sent[k] for k in keys}
            return sum(n for k, n in pool.items() if not streams or _stream(k) in streams)


def _stream(key: str) -> str:
    return "otlp" if key.startswith("otel:") else key.split("-")[0][-1:]


@dataclass
class Lifetime:
    index: int
    pid: int
    spawned: float  # monotonic
    healthy: float = 0.0  # monotonic, when /healthz first answered
    healthy_utc: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended: float = 0.0
    how: str = ""  # kill -9 / SIGTERM
    rss: list[tuple[float, int]] = field(default_factory=list)  # (s since healthy, bytes)
    cpu: float = 0.0  # CPU seconds, last sampled


class Server:
    """`promptblame serve` on a fixed loopback port and data dir, started again after kills."""

    def __init__(self, data_dir: Path, log_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTBLAME_")}
        self.env |= {
            "PROMPTBLAME_DATA_DIR": str(data_dir),
            "PROMPTBLAME_HOST": HOST,
            "PROMPTBLAME_PORT": str(self.port),
            "PROMPTBLAME_LOG_LEVEL": "WARNING",
            **env,
        }
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.lifetimes: list[Lifetime] = []
        self.killed_workers: list[int] = []  # OTLP worker processes of killed servers

    def create_key(self) -> str:
        out = subprocess.run(
            cli("keys", "create", "--project", PROJECT, "--scopes", "ingest,read,admin"),
            env=self.env,
            capture_output=True,
            check=True,
            timeout=120,
        )
        return out.stdout.decode().splitlines()[0].strip()

    def start(self, timeout: float = 120) -> Lifetime:
        with self.log_path.open("ab") as log:
            log.write(f"---- start {len(self.lifetimes)} {datetime.now(UTC)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cli("serve"), env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        life = Lifetime(len(self.lifetimes), self.proc.pid, time.monotonic())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if get(self.port, "/healthz", timeout=5)[0] == 200:
                    life.healthy, life.healthy_utc = time.monotonic(), datetime.now(UTC)
                    self.lifetimes.append(life)
                    return life
            time.sleep(0.1)
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError(f"server did not answer /healthz in {timeout:.0f} s:\n{self.tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.killed_workers += children(self.proc.pid)  # they must exit with their server
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.lifetimes[-1].ended, self.lifetimes[-1].how = time.monotonic(), "kill -9"

    def stop(self, timeout: float = 120) -> int | None:
        """SIGTERM (uvicorn: graceful; the writer drains, jobs finish). Exit code, None if it
        had to be killed."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        if self.lifetimes and not self.lifetimes[-1].ended:
            self.lifetimes[-1].ended, self.lifetimes[-1].how = time.monotonic(), "SIGTERM"
        return code

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def get(port: int, path: str, *, key: str = "", timeout: float = 60) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one GET on a fresh connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    t0 = time.perf_counter()
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        resp = conn.getresponse()
        return resp.status, resp.read(), time.perf_counter() - t0
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Senders: hold a batch until it is acknowledged, retry it as the same bytes
# --------------------------------------------------------------------------------------------

_PATHS = {"otlp": "/v1/traces"}
_TYPES = {"otlp": "application/x-protobuf"}


class Sender:
    def __init__(self, port: int, key: str, ledger: Ledger, abandon: threading.Event) -> None:
        self.port, self.key, self.ledger, self.abandon = port, key, ledger, abandon
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def deliver(self, b: Batch) -> bool:
        """POST until a 2xx; True when acknowledged, False when abandoned at the end."""
        led = self.ledger
        with led.lock:
            led.sent[b.key] = b.events
            led.inflight += 1
        try:
            return self._deliver(b)
        finally:
            with led.lock:
                led.inflight -= 1

    def _deliver(self, b: Batch) -> bool:
        led = self.ledger
        headers = {
            "Content-Type": _TYPES.get(b.stream, "application/json"),
            "Authorization": f"Bearer {self.key}",
        }
        path = _PATHS.get(b.stream, "/v1/responses")
        first = time.perf_counter()
        attempt = 0
        while True:
            if attempt:
                led.count("retries")
                led.count(f"retries:{b.stream}")
            attempt += 1
            if self.abandon.is_set():
                with led.lock:
                    led.abandoned.add(b.key)
                return False
            t0 = time.perf_counter()
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
                self.conn.request("POST", path, body=b.body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self.close()
                led.count("connection errors")
                time.sleep(random.uniform(0.1, 0.4))
                continue
            if resp.status == 200:
                done = time.perf_counter()
                if b.stream == "otlp":
                    rejected = ExportTraceServiceResponse.FromString(
                        data
                    ).partial_success.rejected_spans
                    if rejected:
                        led.error(f"{b.key}: {rejected} spans rejected")
                with led.lock:
                    led.acked.add(b.key)
                    led.attempt_latency.setdefault(b.stream, []).append(done - t0)
                    led.ack_latency.setdefault(b.stream, []).append(done - first)
                return True
            if resp.status in (503, 429):  # queue full / rate limited: retry after Retry-After
                led.count(str(resp.status))
                led.count(f"{resp.status}:{b.stream}")
                time.sleep(float(resp.getheader("Retry-After") or 1))
                continue
            if resp.status >= 500:
                led.error(f"{b.key}: HTTP {resp.status} {data[:300]!r}")
                time.sleep(1)
                continue
            # 207 / 4xx: the events themselves were refused — a bug in this script or the server
            led.error(f"{b.key}: HTTP {resp.status} {data[:300]!r}")
            with led.lock:
                led.abandoned.add(b.key)
            return False


def paced(
    source: Source,
    rate: float,
    sender: Sender,
    stop: threading.Event,
) -> None:
    """Batches of `source` at `rate` events/s until `stop`; the batch in hand is finished."""
    interval = source.events / rate
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            if sender.ledger.paused.is_set():  # a quiet window: no new batches, no catch-up
                stop.wait(0.2)
                next_at = time.monotonic()
                continue
            sender.deliver(source.next())
            # after an outage, catch up on at most CATCH_UP_S of missed batches, as an app
            # with a bounded backlog would
            next_at = max(next_at + interval, time.monotonic() - CATCH_UP_S)
            stop.wait(max(0.0, next_at - time.monotonic()))
    finally:
        sender.close()


def unpaced(source: Source, sender: Sender, until: float) -> None:
    try:
        while time.monotonic() < until:
            sender.deliver(source.next())
    finally:
        sender.close()


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------

DROP_MODES = ("half body, then close", "whole body, close before the answer", "whole body, RST")


def drop_connection(port: int, key: str, b: Batch, mode: int, rng: random.Random) -> bool:
    """Send `b` on a raw socket and cut the connection as `DROP_MODES[mode]` says. False when
    the server was not reachable (down between a kill and its restart)."""
    head = (
        f"POST /v1/responses HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(b.body)}\r\n\r\n"
    ).encode()
    try:
        s = socket.create_connection((HOST, port), timeout=10)
    except OSError:
        return False
    try:
        if mode == 0:
            s.sendall(head + b.body[: len(b.body) // 2])
            time.sleep(rng.uniform(0.0, 0.2))
        else:
            s.sendall(head + b.body)
            if mode == 2:
                time.sleep(rng.uniform(0.0, 0.05))  # while the server parses or writes
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        return False
    finally:
        s.close()
    return True


def dropper(
    port: int,
    key: str,
    source: Source,
    ledger: Ledger,
    stop: threading.Event,
    abandon: threading.Event,
    seed: int,
) -> None:
    """Every 2-6 s a batch is sent and cut off; then it is delivered as a client would retry."""
    rng = random.Random(seed)
    sender = Sender(port, key, ledger, abandon)
    mode = 0
    try:
        while not stop.wait(rng.uniform(2, 6)):
            if ledger.paused.is_set():
                continue
            b = source.next()
            with ledger.lock:
                ledger.sent[b.key] = b.events
            if drop_connection(port, key, b, mode, rng):
                ledger.count("drops")
                ledger.count(f"drop:{mode}")
                mode = (mode + 1) % len(DROP_MODES)
            sender.deliver(b)
    finally:
        sender.close()


def burster(
    server: Server,
    key: str,
    source: Source,
    ledger: Ledger,
    stop: threading.Event,
    abandon: threading.Event,
    seed: int,
) -> None:
    """BURST_REQUESTS parallel 4,000-event batches, more than the write queue holds (503 +
    Retry-After until it drains): 5-12 s after every start (so each lifetime's warm-up has
    seen one), then every 30-60 s."""
    rng = random.Random(seed)

    def one() -> None:
        s = Sender(server.port, key, ledger, abandon)
        try:
            s.deliver(source.next())
        finally:
            s.close()

    seen = -1
    next_at = time.monotonic() + rng.uniform(30, 60)
    while not stop.wait(0.5):
        lives = server.lifetimes
        if lives and lives[-1].index != seen:
            seen = lives[-1].index
            next_at = lives[-1].healthy + rng.uniform(5, 12)
        if time.monotonic() < next_at or ledger.paused.is_set():
            continue
        ledger.count("bursts")
        threads = [threading.Thread(target=one) for _ in range(BURST_REQUESTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        next_at = time.monotonic() + rng.uniform(30, 60)


@dataclass
class Reads:
    lock: threading.Lock = field(default_factory=threading.Lock)
    status: Counter[str] = field(default_factory=Counter)  # "path status"
    latency: dict[str, list[float]] = field(default_factory=dict)
    unreachable: int = 0
    server_errors: list[str] = field(default_factory=list)
    incident: str = ""


def reader(
    port: int,
    key: str,
    reads: Reads,
    stop: threading.Event,
    every: float,
    paused: threading.Event,
) -> None:
    """Report pages and read endpoints, one round every `every` s (the next round starts that
    long after the last one ended: a person refreshing a dashboard, not a scraper)."""
    while not stop.wait(every):
        if paused.is_set():
            continue
        paths = [
            ("overview", "/reports/"),
            ("incidents", "/v1/incidents?limit=20"),
            ("versions", f"/v1/versions?metric={METRIC}"),
            ("jobs", "/v1/jobs"),
            ("responses", "/v1/responses?limit=100"),
            ("metrics", "/metrics"),
        ]
        if reads.incident:
            paths.insert(1, ("incident page", f"/reports/incidents/{reads.incident}"))
        for name, path in paths:
            try:
                status, body, seconds = get(port, path, key=key)
            except (OSError, http.client.HTTPException):
                with reads.lock:
                    reads.unreachable += 1
                continue
            with reads.lock:
                reads.status[f"{name} {status}"] += 1
                if status == 200:
                    reads.latency.setdefault(name, []).append(seconds)
                elif status >= 500 and len(reads.server_errors) < 10:
                    reads.server_errors.append(f"{path}: {status} {body[:200]!r}")
            if name == "incidents" and status == 200:
                found = json.loads(body)["incidents"]
                if found:
                    reads.incident = found[0]["incident_id"]


class RssMonitor(threading.Thread):
    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            pid, lives = self.server.pid, self.server.lifetimes
            if pid is None or not lives or lives[-1].pid != pid or lives[-1].ended:
                continue
            with contextlib.suppress(OSError, KeyError, IndexError):
                # the server's memory includes its OTLP worker processes
                rss = sum(proc_status(p)["VmRSS"] for p in [pid, *children(pid)])
                lives[-1].rss.append((time.monotonic() - lives[-1].healthy, rss))
                lives[-1].cpu = pid_cpu(pid)


# --------------------------------------------------------------------------------------------
# The Python client, with every acknowledged batch recorded by event id
# --------------------------------------------------------------------------------------------


class ClientStream:
    """`promptblame.ingest.client.Client` logging `rate` events/s; ids `<prefix>-<n:010d>`."""

    def __init__(self, port: int, key: str, prefix: str, pool: list[dict[str, Any]]) -> None:
        self.prefix, self.pool = prefix, pool
        self.logged = 0
        self.acked = bytearray()
        self.ack_lock = threading.Lock()
        self.client = Client(
            f"http://{HOST}:{port}",
            key,
            app="client-app",
            # the client has one request in flight at a time: it sends at most batch_size per
            # answer, and a starved server answers in ~2 s (1,000 kept up with ~500/s and the
            # bounded buffer dropped the rest)
            batch_size=5_000,
            max_queue=200_000,
            backoff_max=5.0,
            retry_for=600.0,
        )
        # the client reports counts only; this hook records which events a 200 acknowledged
        self.client._http.event_hooks["response"].append(self._on_response)

    def _on_response(self, r: httpx.Response) -> None:
        if r.status_code != 200 or not r.request.url.path.endswith("/v1/responses"):
            return
        events = json.loads(gzip.decompress(r.request.content))["responses"]
        cut = len(self.prefix) + 1
        with self.ack_lock:
            for e in events:
                n = int(e["event_id"][cut:])
                if n >= len(self.acked):
                    self.acked.extend(bytes(n + 1 - len(self.acked) + 100_000))
                self.acked[n] = 1

    def run(self, rate: float, stop: threading.Event, paused: threading.Event) -> None:
        tick = 0.05
        start = time.monotonic()
        while not stop.wait(tick):
            if paused.is_set():  # a quiet window: the app logs nothing, nothing to catch up
                start = time.monotonic() - self.logged / rate
                continue
            due = int((time.monotonic() - start) * rate) - self.logged
            for _ in range(max(0, min(due, max(1, int(rate))))):  # at most a second's worth at once
                fields = self.pool[self.logged % len(self.pool)]
                self.client.log_response(
                    event_id=f"{self.prefix}-{self.logged:010d}", ts=datetime.now(UTC), **fields
                )
                self.logged += 1
            if due > rate:  # fell behind (this process was starved): do not catch up in bulk
                start = time.monotonic() - self.logged / rate

    def acked_ids(self) -> set[int]:
        with self.ack_lock:
            return {i for i, v in enumerate(self.acked) if v}


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def calibrate(
    tmp: Path, sources: dict[str, Source], seconds: float, clients: int
) -> dict[str, float]:
    """Acknowledged events/s of unpaced JSON, then OTLP, on a fresh throw-away server."""
    server = Server(tmp / "calibration-data", tmp / "calibration.log", {})
    out = {}
    try:
        key = server.create_key()
        server.start()

        def load(stream: str, seconds: float) -> tuple[Ledger, float]:
            ledger = Ledger()
            until = time.monotonic() + seconds
            t0 = time.perf_counter()
            threads = [
                threading.Thread(
                    target=unpaced,
                    args=(
                        sources[stream],
                        Sender(server.port, key, ledger, threading.Event()),
                        until,
                    ),
                )
                for _ in range(clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return ledger, time.perf_counter() - t0

        for stream in ("json", "otlp"):
            load(stream, 2)  # warm-up
            ledger, elapsed = load(stream, seconds)
            out[stream] = ledger.events(ledger.acked) / elapsed
            print(
                f"  calibration {stream}: {out[stream]:,.0f} events/s acknowledged"
                f" ({clients} unpaced clients, {elapsed:.0f} s, 503s {ledger.counts['503']})"
            )
    finally:
        server.stop()
        shutil.rmtree(tmp / "calibration-data", ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------
# Checks after the clean shutdown, on the store itself
# --------------------------------------------------------------------------------------------


@dataclass
class StoreFacts:
    visible: int = 0  # responses FINAL
    visible_distinct: int = 0
    raw: int = 0
    batches: dict[str, int] = field(default_factory=dict)  # batch key -> events visible
    client_ids: set[int] = field(default_factory=set)
    client_dupes: int = 0
    scores_visible: int = 0
    scores_raw: int = 0
    score_dupes: int = 0  # (event, metric, source) seen more than once through FINAL
    scored_visible: int = 0
    scored_dupes: int = 0
    scores_not_materialized: int = 0
    incidents: list[dict[str, Any]] = field(default_factory=list)
    incident_dupe_ids: int = 0
    revisions_missing: int = 0
    job_runs: list[dict[str, Any]] = field(default_factory=list)
    parts: int = 0


def read_store(data_dir: Path, client_prefix: str) -> StoreFacts:
    from promptblame.settings import load_settings
    from promptblame.store import open_store

    store = open_store(load_settings(data_dir=data_dir))
    facts = StoreFacts()
    p = PROJECT

    def rows(sql: str, **params: Any) -> list[dict[str, Any]]:
        return store._rows(sql, p=p, **params)

    try:
        r = rows(
            "SELECT count() AS n, uniqExact(event_id) AS u FROM responses FINAL"
            " WHERE project_id = {p:String}"
        )[0]
        facts.visible, facts.visible_distinct = int(r["n"]), int(r["u"])
        facts.raw = int(
            rows("SELECT count() AS n FROM responses WHERE project_id = {p:String}")[0]["n"]
        )
        for r in rows(
            f"SELECT {batch_key_sql()} AS b, count() AS n FROM responses FINAL"
            " WHERE project_id = {p:String} AND NOT startsWith(event_id, {c:String})"
            " GROUP BY b",
            c=client_prefix + "-",
        ):
            facts.batches[r["b"]] = int(r["n"])
        ids = rows(
            "SELECT toUInt64(substring(event_id, {cut:UInt32})) AS i, count() AS n"
            " FROM responses FINAL WHERE project_id = {p:String}"
            " AND startsWith(event_id, {c:String}) GROUP BY i",
            c=client_prefix + "-",
            cut=len(client_prefix) + 2,
        )
        facts.client_ids = {int(r["i"]) for r in ids}
        facts.client_dupes = sum(int(r["n"]) - 1 for r in ids)

        facts.scores_visible = int(
            rows("SELECT count() AS n FROM scores FINAL WHERE project_id = {p:String}")[0]["n"]
        )
        facts.scores_raw = int(
            rows("SELECT count() AS n FROM scores WHERE project_id = {p:String}")[0]["n"]
        )
        dupes = (
            "SELECT count() AS n FROM (SELECT event_id, name, source, count() AS c FROM {t} FINAL"
            " WHERE project_id = {{p:String}} GROUP BY event_id, name, source HAVING c > 1)"
        )
        facts.score_dupes = int(rows(dupes.format(t="scores"))[0]["n"])
        facts.scored_dupes = int(rows(dupes.format(t="scored"))[0]["n"])
        facts.scored_visible = int(
            rows("SELECT count() AS n FROM scored FINAL WHERE project_id = {p:String}")[0]["n"]
        )
        facts.scores_not_materialized = int(
            rows(
                "SELECT count() AS n FROM (SELECT event_id, name, source FROM scores FINAL"
                " WHERE project_id = {p:String}"
                " AND event_id IN (SELECT event_id FROM responses WHERE project_id = {p:String}))"
                " AS s LEFT ANTI JOIN (SELECT event_id, name, source FROM scored FINAL"
                " WHERE project_id = {p:String}) AS d USING (event_id, name, source)"
            )[0]["n"]
        )
        facts.incidents = rows(
            "SELECT incident_id, app, route, metric, source, direction, bucket_seconds,"
            " shift_start, verdict, culprit, revision FROM incidents FINAL"
            " WHERE project_id = {p:String} ORDER BY shift_start"
        )
        facts.incident_dupe_ids = len(facts.incidents) - len(
            {i["incident_id"] for i in facts.incidents}
        )
        facts.revisions_missing = int(
            rows(
                "SELECT count() AS n FROM (SELECT incident_id, revision FROM incidents FINAL"
                " WHERE project_id = {p:String}) AS i LEFT ANTI JOIN (SELECT incident_id,"
                " revision FROM incident_revisions FINAL WHERE project_id = {p:String}) AS r"
                " USING (incident_id, revision)"
            )[0]["n"]
        )
        facts.job_runs = rows(
            "SELECT job, started_at, duration_s, status, rows, error FROM job_runs"
            " WHERE project_id IN ('', {p:String}) ORDER BY started_at"
        )
        facts.parts = int(
            rows(
                "SELECT count() AS n FROM system.parts WHERE active"
                " AND database = currentDatabase() AND table = 'responses'"
            )[0]["n"]
        )
    finally:
        store.close()
    return facts


def near_duplicate_incidents(incidents: list[dict[str, Any]], tolerance: int = 2) -> list[str]:
    """Pairs the detection job should have merged into one incident (its own matching rule:
    same series and direction, starts within `tolerance` buckets, same route or one of them
    app-wide)."""
    out = []
    for a, b in itertools.combinations(incidents, 2):
        same = all(a[k] == b[k] for k in ("app", "metric", "source", "direction"))
        near = abs(a["shift_start"] - b["shift_start"]) <= timedelta(
            seconds=tolerance * a["bucket_seconds"]
        )
        routes = not a["route"] or not b["route"] or a["route"] == b["route"]
        if same and near and routes:
            out.append(f"{a['incident_id']} / {b['incident_id']} ({a['app']} {a['metric']})")
    return out


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


@dataclass
class RssVerdict:
    warm: float
    end: float
    peak: float
    growth: float
    judged: bool


def rss_of(
    life: Lifetime, until_s: float | None, skip: tuple[float, float], warm_up: float
) -> RssVerdict | None:
    """Resident memory just after warm-up vs at the end of the lifetime, each the lower quartile
    of 30 s of samples: the floor the process returns to between its spikes (report renders,
    bursts, scoring passes, detection runs come and go every few seconds and would otherwise
    decide the figure). Judged when at least 60 s follow the warm-up."""
    samples = [
        (t, v)
        for t, v in life.rss
        if (until_s is None or t <= until_s) and not skip[0] <= t <= skip[1]
    ]
    after = [(t, v) for t, v in samples if t >= warm_up]
    if len(after) < 10:
        return None
    first, last = after[0][0], after[-1][0]
    warm = _lower_quartile([v for t, v in after if t < first + RSS_WINDOW_S])
    end = _lower_quartile([v for t, v in after if t > last - RSS_WINDOW_S])
    peak = max(v for _, v in samples)
    return RssVerdict(warm, end, peak, end / warm - 1, last - first >= 2 * RSS_WINDOW_S)


def _lower_quartile(values: list[int]) -> float:
    return statistics.quantiles(values, n=4)[0] if len(values) > 1 else float(values[0])


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _jobs(port: int, key: str) -> dict[str, dict[str, Any]]:
    with contextlib.suppress(OSError, http.client.HTTPException, ValueError, KeyError):
        status, body, _ = get(port, "/v1/jobs", key=key)
        if status == 200:
            return {j["job"]: j for j in json.loads(body)["jobs"]}
    return {}


def _started(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["last_started_at"]).replace(tzinfo=UTC)


def wait_scored(port: int, key: str, since: datetime, timeout: float) -> datetime | None:
    """Start of a scoring run after `since` that found nothing left to score."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = _jobs(port, key).get("scoring")
        if s and s["last_rows"] == 0 and s["last_status"] == "ok" and _started(s) > since:
            return _started(s)
        time.sleep(2)
    return None


def wait_caught_up(
    port: int, key: str, since: datetime, timeout: float
) -> tuple[datetime | None, datetime | None]:
    """(start of a scoring run that found nothing left to score, start of a detection run after
    it), both after `since`; None where the timeout came first."""
    deadline = time.monotonic() + timeout
    scored = wait_scored(port, key, since, timeout)
    while scored is not None and time.monotonic() < deadline:
        d = _jobs(port, key).get("detection")
        if d and d["last_status"] == "ok" and _started(d) > scored:
            return scored, _started(d)
        time.sleep(2)
    return scored, None


def quiet_window(
    server: Server, key: str, ledger: Ledger, client: ClientStream, seconds: float
) -> tuple[float, float, float]:
    """Pause the load: wait until every batch in hand and the client's buffer are delivered
    and a scoring run found nothing left, then sample `seconds` of RSS with nothing but the
    scheduled jobs running. (pause, sampling start, end) in seconds since the lifetime became
    healthy."""
    life = server.lifetimes[-1]
    paused = time.monotonic() - life.healthy
    ledger.paused.set()
    try:
        since, deadline = datetime.now(UTC), time.monotonic() + 120
        while time.monotonic() < deadline and (ledger.inflight or client.client.stats().queued):
            time.sleep(0.5)
        wait_scored(server.port, key, since, max(10.0, deadline - time.monotonic()))
        start = time.monotonic() - life.healthy
        time.sleep(seconds)
        return paused, start, time.monotonic() - life.healthy
    finally:
        ledger.paused.clear()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=10, help="soak duration (default 10)")
    p.add_argument("--load", type=float, default=0.5, help="fraction of capacity (default 0.5)")
    p.add_argument("--json-rate", type=float, help="JSON events/s (skips calibrating JSON)")
    p.add_argument("--otlp-rate", type=float, help="OTLP spans/s (skips calibrating OTLP)")
    p.add_argument("--client-rate", type=float, help="Python client events/s")
    p.add_argument("--calibrate-seconds", type=float, default=10)
    p.add_argument(
        "--kill-every", default="30-60", help="seconds between kills in the middle (min-max)"
    )
    p.add_argument(
        "--long-lifetime",
        type=float,
        default=180,
        help="the first and the last lifetime run this long, for the RSS verdict (default 180)",
    )
    p.add_argument("--max-kills", type=int, default=30)
    p.add_argument(
        "--warm-up",
        type=float,
        default=WARM_UP_S,
        help=f"seconds before a long lifetime's quiet RSS window ({WARM_UP_S:.0f})",
    )
    p.add_argument(
        "--read-every", type=float, default=10, help="seconds between rounds of reads (10)"
    )
    p.add_argument("--queue-rows", type=int, default=5_000, help="PROMPTBLAME_WRITE_QUEUE_MAX_ROWS")
    p.add_argument("--seed", type=int, default=9)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (data, server log)")
    args = p.parse_args()
    kill_min, kill_max = (float(v) for v in args.kill_every.split("-"))
    if not (0.5 <= args.minutes <= 60 and 0 < args.load <= 1 and 10 <= kill_min <= kill_max):
        p.error("keep to 0.5-60 minutes, a load in (0, 1] and kills at least 10 s apart")

    rng = random.Random(args.seed)
    run = f"{rng.getrandbits(24):06x}"
    tmp = Path(tempfile.mkdtemp(prefix="pb-soak-"))
    load1, load5, _ = os.getloadavg()
    print(
        f"promptblame soak — {os.cpu_count()} CPUs, load average {load1:.2f} / {load5:.2f},"
        f" temp dir {tmp}"
    )
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    sources = {
        "json": Source(
            "json",
            json_templates(rng, f"{run}j", n=24, batch=JSON_BATCH, now=now),
            JSON_BATCH,
            f"{run}j",
        ),
        "burst": Source(
            "burst",
            json_templates(rng, f"{run}b", n=2, batch=BURST_BATCH, now=now),
            BURST_BATCH,
            f"{run}b",
        ),
        "drop": Source(
            "drop",
            json_templates(rng, f"{run}d", n=4, batch=JSON_BATCH, now=now),
            JSON_BATCH,
            f"{run}d",
        ),
        "otlp": Source("otlp", make_otlp_bodies(rng, n=12, batch=OTLP_BATCH), OTLP_BATCH, ""),
    }
    pool = [soak_event(rng, now) for _ in range(2_000)]
    for e in pool:
        del e["ts"], e["app"]
    print(f"built the traffic in {time.perf_counter() - t0:.1f} s")

    rates = {"json": args.json_rate, "otlp": args.otlp_rate, "client": args.client_rate}
    capacity: dict[str, float] = {}
    if rates["json"] is None or rates["otlp"] is None or rates["client"] is None:
        capacity = calibrate(tmp, sources, args.calibrate_seconds, clients=4)
    shares = {"json": 0.5, "otlp": 0.3, "client": 0.2}
    for stream, share in shares.items():
        if rates[stream] is None:
            cap = capacity["otlp" if stream == "otlp" else "json"]
            rates[stream] = args.load * share * cap
    rate = {k: float(v or 0) for k, v in rates.items()}
    print(
        f"target: JSON {rate['json']:,.0f} events/s, OTLP {rate['otlp']:,.0f} spans/s, client"
        f" {rate['client']:,.0f} events/s"
        + (f" (= {args.load:.0%} of calibrated capacity)" if capacity else "")
        + "; plus drops and bursts"
    )

    server = Server(
        tmp / "data",
        tmp / "server.log",
        {
            "PROMPTBLAME_WRITE_QUEUE_MAX_ROWS": str(args.queue_rows),
            "PROMPTBLAME_SCORING_INTERVAL_SECONDS": str(SCORING_INTERVAL),
            "PROMPTBLAME_DETECTION_INTERVAL_SECONDS": str(DETECTION_INTERVAL),
            "PROMPTBLAME_SCORED_REFRESH_SECONDS": str(SCORED_REFRESH),
            "PROMPTBLAME_KEY_CACHE_SECONDS": "60",
        },
    )
    key = server.create_key()
    server.start()
    put = httpx.put(
        f"http://{HOST}:{server.port}/v1/evaluators",
        json=EVALUATORS,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    put.raise_for_status()
    print(f"server pid {server.pid} on {HOST}:{server.port}; evaluators applied")

    ledger, reads = Ledger(), Reads()
    stop_new, abandon, stop_faults, stop_reads = (threading.Event() for _ in range(4))
    client = ClientStream(server.port, key, f"{run}c", pool)
    monitor = RssMonitor(server)
    monitor.start()
    workers: list[threading.Thread] = []

    def worker(fn: Callable[..., None], *a: Any) -> None:
        t = threading.Thread(target=fn, args=a, daemon=True)
        t.start()
        workers.append(t)

    # several paced senders per stream: a loaded server answers a batch in ~1 s, and each
    # sender holds one batch at a time, as a client with a bounded in-flight window does
    for stream, n in (("json", JSON_SENDERS), ("otlp", OTLP_SENDERS)):
        for _ in range(n if rate[stream] > 0 else 0):
            sender = Sender(server.port, key, ledger, abandon)
            worker(paced, sources[stream], rate[stream] / n, sender, stop_new)
    senders = list(workers)
    client_thread = threading.Thread(
        target=client.run, args=(rate["client"], stop_new, ledger.paused)
    )
    client_thread.start()
    fault_threads = [
        threading.Thread(
            target=dropper,
            args=(server.port, key, sources["drop"], ledger, stop_faults, abandon, args.seed + 1),
        ),
        threading.Thread(
            target=burster,
            args=(server, key, sources["burst"], ledger, stop_faults, abandon, args.seed + 2),
        ),
    ]
    for t in fault_threads:
        t.start()
    read_thread = threading.Thread(
        target=reader, args=(server.port, key, reads, stop_reads, args.read_every, ledger.paused)
    )
    read_thread.start()

    # ---- the killer ----------------------------------------------------------------------
    soak_start = time.monotonic()
    cpu0 = (machine_cpu()[0], process_cpu(), pid_cpu(server.pid or 0))
    deadline = soak_start + args.minutes * 60
    kills, restart_seconds = 0, []
    failure = ""
    krng = random.Random(args.seed + 3)
    # long first and last lifetimes (RSS verdict), kills every kill_min-kill_max s between;
    # each long lifetime pauses the load once after its warm-up for a quiet RSS window
    long = min(args.long_lifetime, args.minutes * 60 / 3)
    no_kills_after = deadline - long
    next_kill = soak_start + long
    quiet: dict[int, tuple[float, float, float]] = {}  # lifetime -> (pause, sample, end) s
    paused_s = 0.0
    try:
        while time.monotonic() < deadline:
            time.sleep(0.25)
            tick, life = time.monotonic(), server.lifetimes[-1]
            last = kills >= args.max_kills or next_kill > no_kills_after
            if (
                (life.index == 0 or last)
                and life.index not in quiet
                and tick - life.healthy >= args.warm_up
                and deadline - tick > 30
            ):
                quiet[life.index] = quiet_window(server, key, ledger, client, QUIET_S)
                took = time.monotonic() - tick
                paused_s += took
                deadline, next_kill, no_kills_after = (
                    deadline + took,
                    next_kill + took,
                    no_kills_after + took,
                )
                print(
                    f"  {time.monotonic() - soak_start:5.0f} s: quiet window of lifetime"
                    f" #{life.index}: load paused {took:.0f} s"
                )
                continue
            if tick < next_kill or last:
                continue
            server.kill9()
            kills += 1
            k0 = time.monotonic()
            try:
                server.start()
            except RuntimeError as exc:
                failure = f"the server did not come back after kill {kills}: {exc}"
                print(f"!! {failure}")
                break
            restart_seconds.append(time.monotonic() - k0)
            print(
                f"  {time.monotonic() - soak_start:5.0f} s: kill -9 #{kills}, back in"
                f" {restart_seconds[-1]:.1f} s; acknowledged so far"
                f" {ledger.events(ledger.acked):,} + client {client.client.stats().sent:,}"
            )
            next_kill = time.monotonic() + krng.uniform(kill_min, kill_max)
    except KeyboardInterrupt:
        failure = "interrupted"
    wall_seconds = time.monotonic() - soak_start
    load_seconds = wall_seconds - paused_s
    load_stop_s = time.monotonic() - server.lifetimes[-1].healthy
    time.sleep(1.1)  # one more RSS/CPU sample of the running server
    server_cpu = sum(life.cpu for life in server.lifetimes) - cpu0[2]
    soak_cpu, machine_busy = process_cpu() - cpu0[1], machine_cpu()[0] - cpu0[0]
    others_cpu = max(0.0, machine_busy - server_cpu - soak_cpu)

    # ---- wind down: no new batches; every batch in hand is delivered --------------------------
    print(
        f"load stopped after {load_seconds:.0f} s (+ {paused_s:.0f} s of quiet windows);"
        " delivering the batches in hand"
    )
    stop_new.set()
    stop_faults.set()
    for t in [*senders, *fault_threads]:
        t.join(180)
    if any(t.is_alive() for t in [*senders, *fault_threads]):
        abandon.set()
        for t in [*senders, *fault_threads]:
            t.join(60)
    client_thread.join()
    flushed = client.client.flush(300)
    cstats = client.client.stats()
    client.client.close()
    last_ack_utc = datetime.now(UTC)

    caught: tuple[datetime | None, datetime | None] = (None, None)
    api_count = -1
    final_jobs: list[dict[str, Any]] = []
    exit_code: int | None = None
    if not failure:
        print("waiting for a scoring run with nothing left to score and a detection run after it")
        w0 = time.monotonic()
        caught = wait_caught_up(server.port, key, last_ack_utc, timeout=600)
        catch_up_s = time.monotonic() - w0
        stop_reads.set()
        read_thread.join(120)
        # quiet: no load, nothing left to score; the jobs keep running on their schedule
        q0 = time.monotonic() - server.lifetimes[-1].healthy
        time.sleep(QUIET_S)
        end_quiet = (q0, time.monotonic() - server.lifetimes[-1].healthy)
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            status, body, _ = get(server.port, f"/v1/versions?metric={METRIC}", key=key)
            if status == 200:
                api_count = sum(int(v["responses"]) for v in json.loads(body)["versions"])
            status, body, _ = get(server.port, "/v1/jobs", key=key)
            final_jobs = json.loads(body)["jobs"] if status == 200 else []
        monitor.done.set()
        exit_code = server.stop()
        print(f"server stopped (exit code {exit_code}); reading the store")
    else:
        catch_up_s, end_quiet = 0.0, (0.0, 0.0)
        stop_reads.set()
        monitor.done.set()
        server.stop()
    monitor.join()
    with (tmp / "rss.csv").open("w") as f:  # for a closer look (--keep)
        f.write("lifetime,seconds,rss_bytes\n")
        for life in server.lifetimes:
            f.writelines(f"{life.index},{t:.1f},{v}\n" for t, v in life.rss)

    facts = read_store(tmp / "data", f"{run}c") if not failure else StoreFacts()

    # ---- figures -------------------------------------------------------------------------
    led = ledger
    acked_keys, sent_keys = set(led.acked), set(led.sent)
    client_acked = client.acked_ids()
    client_sent = client.logged - cstats.dropped  # dropped: never left the client's buffer
    sent_events = led.events() + client_sent
    acked_events = led.events(acked_keys) + len(client_acked)
    missing_batches = {k for k in acked_keys if facts.batches.get(k, 0) != led.sent[k]}
    missing_events = sum(
        led.sent[k] - min(led.sent[k], facts.batches.get(k, 0)) for k in acked_keys
    )
    missing_client = client_acked - facts.client_ids
    missing_events += len(missing_client)
    phantom_batches = set(facts.batches) - sent_keys
    phantom_client = {i for i in facts.client_ids if i >= client.logged}
    stored_unacked = sum(
        n for k, n in facts.batches.items() if k in sent_keys and k not in acked_keys
    ) + len(facts.client_ids - client_acked - phantom_client)
    visible_dupes = facts.visible - facts.visible_distinct + facts.client_dupes
    near_dupes = near_duplicate_incidents(facts.incidents)

    print()
    print("=" * 86)
    print(
        f"soak: {load_seconds / 60:.1f} min of load at {args.load:.0%}"
        + (
            f" of calibrated capacity (JSON {capacity.get('json', 0):,.0f} events/s, OTLP"
            f" {capacity.get('otlp', 0):,.0f} spans/s)"
            if capacity
            else " (rates given)"
        )
    )
    by_stream = Counter({s: 0 for s in ("json", "otlp", "burst", "drop")})
    acked_by_stream: Counter[str] = Counter()
    for k, n in led.sent.items():
        s = {"j": "json", "b": "burst", "d": "drop", "otlp": "otlp"}[_stream(k)]
        by_stream[s] += n
        if k in acked_keys:
            acked_by_stream[s] += n
    for s in ("json", "otlp", "burst", "drop"):
        print(
            f"  {s:<6} sent {by_stream[s]:>10,}  acknowledged {acked_by_stream[s]:>10,}"
            f"  ({acked_by_stream[s] / load_seconds:,.0f}/s"
            + (f", target {rate[s]:,.0f}/s)" if s in rate else ")")
        )
    print(
        f"  client sent {client_sent:>11,}  acknowledged {len(client_acked):>10,}"
        f"  ({len(client_acked) / load_seconds:,.0f}/s, target {rate['client']:,.0f}/s;"
        f" logged {client.logged:,}, dropped from its full buffer {cstats.dropped:,},"
        f" stats: sent {cstats.sent:,}, retries {cstats.retries:,},"
        f" failed {cstats.failed}, rejected {cstats.rejected}; flushed {flushed})"
    )
    print(
        f"  total  sent {sent_events:>10,}  acknowledged {acked_events:>10,}"
        f"  ({acked_events / load_seconds:,.0f}/s); abandoned batches {len(led.abandoned)}"
    )
    print(
        f"  stored (FINAL) {facts.visible:,} = acknowledged {acked_events:,} - missing"
        f" {missing_events:,} + stored without an acknowledgement {stored_unacked:,};"
        f" raw rows {facts.raw:,} ({facts.raw - facts.visible:,} retried copies not merged yet,"
        f" invisible to reads); active parts {facts.parts}"
    )
    print(f"  counted through the API (GET /v1/versions) before shutdown: {api_count:,}")
    print(
        f"  CPU during the soak (100% = one core of {os.cpu_count()}): server (all lifetimes)"
        f" {server_cpu / wall_seconds:.0%}, this script {soak_cpu / wall_seconds:.0%}, other"
        f" processes {others_cpu / wall_seconds:.0%}"
    )
    print(
        f"  retries {led.counts['retries']:,} (json {led.counts['retries:json']:,}, otlp"
        f" {led.counts['retries:otlp']:,}, burst {led.counts['retries:burst']:,}, drop"
        f" {led.counts['retries:drop']:,}) + client {cstats.retries:,};"
        f" connection errors {led.counts['connection errors']:,}"
    )
    print(
        f"  503s seen {led.counts['503']:,}, 429s {led.counts['429']:,} (503s: burst"
        f" {led.counts['503:burst']:,}, json {led.counts['503:json']:,}, otlp"
        f" {led.counts['503:otlp']:,}, drop {led.counts['503:drop']:,}) in"
        f" {led.counts['bursts']} bursts of {BURST_REQUESTS} x {BURST_BATCH:,} events;"
        f" write queue cap {args.queue_rows:,} rows"
    )
    print(
        f"  kills survived {len(restart_seconds)} of {kills}; restart to /healthz"
        f" {min(restart_seconds, default=0):.1f}-{max(restart_seconds, default=0):.1f} s"
        f" (mean {statistics.fmean(restart_seconds) if restart_seconds else 0:.1f} s)"
    )
    print(
        f"  connection drops {led.counts['drops']:,}: "
        + ", ".join(f"{m} {led.counts[f'drop:{i}']}" for i, m in enumerate(DROP_MODES))
    )
    for s in ("json", "otlp", "burst", "drop"):
        a, acks = led.attempt_latency.get(s, []), led.ack_latency.get(s, [])
        if a:
            print(
                f"  {s:<6} latency of the answered attempt p50 {ms(percentile(a, 50))}"
                f" p99 {ms(percentile(a, 99))}; first send to acknowledgement p50"
                f" {ms(percentile(acks, 50))} p99 {ms(percentile(acks, 99))}"
            )
    for name, lat in sorted(reads.latency.items()):
        print(
            f"  read {name:<14} {len(lat):>5} x 200, p50 {ms(percentile(lat, 50))}"
            f" p99 {ms(percentile(lat, 99))}"
        )
    non200 = {k: v for k, v in reads.status.items() if not k.endswith(" 200")}
    print(
        f"  reads: not 200 {dict(non200) or 'none'}; unreachable (server down) {reads.unreachable}"
    )
    for msg in reads.server_errors[:5] + led.errors[:5]:
        print(f"    !! {msg}")
    print(
        f"  scores: {facts.scores_visible:,} visible, {facts.scores_raw - facts.scores_visible:,}"
        f" raw copies; duplicated (event, metric, source): scores {facts.score_dupes},"
        f" scored {facts.scored_dupes}; not materialized for analysis"
        f" {facts.scores_not_materialized}"
    )
    print(
        f"  incidents: {len(facts.incidents)} ("
        + ", ".join(
            f"{i['app']}{i['route'] or ''} {i['metric']} {i['verdict']} {i['culprit']}".strip()
            for i in facts.incidents[:6]
        )
        + f"); duplicate ids {facts.incident_dupe_ids}, same shift twice {len(near_dupes)},"
        f" missing revision rows {facts.revisions_missing}"
    )
    for d in near_dupes[:5]:
        print(f"    !! {d}")
    for k in sorted(missing_batches)[:5]:
        print(f"    !! batch {k}: acknowledged {led.sent[k]}, stored {facts.batches.get(k, 0)}")
    scoring_at, detection_at = caught
    print(
        "  after the load: "
        + (
            f"scoring caught up (a run with nothing left) at"
            f" {scoring_at:%H:%M:%S}, detection ran at {detection_at:%H:%M:%S}"
            if scoring_at and detection_at
            else "scoring/detection did NOT catch up"
        )
        + f" ({catch_up_s:.0f} s after the last acknowledgement)"
    )

    # jobs per lifetime
    lives = server.lifetimes
    bounds = [life.healthy_utc for life in lives] + [datetime.now(UTC) + timedelta(days=1)]
    per_life: list[Counter[str]] = []
    failed_runs = [x for x in facts.job_runs if x["status"] != "ok"]
    for i in range(len(lives)):
        c: Counter[str] = Counter()
        for jr in facts.job_runs:
            started = jr["started_at"]
            if started.tzinfo is None:
                started = started.replace(tzinfo=UTC)
            if bounds[i] - timedelta(seconds=5) <= started < bounds[i + 1] - timedelta(seconds=5):
                c[f"{jr['job']}:{jr['status']}"] += 1
        per_life.append(c)
    print("  lifetimes (RSS: end of warm-up -> end, growth; job runs ok in the lifetime):")
    rss_verdicts: list[RssVerdict | None] = []
    jobs_ok = True
    for life, c in zip(lives, per_life, strict=True):
        length = (life.ended or time.monotonic()) - life.healthy
        last = life is lives[-1]
        q = quiet.get(life.index, (0.0, 0.0, 0.0))
        v = rss_of(life, load_stop_s if last else None, (q[0], q[2]), args.warm_up)
        rss_verdicts.append(v)
        need = length >= DETECTION_INTERVAL + 25
        ran = all(c[f"{j}:ok"] > 0 for j in ("scoring", "detection", "materialize_scores"))
        jobs_ok &= ran or not need
        rss = (
            f"{mib(v.warm)} -> {mib(v.end)} ({v.growth:+.1%}{'' if v.judged else ', short'}),"
            f" peak {mib(v.peak)}"
            if v
            else "too short to judge"
        )
        print(
            f"    #{life.index} pid {life.pid} {length:5.0f} s, ended by {life.how or 'running'}:"
            f" {rss}; scoring {c['scoring:ok']}, detection {c['detection:ok']},"
            f" materialize {c['materialize_scores:ok']}"
            + ("" if ran or not need else "  !! a job did not run")
        )
    if failed_runs:
        print(f"  failed job runs: {len(failed_runs)}")
        for jr in failed_runs[:5]:
            print(f"    {jr['job']} {jr['started_at']}: {jr['error'][:200]}")
    after_last = [j for j in final_jobs if j.get("job") in ("scoring", "detection")]
    print(
        "  GET /v1/jobs at the end: "
        + ", ".join(
            f"{j['job']} last {j['last_started_at']} {j['last_status']}" for j in after_last
        )
    )
    log_text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    tracebacks = log_text.count("Traceback")
    errors = [ln for ln in log_text.splitlines() if " ERROR " in ln or ln.startswith("ERROR")]
    print(f"  server log: {tracebacks} tracebacks, {len(errors)} ERROR lines")
    left_behind = [w for w in server.killed_workers if Path(f"/proc/{w}").exists()]
    for ln in list(dict.fromkeys(e[:160] for e in errors))[:5]:
        print(f"    {ln}")

    judged = [v for v in rss_verdicts if v is not None and v.judged]
    under_load = max((v.growth for v in judged), default=None)
    # quiet windows: load paused, everything delivered, nothing left to score
    floors: dict[str, float] = {}
    windows = [(f"#{i} after warm-up", lives[i], w[1:]) for i, w in sorted(quiet.items())]
    if lives and not failure:
        windows.append((f"#{lives[-1].index} after the load", lives[-1], end_quiet))
    for name, life, (w0, w1) in windows:
        vals = [v for t, v in life.rss if w0 <= t <= w1]
        if len(vals) >= 10:
            floors[name] = _lower_quartile(vals)
            print(
                f"  RSS quiet window, lifetime {name} ({w1 - w0:.0f} s):"
                f" {mib(floors[name])} (lower quartile), max {mib(max(vals))}"
            )
    first_q = floors.get("#0 after warm-up")
    last_q = floors.get(f"#{lives[-1].index} after warm-up") if len(lives) > 1 else None
    end_q = floors.get(f"#{lives[-1].index} after the load") if lives else None
    mid_q = last_q if len(lives) > 1 else first_q
    leak = end_q / mid_q - 1 if end_q and mid_q else None
    across = last_q / first_q - 1 if last_q and first_q else None

    print("-" * 86)
    checks: list[tuple[str, str, bool | None]] = [
        ("run completed (no server that stayed down)", failure or "yes", not failure),
        ("faults exercised: kills / 503s / drops",
         f"{kills} / {led.counts['503']:,} / {led.counts['drops']:,}",
         min(kills, led.counts["503"], led.counts["drops"]) > 0),
        ("kills survived", f"{len(restart_seconds)} of {kills}", len(restart_seconds) == kills),
        ("acknowledged events missing", f"{missing_events:,} of {acked_events:,}",
         missing_events == 0),
        ("events visible more than once", f"{visible_dupes:,}", visible_dupes == 0),
        ("events stored that were never sent", f"{len(phantom_batches) + len(phantom_client)}",
         not phantom_batches and not phantom_client),
        ("API count == stored (FINAL)", f"{api_count:,} / {facts.visible:,}",
         api_count == facts.visible),
        ("scores duplicated (scores, scored)", f"{facts.score_dupes} / {facts.scored_dupes}",
         facts.score_dupes == 0 and facts.scored_dupes == 0),
        ("scores missing from analysis (scored)", f"{facts.scores_not_materialized}",
         facts.scores_not_materialized == 0),
        ("incidents duplicated (ids, same shift)", f"{facts.incident_dupe_ids} / {len(near_dupes)}",
         facts.incident_dupe_ids == 0 and not near_dupes),
        (f"jobs ran in every lifetime >= {DETECTION_INTERVAL + 25} s",
         "yes" if jobs_ok else "no", jobs_ok),
        ("jobs caught up after the last restart", "yes" if all(caught) else "no", all(caught)),
        # a leak keeps what it took: quiet floor at the end vs after warm-up, same process
        ("RSS quiet, end vs after warm-up (one life)",
         "n/a (last lifetime too short)" if leak is None
         else f"{leak:+.1%} ({mib(mid_q or 0)} -> {mib(end_q or 0)})",
         None if leak is None else leak <= RSS_LIMIT),
        ("RSS quiet after warm-up, last vs first life",
         "n/a (under 2 long lifetimes)" if across is None
         else f"{across:+.1%} ({mib(first_q or 0)} -> {mib(last_q or 0)})",
         None if across is None else across <= RSS_LIMIT),
        # under load the floor follows the work in flight (client backlog after kills, bursts)
        ("RSS under load, end vs warm-up (not judged)",
         "n/a" if under_load is None else f"worst {under_load:+.1%}", None),
        ("unhandled exceptions in the server log", f"{tracebacks}", tracebacks == 0),
        ("OTLP workers outliving their killed server",
         f"{len(left_behind)} of {len(server.killed_workers)}", not left_behind),
        # uvicorn re-raises SIGTERM after its graceful shutdown: -15 is a clean exit
        ("clean shutdown (SIGTERM)", f"exit code {exit_code}", exit_code in (0, -signal.SIGTERM)),
    ]  # fmt: skip
    for name, value, ok in checks:
        verdict = "-" if ok is None else "PASS" if ok else "FAIL"
        print(f"  {name:<44}{value:>30}  {verdict}")
    passed = all(ok is not False for _, _, ok in checks)
    print("=" * 86)
    print("PASS" if passed else "FAIL")
    if args.keep or not passed:
        print(f"kept {tmp} (data, server.log)")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
