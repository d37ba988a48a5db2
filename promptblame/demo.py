"""`promptblame demo`: a month of realistic traffic with known regressions, end to end.

On the embedded store in a fresh data directory: starts the API on loopback, ships ~200,000
responses (input/output text, routes, an A/B experiment) and the apps' own scores through the
real HTTP ingest endpoints, applies evaluators through the API, runs the scoring and detection
jobs, prints the incidents and their verdicts, writes the HTML reports and keeps serving them.

What the month holds (the ground truth the verdicts are checked against):
* support-bot: prompt answer@v4 replaces answer@v3 on day 18; on route "refunds" only it
  lowers the rate of resolved conversations (0.86 -> 0.70). Culprit: prompt answer@v4.
* extractor: model gpt-4o-mini@2024-07-18 -> gpt-4o-mini@2025-01-15 on day 22; the new model
  often wraps its JSON in prose, so JSON validity drops (0.98 -> 0.80). Culprit: that model.
* summarizer: on day 12 a campaign sends far more "legal" questions (harder: helpful 0.62 vs
  0.85) — a traffic-mix shift — while a harmless prompt digest@v2 ships the same hour. No
  version may be blamed.
* support-bot: a harmless model patch (gpt-4o@2024-08-06 -> @2024-11-20) on day 8, and an A/B
  experiment "tone" (control / friendly) on route "shipping" all month.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

if TYPE_CHECKING:
    from promptblame.settings import Settings

DAYS = 30
PER_HOUR = 480  # responses an hour at the daily peak, all apps (~200k a month)
MARKER = ".promptblame-demo"
PROJECT = "demo"

EVALUATORS = {
    "evaluators": [
        {
            "name": "json_ok",
            "kind": "json_valid",
            "params": {"strip_code_fence": True, "require_object": True},
            "filter": {"app": "extractor"},
            "description": "The extractor's output must be one JSON object.",
        },
        {
            "name": "no_refusal",
            "kind": "refusal",
            "filter": {"app": "support-bot"},
            "sample_rate": 0.25,
        },
    ]
}

PROMPTS = {
    ("answer", "v3"): (
        "You are the support assistant of Acme. Answer the customer's question using the policy"
        " excerpts below. Always quote the exact policy section you rely on.\n{policy}\n{question}"
    ),
    ("answer", "v4"): (
        "You are the support assistant of Acme. Answer the customer's question using the policy"
        " excerpts below. Keep answers short; quote policy only when asked.\n{policy}\n{question}"
    ),
    ("extract", "v1"): (
        "Extract order_id, amount and currency from the email. Reply with one JSON object and"
        " nothing else.\n{email}"
    ),
    ("digest", "v1"): "Summarize the document for a busy reader in three sentences.\n{document}",
    ("digest", "v2"): "Summarize the document for a busy reader in 3 sentences.\n{document}",
}


@dataclass(frozen=True)
class Month:
    start: datetime

    def at(self, day: float) -> datetime:
        return self.start + timedelta(days=day)


def _hour_weight(hour: int) -> float:
    """Day/night swing: busy 9-18 UTC, quiet at night."""
    return 0.35 + 0.65 * max(0.0, math.sin(math.pi * (hour - 5) / 16)) if 5 <= hour <= 21 else 0.3


def generate(
    month: Month, rng: np.random.Generator
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(response event, the app's own scores for it), in time order."""
    i = 0
    for h in range(DAYS * 24):
        hour_start = month.at(h / 24)
        n = int(rng.poisson(PER_HOUR * _hour_weight(hour_start.hour)))
        for _ in range(n):
            ts = hour_start + timedelta(seconds=float(rng.uniform(0, 3600)))
            day = (ts - month.start).total_seconds() / 86400
            app = rng.choice(["support-bot", "extractor", "summarizer"], p=[0.5, 0.25, 0.25])
            make = {"support-bot": _support, "extractor": _extractor, "summarizer": _summarizer}
            event, scores = make[app](f"d{i:07d}", ts, day, rng)
            i += 1
            yield event, scores


QUESTIONS = {
    "billing": ["Why was I charged twice for order {o}?", "Can I get an invoice for order {o}?"],
    "refunds": ["How do I get a refund for order {o}?", "My refund for {o} has not arrived."],
    "shipping": ["Where is my parcel {o}?", "Can I change the delivery address of {o}?"],
}


def _support(
    eid: str, ts: datetime, day: float, rng: np.random.Generator
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    route = str(rng.choice(["billing", "refunds", "shipping"], p=[0.35, 0.3, 0.35]))
    order = f"A-{rng.integers(10000, 99999)}"
    v4 = day >= 18 + 14 / 24
    model_version = "2024-11-20" if day >= 8 + 10 / 24 else "2024-08-06"
    resolved = 0.86
    if v4 and route == "refunds":
        resolved = 0.70
    variant = ""
    if route == "shipping":
        variant = str(rng.choice(["control", "friendly"]))
        resolved = 0.84 if variant == "control" else 0.87
    question = str(rng.choice(QUESTIONS[route])).format(o=order)
    if rng.random() < 0.03:
        output = "I'm sorry, but I can't help with that request."
    elif rng.random() < 0.002:
        output = f"Your order {order} <script>alert('xss')</script><img src=x onerror=alert(1)>"
    else:
        output = (
            f"Thanks for reaching out about {order}. "
            + ("Per policy section 4.2, " if not v4 else "")
            + {
                "billing": "the duplicate charge is a pending hold and drops off in 3 days.",
                "refunds": "refunds go back to the original payment method within 5 business days.",
                "shipping": "your parcel is with the carrier and arrives in 2 days.",
            }[route]
        )
    event = {
        "event_id": eid,
        "ts": ts.isoformat(),
        "app": "support-bot",
        "route": route,
        "environment": "prod",
        "prompt_id": "answer",
        "prompt_version": "v4" if v4 else "v3",
        "model": "gpt-4o",
        "model_version": model_version,
        "provider": "openai",
        "experiment": "tone" if variant else "",
        "variant": variant,
        "input": question,
        "output": output,
        "latency_ms": float(rng.lognormal(6.6, 0.35)),
        "input_tokens": int(rng.integers(300, 900)),
        "output_tokens": int(rng.integers(40, 200)),
        "cost_usd": round(float(rng.uniform(0.002, 0.008)), 6),
    }
    return event, [{"event_id": eid, "name": "resolved", "value": float(rng.random() < resolved)}]


def _extractor(
    eid: str, ts: datetime, day: float, rng: np.random.Generator
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    new = day >= 22 + 9 / 24
    order, amount = f"A-{rng.integers(10000, 99999)}", round(float(rng.uniform(5, 500)), 2)
    doc = json.dumps({"order_id": order, "amount": amount, "currency": "EUR"})
    broken = rng.random() < (0.20 if new else 0.02)
    output = (
        f"Sure! Here is the extracted data:\n{doc}\nLet me know if you need more."
        if broken
        else doc
    )
    if not broken and rng.random() < 0.2:
        output = f"```json\n{doc}\n```"
    event = {
        "event_id": eid,
        "ts": ts.isoformat(),
        "app": "extractor",
        "route": str(rng.choice(["email", "chat"], p=[0.7, 0.3])),
        "environment": "prod",
        "prompt_id": "extract",
        "prompt_version": "v1",
        "model": "gpt-4o-mini",
        "model_version": "2025-01-15" if new else "2024-07-18",
        "provider": "openai",
        "input": f"Hi, I paid {amount} EUR for order {order} but got no confirmation.",
        "output": output,
        "latency_ms": float(rng.lognormal(6.0, 0.3)),
        "input_tokens": int(rng.integers(100, 400)),
        "output_tokens": int(rng.integers(20, 80)),
        "cost_usd": round(float(rng.uniform(0.0002, 0.001)), 6),
    }
    return event, []


def _summarizer(
    eid: str, ts: datetime, day: float, rng: np.random.Generator
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    campaign = day >= 12 + 11 / 24
    legal_share = 0.55 if campaign else 0.10
    route = "legal" if rng.random() < legal_share else "news"
    helpful = 0.62 if route == "legal" else 0.85
    event = {
        "event_id": eid,
        "ts": ts.isoformat(),
        "app": "summarizer",
        "route": route,
        "environment": "prod",
        "prompt_id": "digest",
        "prompt_version": "v2" if campaign else "v1",
        "model": "claude-3-5-sonnet",
        "model_version": "20241022",
        "provider": "anthropic",
        "input": f"Summarize this {route} document #{rng.integers(1000, 9999)}.",
        "output": "The document explains the new terms, who they affect, and what changes when.",
        "latency_ms": float(rng.lognormal(7.0, 0.3)),
        "input_tokens": int(rng.integers(800, 3000)),
        "output_tokens": int(rng.integers(60, 160)),
        "cost_usd": round(float(rng.uniform(0.004, 0.02)), 6),
    }
    return event, [{"event_id": eid, "name": "helpful", "value": float(rng.random() < helpful)}]


# -- running it ----------------------------------------------------------------------------


Progress = Callable[[str, int], Any]  # (label, total) -> context manager with update(n)


def prepare_dir(data_dir: Path) -> None:
    """A fresh demo directory; only a directory the demo made itself is ever wiped."""
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).exists():
            raise ValueError(f"{data_dir} exists and was not made by the demo; choose another")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("made by `promptblame demo`; safe to delete\n")


def ship(
    url: str,
    key: str,
    kind: str,
    items: list[dict[str, Any]],
    *,
    batch: int = 5000,
    on_batch: Callable[[int], None] = lambda n: None,
) -> int:
    """POST items in gzipped batches from 4 threads; returns how many the API accepted."""
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    accepted = 0
    lock = threading.Lock()

    def send(chunk: list[dict[str, Any]]) -> None:
        nonlocal accepted
        body = gzip.compress(json.dumps({kind: chunk}).encode(), compresslevel=1)
        for _ in range(20):
            r = httpx.post(f"{url}/v1/{kind}", content=body, headers=headers, timeout=120)
            if r.status_code != 503:
                break
        r.raise_for_status()
        with lock:
            accepted += r.json()["accepted"]
        on_batch(len(chunk))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, [items[i : i + batch] for i in range(0, len(items), batch)]))
    return accepted


@dataclass
class DemoResult:
    url: str
    key: str
    responses: int
    scores: int
    scored_by_evaluators: int
    incidents: list[dict[str, Any]]
    reports: list[Path]


class Server:
    """The API on loopback in a background thread (uvicorn), sharing the demo's store."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.url = f"http://127.0.0.1:{port}"
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            threading.Event().wait(0.1)
        raise RuntimeError("the demo server did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)


def run(
    data_dir: Path,
    *,
    port: int,
    scale: float = 1.0,
    echo: Callable[[str], None] = print,
    bar: Progress | None = None,
) -> tuple[DemoResult, Server]:
    """Everything but the final serving; the returned server is running (stop it)."""
    from promptblame.analysis.detection import run_detection
    from promptblame.analysis.scoring.job import run_scoring
    from promptblame.api.app import create_app
    from promptblame.api.auth import new_key
    from promptblame.settings import Settings
    from promptblame.store import open_store

    prepare_dir(data_dir)
    # the month ends at the last midnight (UTC), so every run generates the same traffic
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = Month(end - timedelta(days=DAYS))
    settings = Settings(
        data_dir=data_dir / "store",
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        scoring_interval_seconds=86_400,  # the demo runs the jobs itself, in order
        detection_interval_seconds=86_400,
        detection_window_days=DAYS + 1,
        detection_min_scores=300,
    )
    store = open_store(settings)
    key, record = new_key(PROJECT, ["ingest", "read", "admin"], "demo")
    store.put_api_key(record)
    (data_dir / "demo-key.txt").write_text(key + "\n")
    server = Server(create_app(settings, store), port)
    server.start()
    url, auth = server.url, {"Authorization": f"Bearer {key}"}

    for (prompt_id, version), template in PROMPTS.items():
        r = httpx.put(
            f"{url}/v1/prompts/{prompt_id}/versions/{version}",
            json={"template": template, "author": "demo"},
            headers=auth,
            timeout=60,
        )
        r.raise_for_status()

    # support-bot resolves `answer` by label: production served v3, then v4 (the month's
    # regression). Both shipped before the team gated prompts, hence forced, with the reason.
    for version in ("v3", "v4"):
        r = httpx.put(
            f"{url}/v1/prompts/answer/labels/production",
            json={"version": version, "force": True, "reason": "shipped before the gate existed"},
            headers=auth,
            timeout=60,
        )
        r.raise_for_status()

    global PER_HOUR
    base, PER_HOUR = PER_HOUR, int(PER_HOUR * scale)
    try:
        rng = np.random.default_rng(20261124)
        rows = list(generate(month, rng))
    finally:
        PER_HOUR = base
    events = [e for e, _ in rows]
    scores = [s for _, ss in rows for s in ss]
    del rows
    n_resp = n_scores = 0
    with _bar(bar, "shipping responses", len(events)) as b:
        n_resp = ship(url, key, "responses", events, on_batch=b.update)
    with _bar(bar, "shipping app scores", len(scores)) as b:
        n_scores = ship(url, key, "scores", scores, on_batch=b.update)
    echo(f"shipped {n_resp:,} responses and {n_scores:,} scores through {url}/v1/...")

    r = httpx.put(f"{url}/v1/evaluators", json=EVALUATORS, headers=auth, timeout=60)
    r.raise_for_status()
    with _bar(bar, "scoring (evaluators)", 1) as b:

        def progress(done: int, total: int) -> None:
            b.length = total
            b.update(done - b.pos)

        scored = run_scoring(
            store, settings, project_id=PROJECT, backfill_since=month.start, progress=progress
        )
    echo(f"evaluators wrote {scored.scored:,} scores ({scored.errors} errors)")
    store.materialize_scores()
    detection = run_detection(store, settings, project_id=PROJECT, now=end)
    incidents = store.incidents(PROJECT, status="open")
    echo(f"detection: {detection.series} series analysed, {len(incidents)} incidents\n")
    for inc in incidents:
        where = f"{inc['app']}/{inc['route'] or '*'} {inc['metric']}"
        echo(f"  [{inc['verdict']}] {where}: {inc['summary']}")
    echo("")
    echo(guarded_rollout(store, server, key, echo=echo))
    reports = write_reports(store, settings, data_dir / "reports", store.incidents(PROJECT))
    return (
        DemoResult(url, key, n_resp, n_scores, scored.scored, incidents, reports),
        server,
    )


ANSWER_V5 = (
    "You are the support assistant of Acme. Answer in one short sentence; do not cite policy."
    "\n{policy}\n{question}"
)


def guarded_rollout(store: Any, server: Server, key: str, *, echo: Callable[[str], None]) -> str:
    """Live, after the month: support-bot serves `answer` to gpt-4o-mini users through its own
    pointer of the production label (v3). The team rolls out a shorter wording, answer@v5, in
    steps; the app (the real Python client) resolves it per user and logs what it served with
    its `resolved` score, and the rollout job watches. v5 resolves 70 % of conversations where
    v3 resolves 86 %: the guardrail rolls it back automatically at the first step. Seeded and
    driven in rounds (each round's responses, then one look), so every run decides the same."""
    from promptblame.ingest.client import Client
    from promptblame.releases.rollouts import run_rollouts

    url, auth = server.url, {"Authorization": f"Bearer {key}"}
    put = {"template": ANSWER_V5, "author": "demo"}
    httpx.put(
        f"{url}/v1/prompts/answer/versions/v5", json=put, headers=auth, timeout=60
    ).raise_for_status()
    mini = {"version": "v3", "model": "gpt-4o-mini", "force": True, "reason": "mini users on v3"}
    r = httpx.put(f"{url}/v1/prompts/answer/labels/production", json=mini, headers=auth, timeout=60)
    r.raise_for_status()
    plan = {
        "prompt_id": "answer",
        "label": "production",
        "model": "gpt-4o-mini",
        "candidate": "v5",
        "steps": [5, 25, 50, 100],
        "min_responses_per_step": 100,
        "min_minutes_per_step": 0,
        "guardrails": [{"metric": "resolved", "max_drop": 0.0}],
        "force": True,
        "reason": "shorter answers (no eval suite for mini yet)",
        "rollout_id": "answer-v5-mini",  # its name seeds the split: the same users every run
    }
    r = httpx.post(f"{url}/v1/rollouts", json=plan, headers=auth, timeout=60)
    r.raise_for_status()
    rid = r.json()["rollout_id"]
    releases = server.app.state.pb.releases
    rng = np.random.default_rng(20261206)
    state = "running"
    for round_ in range(60):
        with Client(url, key, app="support-bot", prompt_cache_ttl=3600) as pb:
            for i in range(400):
                user = f"mini-user-{round_ * 400 + i}"
                p = pb.get_prompt("answer", label="production", model="gpt-4o-mini", unit=user)
                ok = rng.random() < (0.70 if p.version == "v5" else 0.86)
                eid = pb.log_response(
                    prompt=p,
                    model="gpt-4o-mini",
                    route="chat",  # mini users' own route: the month's series stay as they were
                    environment="prod",
                    user_id=user,
                    output="Refunds take 5 days." if p.version == "v5" else "Per policy 4.2 ...",
                )
                pb.log_score(eid, "resolved", float(ok))
            pb.flush(60)
        store.materialize_scores()
        run_rollouts(store, project_id=PROJECT, on_change=releases.invalidate)
        state = store.rollout_states(PROJECT, rid)[0]["state"]
        if state != "running":
            break
    inc = store.incident(PROJECT, f"rollout-{rid}")
    if inc is not None:
        return f"  [rollout] support-bot answer (gpt-4o-mini): {inc['summary']}"
    return f"  [rollout] support-bot answer (gpt-4o-mini): answer@v5 rollout is {state}"


def write_reports(
    store: Any, settings: Settings, folder: Path, incidents: list[dict[str, Any]]
) -> list[Path]:
    """Self-contained HTML files (inline CSS and SVG, no scripts): the overview (with the series
    detection could not analyse) and every incident, as `promptblame report` exports them."""
    from promptblame.reports.data import incident_view, overview_view
    from promptblame.reports.render import render_incident, render_overview

    folder.mkdir(parents=True, exist_ok=True)
    overview = folder / "index.html"
    page = render_overview(
        overview_view(store, PROJECT, settings=settings),
        api_base=None,
        incident_link="incident-{id}.html",
    )
    overview.write_text(page, "utf-8")
    written = [overview]
    for inc in incidents:
        path = folder / f"incident-{inc['incident_id']}.html"
        view = incident_view(store, PROJECT, inc["incident_id"])
        path.write_text(render_incident(view, api_base=None), "utf-8")
        written.append(path)
    return written


class _NoBar:
    length = 0
    pos = 0

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int) -> None:
        self.pos += n


def _bar(bar: Progress | None, label: str, total: int) -> Any:
    return bar(label, total) if bar else _NoBar()
