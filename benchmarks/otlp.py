"""OTLP ingest benchmark: acknowledged (durable) LLM spans/s through `POST /v1/traces`.

Run from the repository root:

    .venv/bin/python benchmarks/otlp.py [--seconds 20 --clients 4 --batch 512]

What it does (server start-up, RSS and CPU readings are shared with benchmarks/ingest.py):

1. builds LLM spans with the real opentelemetry-sdk (GenAI semconv attributes: models, tokens,
   prompt id/version, input/output messages of ~600/~700 characters) and encodes them with the
   OTLP exporter's own protobuf encoder (`encode_spans`), `--batch` spans per request — 512 is
   BatchSpanProcessor's default export batch. Each request gets unique trace ids by replacing
   an 8-byte slot in the pre-encoded body, so the load generator spends its CPU on HTTP, not on
   re-encoding (the exporter's encoding cost is paid once, outside the timed phase);
2. starts `promptblame serve` (embedded chDB) on a free loopback port with a fresh key;
3. N client threads POST those bodies as `application/x-protobuf` on keep-alive connections
   for a fixed time; a 200 acknowledges batch − partial_success.rejected_spans; 503 is retried
   after its Retry-After;
4. checks stored (GET /v1/versions, summed) == acknowledged; reports spans/s, request latency,
   the peak RSS (VmHWM) and CPU use of the server and of its OTLP worker processes
   (PROMPTBLAME_OTLP_PROCESSES), and the group-commit writer's INSERTs. Exit code 0 whatever
   the figures are.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest import (  # benchmarks/ingest.py (the script's directory is on sys.path)
    HOST,
    PROJECT,
    SLOT,
    RssSampler,
    Server,
    _text,
    machine_cpu,
    mark,
    mib,
    ms,
    percentile,
    pid_cpu,
    proc_status,
    process_cpu,
    stored_count,
    wait_for_quiet,
    writer_metrics,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

TARGET_SPANS_PER_S = 20_000
_MODELS = (
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai"),
    ("gpt-4.1", "gpt-4.1-2025-04-14", "openai"),
    ("claude-sonnet-4", "claude-sonnet-4-20250514", "anthropic"),
)


def make_bodies(rng: random.Random, *, n: int, batch: int) -> list[bytes]:
    """`n` encoded ExportTraceServiceRequests of `batch` LLM spans, trace ids = SLOT + 8 bytes."""
    bodies = []
    for _ in range(n):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(
            resource=Resource.create(
                {"service.name": "support-bot", "deployment.environment.name": "prod"}
            )
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("bench")
        for _ in range(batch):
            request_model, response_model, provider_name = rng.choice(_MODELS)
            question, answer = _text(rng, 600), _text(rng, 700)
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider_name,
                "gen_ai.request.model": request_model,
                "gen_ai.response.model": response_model,
                "gen_ai.usage.input_tokens": rng.randint(50, 2000),
                "gen_ai.usage.output_tokens": rng.randint(10, 800),
                "gen_ai.response.finish_reasons": ("stop",),
                "promptblame.prompt.id": rng.choice(("support.reply", "docs.answer")),
                "promptblame.prompt.version": rng.choice(("v12", "v13", "v14")),
                "promptblame.route": rng.choice(("/chat", "/answer", "/summarize")),
                "gen_ai.input.messages": (
                    '[{"role":"user","parts":[{"type":"text","content":"' + question + '"}]}]'
                ),
                "gen_ai.output.messages": (
                    '[{"role":"assistant","parts":[{"type":"text","content":"'
                    + answer
                    + '"}],"finish_reason":"stop"}]'
                ),
            }
            with tracer.start_as_current_span(f"chat {request_model}", attributes=attrs):
                pass
        provider.shutdown()
        req = encode_spans(exporter.get_finished_spans())
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    span.trace_id = SLOT + rng.randbytes(8)
        bodies.append(req.SerializeToString())
    return bodies


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    acked: int = 0
    rejected: int = 0
    retries_503: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0


def run_load(
    port: int,
    key: str,
    bodies: list[bytes],
    seqs: Iterator[int],
    *,
    batch: int,
    clients: int,
    seconds: float,
) -> Load:
    """`clients` threads POST until `seconds` are over; `seqs` numbers requests across runs."""
    result, lock = Load(), threading.Lock()
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"}
    start = time.perf_counter()
    deadline = start + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        mine = Load()
        try:
            while time.perf_counter() < deadline:
                seq = next(seqs)
                body = bodies[seq % len(bodies)].replace(SLOT, seq.to_bytes(8, "big"))
                t0 = time.perf_counter()
                while True:
                    try:
                        conn.request("POST", "/v1/traces", body=body, headers=headers)
                        resp = conn.getresponse()
                        data = resp.read()
                    except (OSError, http.client.HTTPException) as exc:
                        conn.close()
                        mine.failed += 1
                        mine.errors.append(f"{type(exc).__name__}: {exc}")
                        break
                    if resp.status == 503:
                        mine.retries_503 += 1
                        time.sleep(float(resp.getheader("Retry-After") or 1))
                        continue
                    if resp.status == 200:
                        rejected = ExportTraceServiceResponse.FromString(
                            data
                        ).partial_success.rejected_spans
                        mine.rejected += rejected
                        mine.acked += batch - rejected
                        mine.latencies.append(time.perf_counter() - t0)
                    else:
                        mine.failed += 1
                        mine.errors.append(f"HTTP {resp.status}: {data[:200]!r}")
                    break
        finally:
            conn.close()
            with lock:
                result.latencies += mine.latencies
                result.acked += mine.acked
                result.rejected += mine.rejected
                result.retries_503 += mine.retries_503
                result.failed += mine.failed
                result.errors += mine.errors[:5]

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.elapsed = time.perf_counter() - start
    return result


def children(pid: int) -> list[int]:
    """The server's OTLP worker processes (not multiprocessing's resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def workers_cpu(pid: int) -> dict[int, float]:
    out = {}
    for w in children(pid):
        try:
            out[w] = pid_cpu(w)
        except OSError:
            continue
    return out


def pipeline_cpu(bodies: list[bytes], rounds: int = 3) -> dict[str, float]:
    """CPU µs per span of each step a worker process runs for an export, in this process
    (CPU time, so other processes on the machine inflate it less than wall time); the GC set
    as in the workers (start-up objects frozen)."""
    import gc
    from datetime import UTC, datetime

    from promptblame.ingest import otlp
    from promptblame.ingest.rows import responses_table

    gc.collect()
    gc.freeze()
    steps = {"decode": 0.0, "map+validate": 0.0, "arrow": 0.0}
    spans = 0
    for _ in range(rounds):
        for body in bodies:
            t0 = time.process_time()
            req = otlp.decode_protobuf(body)
            t1 = time.process_time()
            mapped = otlp.map_request(req)
            t2 = time.process_time()
            responses_table(PROJECT, mapped.events, datetime.now(UTC))
            t3 = time.process_time()
            steps["decode"] += t1 - t0
            steps["map+validate"] += t2 - t1
            steps["arrow"] += t3 - t2
            spans += len(mapped.events)
    return {k: v / spans * 1e6 for k, v in steps.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=20, help="load duration (default 20)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--batch", type=int, default=512, help="spans per request (default 512)")
    p.add_argument("--templates", type=int, default=16, help="distinct encoded bodies")
    p.add_argument("--seed", type=int, default=20261124)
    p.add_argument("--wait-quiet", type=float, default=60, help="wait for other CPU use (s)")
    args = p.parse_args()

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="pb-otlp-bench-"))
    load1, load5, _ = os.getloadavg()
    print(f"promptblame OTLP benchmark — {os.cpu_count()} CPUs, load {load1:.2f} / {load5:.2f}")
    t0 = time.perf_counter()
    bodies = make_bodies(rng, n=args.templates, batch=args.batch)
    mean_bytes = sum(map(len, bodies)) / len(bodies) / args.batch
    print(
        f"built and encoded {args.templates} x {args.batch} spans with the SDK in"
        f" {time.perf_counter() - t0:.1f} s: {mean_bytes:,.0f} protobuf bytes/span"
    )
    server = Server(tmp / "data", tmp / "server.log")
    seqs = itertools.count(1)
    try:
        key = server.create_key()
        server.start()
        print(f"server pid {server.pid} on {HOST}:{server.port}")
        warm = run_load(server.port, key, bodies, seqs, batch=args.batch, clients=1, seconds=1)
        print(wait_for_quiet(args.wait_quiet, server.pid))
        writer0 = writer_metrics(server.port)
        cpu0, client0, machine0 = pid_cpu(server.pid), process_cpu(), machine_cpu()
        workers0 = workers_cpu(server.pid)
        with RssSampler(server.pid) as rss:
            load = run_load(
                server.port,
                key,
                bodies,
                seqs,
                batch=args.batch,
                clients=args.clients,
                seconds=args.seconds,
            )
        server_cpu, client_cpu = pid_cpu(server.pid) - cpu0, process_cpu() - client0
        workers1 = workers_cpu(server.pid)
        worker_cpu = sum(c - workers0.get(w, 0.0) for w, c in workers1.items())
        worker_hwm = sum(proc_status(w)["VmHWM"] for w in workers1)
        machine1 = machine_cpu()
        writer1 = writer_metrics(server.port)
        hwm = max(proc_status(server.pid)["VmHWM"], rss.peak)
        stored = stored_count(server.port, key)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    cpu = pipeline_cpu(bodies)
    sps = load.acked / load.elapsed
    ours = server_cpu + worker_cpu + client_cpu
    others = max(0.0, machine1[0] - machine0[0] - ours) / load.elapsed
    print("=" * 78)
    print(
        f"{args.clients} clients x {args.batch}-span protobuf requests for {load.elapsed:.1f} s:"
        f" {len(load.latencies):,} requests, 503-retries {load.retries_503},"
        f" failed {load.failed}, rejected spans {load.rejected}"
    )
    for e in load.errors[:5]:
        print(f"    {e}")
    inserts, written, insert_s = (b - a for a, b in zip(writer0, writer1, strict=True))
    print(
        f"  group-commit writer: {inserts:,.0f} INSERTs, mean {written / max(1, inserts):,.0f}"
        f" rows and {ms(insert_s / max(1, inserts))} each, busy {insert_s / load.elapsed:.0%}"
        " of the time"
    )
    print(
        f"  CPU (100% = one core): server {server_cpu / load.elapsed:.0%}, its"
        f" {len(workers1)} OTLP worker process(es) {worker_cpu / load.elapsed:.0%}, load"
        f" generator {client_cpu / load.elapsed:.0%}, other processes {others:.0%}"
    )
    if others > 0.1:
        print("  !! other processes used CPU during the run: the figures are pessimistic")
    per_span = sum(cpu.values())
    print(
        "  per-span work of an export, measured in this process (CPU µs/span): "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
        + f"; total {per_span:.1f} → one core maps up to {1e6 / per_span:,.0f} spans/s"
    )
    rows = [
        ("acknowledged LLM spans/s", f"{sps:,.0f}", f">= {TARGET_SPANS_PER_S:,}", mark(sps >= 2e4)),
        (
            "p50 / p99 request latency",
            f"{ms(percentile(load.latencies, 50))} / {ms(percentile(load.latencies, 99))}",
            "",
            "",
        ),
        ("server peak RSS", mib(hwm), "", ""),
        ("OTLP worker processes' peak RSS, summed", mib(worker_hwm), "", ""),
        (
            "stored == acknowledged (incl. warm-up)",
            f"{stored:,} / {load.acked + warm.acked:,}",
            "equal",
            mark(stored == load.acked + warm.acked),
        ),
    ]
    for name, value, target, verdict in rows:
        print(f"  {name:<40}{value:>22}  {target:<10}{verdict}")
    print("=" * 78)


if __name__ == "__main__":
    main()
