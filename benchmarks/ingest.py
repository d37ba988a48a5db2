"""Ingest benchmark: acknowledged (durable) events/s through `promptblame serve` on chDB.

Run from the repository root:

    .venv/bin/python benchmarks/ingest.py [--seconds 20 --clients 4 --batch 1000]

What it does, in one run (see benchmarks/README.md for what each figure means):

1. temp data dir, `promptblame keys create` (subprocess), `promptblame serve` on 127.0.0.1 and a
   free port with the embedded store; waits for GET /healthz;
2. light load: one client, 10-event batches, for a few seconds (latency of the group commit
   when there is nothing to group);
3. heavy load: N client threads POST pre-serialized 1,000-event batches (~1.5 KB an event) for
   a fixed time; only events of 2xx answers count; a 503 is retried after its Retry-After and
   the wait counts as latency of that batch;
4. checks that the stored count (GET /v1/versions, summed) equals the acknowledged count; reads
   the server's peak RSS (VmHWM) and CPU use;
5. stops the server, then inserts the same rows straight into chDB (EmbeddedStore, another data
   dir, 10,000-row batches), timing only the INSERTs, for the ratio server ÷ direct;
6. prints the figures next to their targets with PASS/MISS. Exit code 0 whatever they are.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

HOST = "127.0.0.1"
PROJECT = "bench"
# Every event id embeds this 8-byte slot; each request replaces it with its own sequence number
# (8 hex digits), so the pre-serialized bodies can be reused while every event id stays unique.
SLOT = b"~SEQ~~~~"

TARGET_EVENTS_PER_S = 50_000
TARGET_RATIO = 0.4
TARGET_P99_S = 0.5
TARGET_RSS_BYTES = 1.5 * 1024**3

# --------------------------------------------------------------------------------------------
# Realistic events
# --------------------------------------------------------------------------------------------

_VOCABULARY = """
the a an of to in for on with by from as at is are was were be been has have had this that
these those it its they them their we our you your he she his her not no but or and if
then than so because while when where which who what how why all any each every some many
more most other such only own same very can will just should now also into over after
before under again further once here there both few nor too invoice refund order shipment
account password reset subscription plan upgrade downgrade billing cycle charge card
payment failed declined address delivery tracking number warehouse carrier delay estimate
customer support agent ticket escalation priority policy return window exchange warranty
defect replacement battery screen firmware update device settings bluetooth pairing wifi
router signal restart error message code timeout latency server region outage status page
incident report metric dashboard query filter export csv spreadsheet column row table
schema index migration deploy release version rollback feature flag experiment variant
cohort retention churn summary translate summarize classify extract entities sentiment
positive negative neutral tone formal friendly concise detailed bullet points paragraph
answer question context document section clause contract term renewal notice period
termination liability compliance privacy data retention consent request deletion
portability audit log access role permission admin owner member invite team workspace
project folder file upload size limit quota usage overage discount coupon promotion trial
expiry reminder email sms push notification preference language timezone calendar meeting
schedule reschedule cancel confirm booking reservation flight hotel itinerary baggage seat
upgrade lounge loyalty points balance statement transaction pending cleared dispute
chargeback merchant category recipe ingredient allergy substitute oven temperature minutes
serving nutrition calories protein vegetarian vegan gluten dairy symptom dosage
appointment pharmacy prescription please thanks sorry unfortunately certainly happy help
assist understand clarify note
"""
_WORDS = tuple(_VOCABULARY.split())
_ACCENTED = ("café", "naïve", "résumé", "Zürich", "São Paulo", "Kraków", "über", "façade")

_APPS = ("support-bot", "docs-qa", "sales-assist")
_ROUTES = ("/chat", "/answer", "/summarize", "/classify", "/extract")
_ENVS = ("prod", "prod", "prod", "staging")
_PROMPTS = ("support.reply", "docs.answer", "sales.email", "triage.classify")
_PROMPT_VERSIONS = ("v12", "v13", "v14")
_MODELS = (
    ("gpt-4o-mini", "2024-07-18", "openai"),
    ("gpt-4.1", "2025-04-14", "openai"),
    ("claude-sonnet-4", "20250514", "anthropic"),
    ("gemini-2.5-flash", "001", "google"),
)
_TAG_VALUES = {
    "tier": ("free", "pro", "enterprise"),
    "region": ("us-east-1", "eu-west-1", "ap-south-1"),
    "locale": ("en-US", "de-DE", "fr-FR", "ja-JP", "pt-BR"),
    "channel": ("web", "ios", "android", "api"),
    "ab_bucket": ("a", "b"),
}


def _text(rng: random.Random, chars: int) -> str:
    """Sentences of varied words, about `chars` long (ASCII, now and then an accented word)."""
    out: list[str] = []
    size = 0
    target = int(chars * rng.uniform(0.85, 1.15))
    while size < target:
        words = rng.choices(_WORDS, k=rng.randint(6, 18))
        if rng.random() < 0.1:
            words[rng.randrange(len(words))] = rng.choice(_ACCENTED)
        sentence = " ".join(words).capitalize() + rng.choice((".", ".", ".", "?", "!"))
        out.append(sentence)
        size += len(sentence) + 1
    return " ".join(out)[:target]


def make_event(
    rng: random.Random, event_id: str, now: datetime, app: str | None = None
) -> dict[str, object]:
    model, model_version, provider = rng.choice(_MODELS)
    input_text = _text(rng, 600)
    output_text = _text(rng, 700)
    tags = {
        k: rng.choice(_TAG_VALUES[k]) for k in rng.sample(sorted(_TAG_VALUES), rng.randint(3, 4))
    }
    ts = now - timedelta(milliseconds=rng.randrange(3_600_000))
    return {
        "event_id": event_id,
        "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "app": app or rng.choice(_APPS),
        "route": rng.choice(_ROUTES),
        "environment": rng.choice(_ENVS),
        "prompt_id": rng.choice(_PROMPTS),
        "prompt_version": rng.choice(_PROMPT_VERSIONS),
        "model": model,
        "model_version": model_version,
        "provider": provider,
        "input": input_text,
        "output": output_text,
        "latency_ms": round(rng.lognormvariate(6.5, 0.6), 1),
        "input_tokens": len(input_text) // 4 + rng.randint(40, 400),
        "output_tokens": len(output_text) // 4,
        "cost_usd": round(rng.uniform(0.0001, 0.02), 6),
        "tags": tags,
    }


@dataclass
class Bodies:
    """Pre-serialized `{"responses": [...]}` bodies with the SLOT in every event id."""

    templates: list[bytes]
    batch: int

    def body(self, seq: int) -> bytes:
        return self.templates[seq % len(self.templates)].replace(SLOT, b"%08x" % seq)

    @property
    def mean_event_bytes(self) -> float:
        return sum(len(t) for t in self.templates) / len(self.templates) / self.batch


def make_bodies(
    rng: random.Random, *, run: str, n: int, batch: int, app: str | None = None
) -> Bodies:
    now = datetime.now(UTC)
    slot = SLOT.decode()
    templates = []
    for _ in range(n):
        events = [make_event(rng, f"{run}-{slot}-{i:05d}", now, app) for i in range(batch)]
        templates.append(json.dumps({"responses": events}, separators=(",", ":")).encode())
    return Bodies(templates, batch)


# --------------------------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "promptblame.api.cli", *args]


class Server:
    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTBLAME_")} | {
            "PROMPTBLAME_DATA_DIR": str(data_dir),
            "PROMPTBLAME_HOST": HOST,
            "PROMPTBLAME_PORT": str(self.port),
            "PROMPTBLAME_LOG_LEVEL": "WARNING",
        }
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def create_key(self) -> str:
        out = subprocess.run(
            cli("keys", "create", "--project", PROJECT, "--name", "benchmark"),
            env=self.env,
            capture_output=True,
            check=True,
            timeout=120,
        )
        return out.stdout.decode().splitlines()[0].strip()

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cli("serve"), env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = request(self.port, "GET", "/healthz", timeout=5)
                if status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"server did not answer /healthz within 90 s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # uvicorn: graceful, the writer drains its queue
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    key: str = "",
    timeout: float = 30,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM ... of /proc/<pid>/status, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if name.startswith("Vm") and len(parts) == 2 and parts[1] == "kB":
                out[name] = int(parts[0]) * 1024
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of a process, keyed "name/tid".

    The main thread (the asyncio event loop of uvicorn) is named "event-loop"; the other Python
    threads (group-commit writer, which also runs chDB's INSERT, and AnyIO workers) "py-threads";
    chDB's own threads keep their names (MergeMutate = background merges, ThreadPool = query
    pipeline threads).
    """
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    main_name = ""
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=lambda t: int(t) != pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if int(tid) == pid:
            main_name, name = name, "event-loop"
        elif name == main_name:
            name = "py-threads"
        fields = stat[stat.rindex(")") + 2 :].split()
        out[f"{name}/{tid}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / tick, sum(values[:8]) / tick


def process_cpu() -> float:
    """CPU seconds of this process, all threads (chDB's own threads included)."""
    t = os.times()
    return t.user + t.system


def pid_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait: float, server_pid: int | None = None, limit: float = 0.15) -> str:
    """Wait (at most `max_wait` s) until other processes use under `limit` of one core.

    On a shared machine another job's CPU use lowers every figure; the benchmark waits a little
    for it to pass, then goes ahead regardless and says so in the report.
    """
    deadline = time.monotonic() + max_wait
    while True:
        m0, own0 = machine_cpu()[0], process_cpu()
        srv0 = pid_cpu(server_pid) if server_pid else 0.0
        time.sleep(2)
        others = machine_cpu()[0] - m0 - (process_cpu() - own0)
        if server_pid:
            others -= pid_cpu(server_pid) - srv0
        others = max(0.0, others / 2)
        if others < limit:
            return f"machine quiet (other processes {others:.0%} of a core)"
        if time.monotonic() > deadline:
            return f"machine NOT quiet after {max_wait:.0f} s (other processes {others:.0%})"


class RssSampler:
    """Polls the server's VmRSS every `interval` seconds while running."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, proc_status(self.pid).get("VmRSS", 0))
            self._stop.wait(self.interval)


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, one per acknowledged batch
    acked_events: int = 0
    acked_seqs: list[int] = field(default_factory=list)
    retries_503: int = 0
    failed_requests: int = 0  # non-2xx answers other than 503, or transport errors
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    prep_seconds: float = 0.0  # client time spent preparing bodies (slot substitution)


def run_load(
    port: int,
    key: str,
    bodies: Bodies,
    seqs: Iterator[int],
    *,
    clients: int,
    seconds: float,
    max_requests: int,
) -> LoadResult:
    """`clients` threads, each with one keep-alive connection, POST until `seconds` are over."""
    result = LoadResult()
    lock = threading.Lock()
    issued = itertools.count()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    start = time.perf_counter()
    deadline = start + seconds
    hard_deadline = deadline + 120  # retries of a batch never outlast this

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        lat: list[float] = []
        acked_seqs: list[int] = []
        acked = retries = failed = 0
        prep = 0.0
        errors: list[str] = []
        try:
            while time.perf_counter() < deadline and next(issued) < max_requests:
                seq = next(seqs)
                t0 = time.perf_counter()
                body = bodies.body(seq)
                t1 = time.perf_counter()
                prep += t1 - t0
                while True:
                    try:
                        conn.request("POST", "/v1/responses", body=body, headers=headers)
                        resp = conn.getresponse()
                        data = resp.read()
                        status = resp.status
                    except (OSError, http.client.HTTPException) as exc:
                        conn.close()  # reconnects on the next request
                        failed += 1
                        errors.append(f"{type(exc).__name__}: {exc}")
                        break
                    if status == 503 and time.perf_counter() < hard_deadline:
                        retries += 1
                        time.sleep(float(resp.getheader("Retry-After") or 1))
                        continue
                    if 200 <= status < 300:
                        acked += int(json.loads(data)["accepted"])
                        acked_seqs.append(seq)
                        lat.append(time.perf_counter() - t1)
                    else:
                        failed += 1
                        errors.append(f"HTTP {status}: {data[:200]!r}")
                    break
        finally:
            conn.close()
            with lock:
                result.latencies += lat
                result.acked_events += acked
                result.acked_seqs += acked_seqs
                result.retries_503 += retries
                result.failed_requests += failed
                result.errors += errors[:5]
                result.prep_seconds += prep

    threads = [threading.Thread(target=client, name=f"client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.elapsed = time.perf_counter() - start
    return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]  # nearest rank


def stored_count(port: int, key: str, app: str = "") -> int:
    path = "/v1/versions" + (f"?app={app}" if app else "")
    status, data = request(port, "GET", path, key=key, timeout=120)
    if status != 200:
        raise RuntimeError(f"GET {path}: HTTP {status} {data[:300]!r}")
    return sum(int(v["responses"]) for v in json.loads(data)["versions"])


# --------------------------------------------------------------------------------------------
# Direct chDB insert (the ceiling the server is compared with)
# --------------------------------------------------------------------------------------------


@dataclass
class DirectResult:
    rows: int
    insert_seconds: float
    inserts: int
    cpu_seconds: float  # CPU of this process while inside INSERT (robust to other load)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.insert_seconds if self.insert_seconds else float("nan")


def direct_insert(data_dir: Path, bodies: Bodies, seqs: list[int], batch_rows: int) -> DirectResult:
    """The same rows, validated as the server does, inserted with EmbeddedStore.insert."""
    from promptblame.ingest.decode import decode_batch
    from promptblame.ingest.rows import responses_table
    from promptblame.store.embedded import EmbeddedStore

    store = EmbeddedStore(data_dir)
    try:
        store.migrate()
        rows = inserts = 0
        seconds = cpu = 0.0
        pending: list[object] = []

        def flush() -> None:
            nonlocal rows, inserts, seconds, cpu
            table = responses_table(PROJECT, pending, datetime.now(UTC))  # type: ignore[arg-type]
            pending.clear()
            c0, t0 = process_cpu(), time.perf_counter()
            store.insert("responses", table)
            seconds += time.perf_counter() - t0
            cpu += process_cpu() - c0
            rows += table.num_rows
            inserts += 1

        for seq in seqs:
            pending += decode_batch(bodies.body(seq), "responses", max_events=10**6).events
            if len(pending) >= batch_rows:
                flush()
        if pending:
            flush()
        stored = store.count("responses", PROJECT)
        if stored != rows:
            print(f"  !! direct insert: {rows} rows inserted but {stored} stored")
        return DirectResult(rows, seconds, inserts, cpu)
    finally:
        store.close()


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def mib(n: float) -> str:
    return f"{n / 1024**2:,.0f} MiB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=20, help="heavy-load duration (default 20)")
    # 8 apps (or app instances) each waiting for its answer: with 4 the service is latency-bound
    # (each client has one request in flight), not CPU-bound; benchmarks/README.md has both
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--batch", type=int, default=1000, help="events per request (default 1000)")
    p.add_argument("--light-seconds", type=float, default=5, help="light-load duration")
    p.add_argument("--light-batch", type=int, default=10, help="events per light-load request")
    p.add_argument("--direct-batch", type=int, default=10_000, help="rows per direct INSERT")
    p.add_argument("--templates", type=int, default=24, help="distinct pre-serialized bodies")
    p.add_argument("--seed", type=int, default=20261124)
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=60,
        help="before each timed phase, wait up to this many seconds for other processes to"
        " stop using CPU (default 60; 0 = do not wait)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (data, server log)")
    p.add_argument(
        "--py-spy",
        metavar="OUT",
        help="py-spy the server during the heavy load: OUT.svg flame graph, OUT.json"
        " speedscope, else collapsed stacks (--threads --idle)",
    )
    args = p.parse_args()
    if not (1 <= args.clients <= 64 and 0 < args.seconds <= 600 and 1 <= args.batch <= 10_000):
        p.error("keep to 1-64 clients, 0-600 seconds, 1-10,000 events per batch")

    rng = random.Random(args.seed)
    run = f"{rng.getrandbits(32):08x}"
    tmp = Path(tempfile.mkdtemp(prefix="pb-bench-"))
    load1, load5, _ = os.getloadavg()
    print(
        f"promptblame ingest benchmark — {os.cpu_count()} CPUs, load average {load1:.2f}"
        f" (1 min) {load5:.2f} (5 min), temp dir {tmp}"
    )

    t0 = time.perf_counter()
    heavy = make_bodies(rng, run=run + "h", n=args.templates, batch=args.batch)
    light = make_bodies(rng, run=run + "l", n=args.templates, batch=args.light_batch, app="light")
    print(
        f"generated {args.templates} x {args.batch}-event bodies in {time.perf_counter() - t0:.1f}"
        f" s: {heavy.mean_event_bytes:,.0f} bytes/event as JSON,"
        f" {len(heavy.templates[0]) / 1024**2:.2f} MiB/request"
    )

    server = Server(tmp / "server-data", tmp / "server.log")
    seqs = itertools.count()
    spy: subprocess.Popen[bytes] | None = None
    try:
        key = server.create_key()
        server.start()
        print(f"server pid {server.pid} on {HOST}:{server.port} (embedded chDB)")
        base_rss = proc_status(server.pid)["VmRSS"]

        # Light load first (it also warms the server up).
        print(wait_for_quiet(args.wait_quiet, server.pid))
        warm = run_load(server.port, key, light, seqs, clients=1, seconds=0.5, max_requests=20)
        lite = run_load(
            server.port,
            key,
            light,
            seqs,
            clients=1,
            seconds=args.light_seconds,
            max_requests=100_000,
        )
        print(f"light load done: {len(lite.latencies)} requests")

        if args.py_spy:
            spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(Path(args.py_spy).suffix, "raw")
            spy_cmd = [spy_bin, "record", "-p", str(server.pid), "-o", args.py_spy, "-f", fmt]
            spy_cmd += ["--threads", "--idle", "--nonblocking", "-r", "50"]
            spy_cmd += ["-d", str(int(args.seconds))]
            spy = subprocess.Popen(
                spy_cmd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        print(wait_for_quiet(args.wait_quiet, server.pid))
        writer0 = writer_metrics(server.port)
        cpu0 = thread_cpu(server.pid)
        client_cpu0, machine0 = process_cpu(), machine_cpu()
        with RssSampler(server.pid) as rss:
            load = run_load(
                server.port,
                key,
                heavy,
                seqs,
                clients=args.clients,
                seconds=args.seconds,
                max_requests=1_000_000,
            )
        client_cpu = process_cpu() - client_cpu0
        machine1 = machine_cpu()
        cpu1 = thread_cpu(server.pid)
        if spy is not None:
            spy.wait(args.seconds + 60)

        try:
            stored = stored_count(server.port, key)
        except (OSError, RuntimeError, ValueError) as exc:
            print(f"  !! could not read the stored count: {exc}")
            stored = -1
        acked_total = warm.acked_events + lite.acked_events + load.acked_events
        hwm = proc_status(server.pid)["VmHWM"]
        writer1 = writer_metrics(server.port)
    finally:
        if spy is not None and spy.poll() is None:
            spy.terminate()
        server.stop()
    print("server stopped")

    print(wait_for_quiet(args.wait_quiet))
    direct = direct_insert(tmp / "direct-data", heavy, sorted(load.acked_seqs), args.direct_batch)

    # ---- figures ----------------------------------------------------------------------------
    eps = load.acked_events / load.elapsed
    p50, p99 = percentile(load.latencies, 50), percentile(load.latencies, 99)
    ratio = eps / direct.rows_per_s
    peak_rss = max(hwm, rss.peak)
    server_cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    busiest = sorted(server_cpu.items(), key=lambda kv: -kv[1])[:5]
    inserts, written, insert_s = (b - a for a, b in zip(writer0, writer1, strict=True))

    print()
    print("=" * 78)
    print(
        f"heavy load: {args.clients} clients x {args.batch}-event batches"
        f" ({heavy.mean_event_bytes:,.0f} B/event) for {load.elapsed:.1f} s"
    )
    print(
        f"  requests acknowledged {len(load.latencies):,}, 503-retries {load.retries_503},"
        f" failed {load.failed_requests}"
    )
    for e in load.errors[:5]:
        print(f"    {e}")
    print(f"  events acknowledged   {load.acked_events:,}")
    print(
        f"  stored (GET /v1/versions) {stored:,} vs acknowledged {acked_total:,}"
        f" (incl. {warm.acked_events + lite.acked_events:,} light-load): "
        + ("OK" if stored == acked_total else "MISMATCH")
    )
    print(
        f"  group-commit writer: {inserts:,.0f} INSERTs, mean {written / max(1, inserts):,.0f}"
        f" rows and {ms(insert_s / max(1, inserts))} each, busy {insert_s / load.elapsed:.0%}"
        f" of the time; server RSS at start {mib(base_rss)}"
    )
    busy_cpu = sum(server_cpu.values())
    machine_busy = machine1[0] - machine0[0]
    machine_total = machine1[1] - machine0[1]
    others = max(0.0, machine_busy - busy_cpu - client_cpu)
    print(
        f"  CPU during the load (100% = one core, {os.cpu_count()} cores): server"
        f" {busy_cpu / load.elapsed:.0%}, load generator {client_cpu / load.elapsed:.0%},"
        f" other processes {others / load.elapsed:.0%}, idle"
        f" {(machine_total - machine_busy) / load.elapsed:.0%}"
    )
    print(f"  client body prep {ms(load.prep_seconds / max(1, len(load.latencies)))}/request")
    if others / load.elapsed > 0.1:
        print("  !! other processes used CPU during the run: the figures are pessimistic")
    print(
        "  busiest server threads: "
        + ", ".join(f"{name.split('/')[0]} {sec / load.elapsed:.0%}" for name, sec in busiest)
    )
    by_name: dict[str, float] = {}
    for name, sec in server_cpu.items():
        by_name[name.split("/")[0]] = by_name.get(name.split("/")[0], 0.0) + sec
    per_k = 1000 / max(1, load.acked_events)
    print(
        f"  server CPU per 1,000 events: {busy_cpu * per_k * 1000:,.0f} ms ("
        + ", ".join(
            f"{name} {sec * per_k * 1000:,.0f}"
            for name, sec in sorted(by_name.items(), key=lambda kv: -kv[1])[:5]
        )
        + ")"
    )
    print(
        f"light load: 1 client x {args.light_batch}-event batches for {lite.elapsed:.1f} s:"
        f" {len(lite.latencies):,} requests, p50 {ms(percentile(lite.latencies, 50))},"
        f" p99 {ms(percentile(lite.latencies, 99))}, failed {lite.failed_requests}"
    )
    print(
        f"direct chDB: {direct.rows:,} rows in {direct.inserts} INSERTs of"
        f" {args.direct_batch:,} rows, {direct.insert_seconds:.2f} s inside INSERT"
        f" ({direct.cpu_seconds:.2f} CPU-s)"
    )
    print("-" * 78)
    rows = [
        (
            "acknowledged events/s (durable)",
            f"{eps:,.0f}",
            f">= {TARGET_EVENTS_PER_S:,}",
            eps >= TARGET_EVENTS_PER_S,
        ),
        ("p50 request latency", ms(p50), "", None),
        ("p99 request latency", ms(p99), f"<= {ms(TARGET_P99_S)}", p99 <= TARGET_P99_S),
        (
            "server peak RSS",
            mib(peak_rss),
            f"<= {mib(TARGET_RSS_BYTES)}",
            peak_rss <= TARGET_RSS_BYTES,
        ),
        ("direct chDB insert rows/s", f"{direct.rows_per_s:,.0f}", "", None),
        ("ratio server ÷ direct", f"{ratio:.2f}", f">= {TARGET_RATIO}", ratio >= TARGET_RATIO),
        (
            "light load p50 / p99",
            f"{ms(percentile(lite.latencies, 50))} / {ms(percentile(lite.latencies, 99))}",
            "",
            None,
        ),
        ("stored == acknowledged", f"{stored:,} / {acked_total:,}", "equal", stored == acked_total),
    ]
    for name, value, target, ok in rows:
        verdict = "" if ok is None else mark(ok)
        print(f"  {name:<34}{value:>22}  {target:<14}{verdict}")
    print("=" * 78)

    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def writer_metrics(port: int) -> tuple[float, float, float]:
    """(INSERTs, rows, seconds inside INSERT) of the group-commit writer so far, from /metrics."""
    try:
        status, text = request(port, "GET", "/metrics")
    except OSError:
        return (0.0, 0.0, 0.0)
    totals = dict.fromkeys(
        (
            "promptblame_write_seconds_count",
            "promptblame_write_batch_rows_sum",
            "promptblame_write_seconds_sum",
        ),
        0.0,
    )
    for line in text.decode().splitlines() if status == 200 else []:
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return (
        totals["promptblame_write_seconds_count"],
        totals["promptblame_write_batch_rows_sum"],
        totals["promptblame_write_seconds_sum"],
    )


if __name__ == "__main__":
    main()
