"""The `promptblame` command: serve, worker, migrate, keys, evaluators, score, alerts, detect,
gate, report, demo."""

from __future__ import annotations

import gc
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from promptblame import __version__
from promptblame.api.cli_common import (
    _THROUGH_API,
    _call,
    _settings,
    _store,
    key_option,
    url_option,
)
from promptblame.api.cli_releases import prompts, rollouts
from promptblame.api.cli_review import review
from promptblame.api.scopes import SCOPES
from promptblame.display import visible
from promptblame.errors import ConfigInvalid

if TYPE_CHECKING:  # the store (pyarrow) and the web stack load only in commands that use them
    from promptblame.settings import Settings
    from promptblame.store import Store


class _Group(click.Group):
    """Command lists show each command's whole first sentence (click cuts it at ~45
    characters otherwise); subgroups get the same class."""

    group_class = type

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.short_help and cmd.help:
                first = " ".join(cmd.help.split("\n\n")[0].split())
                cmd.short_help = first.split(". ")[0].rstrip(".") + "."
        super().format_commands(ctx, formatter)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="promptblame")
def main() -> None:
    """promptblame: which prompt or model version moved LLM answer quality."""
    logging.basicConfig(
        level=_settings().log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("httpx", "apscheduler"):  # a line per request / per job run
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.root.level))


@main.command()
@click.option("--host", help="Bind address (default PROMPTBLAME_HOST, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default PROMPTBLAME_PORT, 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Run the HTTP API (ingest, reads) on the configured store."""
    import uvicorn

    from promptblame.api.app import create_app

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = _settings(**overrides)
    store = _store(settings, create=True)
    try:
        app = create_app(settings, store)
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # GC's full passes, which otherwise walk it again every few ingest requests.
        gc.collect()
        gc.freeze()
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()


@main.command()
def worker() -> None:
    """Run the scheduled jobs against a ClickHouse server (embedded: `serve` runs them)."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    from promptblame.analysis.jobs import add_jobs

    settings = _settings()
    if not settings.clickhouse_url:
        raise click.ClickException(
            "the worker runs against a ClickHouse server (set PROMPTBLAME_CLICKHOUSE_URL);"
            " with the embedded store, `promptblame serve` runs the jobs itself"
        )
    store = _store(settings)
    scheduler = BlockingScheduler(timezone="UTC")
    add_jobs(scheduler, store, settings)
    click.echo(f"worker on the {store.kind} store; {len(scheduler.get_jobs())} jobs scheduled")
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        store.close()


@main.command()
def migrate() -> None:
    """Apply pending schema migrations (serve and worker also do this at start-up); creates
    the store in an empty data directory."""
    store = _store(_settings(), create=True)
    try:
        click.echo(f"schema at version {max(store.applied_migrations(), default=0)}")
    finally:
        store.close()


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option("--project", required=True, help="Project the key is scoped to.")
@click.option("--scopes", default="ingest,read", show_default=True, help=f"Comma list of {SCOPES}.")
@click.option("--name", default="", help="A label to recognise the key by.")
def keys_create(project: str, scopes: str, name: str) -> None:
    """Print a new key once; only its hash is stored."""
    from promptblame.api.auth import new_key

    try:
        plaintext, record = new_key(project, [s.strip() for s in scopes.split(",")], name)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    store = _store(_settings(), create=True)
    try:
        store.put_api_key(record)
    finally:
        store.close()
    click.echo(plaintext)
    click.echo(
        f"key {record.key_id} for project {project!r}, scopes {','.join(record.scopes)}"
        " (shown once; store it now)",
        err=True,
    )


@keys.command("list")
@click.option("--project", default="", help="Only this project's keys.")
def keys_list(project: str) -> None:
    """List keys (id, project, scopes, state, name, created); never the secret."""
    store = _store(_settings())
    try:
        for k in store.list_api_keys(project or None):
            state = "revoked" if k.revoked else "active"
            click.echo(
                visible(f"{k.key_id}\t{k.project_id}\t{','.join(k.scopes)}\t{state}\t{k.name}")
                + f"\t{k.created_at:%Y-%m-%d %H:%M}"
            )
    finally:
        store.close()


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id (the part after `pb_`); servers stop accepting it within
    PROMPTBLAME_KEY_CACHE_SECONDS."""
    store = _store(_settings())
    try:
        record = store.get_api_key(key_id)
        if record is None:
            raise click.ClickException(f"no key {key_id!r}")
        store.put_api_key(replace(record, revoked=True))
        click.echo(f"revoked {key_id}")
    finally:
        store.close()


@main.group()
def evaluators() -> None:
    """Evaluators as config: apply an evaluators.yaml, list what is applied."""


def _apply_config(
    file: Path,
    load: Callable[[Path], Any],
    to_doc: Callable[[Any], dict[str, Any]],
    api_path: str,
    apply_here: Callable[[Store, str, Any, bool], list[Any]],
    *,
    project: str | None,
    dry_run: bool,
    url: str | None,
    key: str | None,
) -> list[dict[str, Any]]:
    """A config file, validated here (errors with lines), applied through a running server
    (--url/--key) or directly on the store (--project); returns the changes."""
    try:
        config = load(file)
    except ConfigInvalid as exc:
        raise click.ClickException(
            f"{file} is not valid:\n" + "\n".join(f"  {p}" for p in exc.problems)
        ) from exc
    if url:
        answer = _call(url, key, "PUT", api_path, params={"dry_run": dry_run}, json=to_doc(config))
        return list(answer["changes"])
    if not project:
        raise click.UsageError("give --project (or --url and --key)")
    store = _store(_settings(), _THROUGH_API)
    try:
        return [asdict(c) for c in apply_here(store, project, config, dry_run)]
    except ConfigInvalid as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()


def _report_changes(
    changes: list[dict[str, Any]], line: Callable[[dict[str, Any]], str], dry_run: bool
) -> None:
    for c in changes:
        click.echo(visible(line(c)))
    changed = sum(c["action"] != "unchanged" for c in changes)
    click.echo(f"{changed} change(s) {'would' if dry_run else 'did'} apply", err=True)


@evaluators.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--project", help="Project to apply to (direct store access).")
@click.option("--dry-run", is_flag=True, help="Show the changes; change nothing.")
@url_option
@key_option
def evaluators_apply(
    file: Path, project: str | None, dry_run: bool, url: str | None, key: str | None
) -> None:
    """Validate FILE, then make the project's evaluators equal to it.

    Changing an evaluator's kind or params creates a new version; evaluators missing from the
    file are removed (their scores stay). Through a running server with --url/--key, else
    directly on the store (--project).
    """
    from promptblame.analysis.scoring.catalog import apply
    from promptblame.analysis.scoring.config import load_yaml

    changes = _apply_config(
        file,
        load_yaml,
        lambda specs: {"evaluators": [s.model_dump(mode="json") for s in specs]},
        "/v1/evaluators",
        lambda store, project, specs, dry: apply(store, project, specs, _settings(), dry_run=dry),
        project=project,
        dry_run=dry_run,
        url=url,
        key=key,
    )
    _report_changes(
        changes,
        lambda c: (
            f"{c['action']:<12} {c['name']}@{c['version']}"
            + (f" ({c['detail']})" if c["detail"] else "")
        ),
        dry_run,
    )


@evaluators.command("list")
@click.option("--project", help="Project (direct store access).")
@url_option
@key_option
def evaluators_list(project: str | None, url: str | None, key: str | None) -> None:
    """The applied evaluators as JSON."""
    if url:
        out = _call(url, key, "GET", "/v1/evaluators")["evaluators"]
    else:
        if not project:
            raise click.UsageError("give --project (or --url and --key)")
        from promptblame.analysis.scoring.catalog import listing

        settings = _settings()
        store = _store(settings, _THROUGH_API)
        try:
            out = listing(store, project, settings)
        finally:
            store.close()
    click.echo(json.dumps(out, indent=2, default=str))


@main.command()
@click.option("--project", help="Only this project (default: every project with evaluators).")
@click.option("--evaluator", "evaluator", help="Only this evaluator.")
@click.option("--backfill", is_flag=True, help="Score history from --since on.")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="With --backfill: earliest response time to score (UTC).",
)
def score(
    project: str | None, evaluator: str | None, backfill: bool, since: datetime | None
) -> None:
    """Run the scoring job once (what the scheduler does every minute), or --backfill history.

    Responses already scored by an evaluator version are never scored again; a backfill also
    retries those that failed before.
    """
    from promptblame.analysis.scoring.job import run_scoring

    if backfill and since is None:
        raise click.UsageError("--backfill needs --since DATE")
    if since is not None and not backfill:
        raise click.UsageError("--since only goes with --backfill")
    settings = _settings()
    store = _store(settings, "; stop `promptblame serve` first (it runs this job itself)")
    try:
        with click.progressbar(length=0, label="scoring", file=sys.stderr) as bar_:
            bar: Any = bar_  # its length is known only once the job has counted the work

            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(done - bar.pos)

            result = run_scoring(
                store,
                settings,
                project_id=project,
                evaluator=evaluator,
                backfill_since=since.replace(tzinfo=UTC) if since else None,
                progress=progress,
            )
    finally:
        store.close()
    click.echo(f"scored {result.scored}, errors {result.errors}, left for later {result.skipped}")
    if result.failed:
        raise click.ClickException(
            visible("some evaluators could not run: " + "; ".join(result.failed))
        )


@main.group()
def alerts() -> None:
    """Alert rules and channels as config: apply an alerts.yaml."""


@alerts.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--project", help="Project to apply to (direct store access).")
@click.option("--dry-run", is_flag=True, help="Show the changes; change nothing.")
@url_option
@key_option
def alerts_apply(
    file: Path, project: str | None, dry_run: bool, url: str | None, key: str | None
) -> None:
    """Validate FILE (channels and rules), then make the project's alert config equal to it."""
    from promptblame.analysis.alerting.catalog import apply
    from promptblame.analysis.alerting.rules import load_yaml

    changes = _apply_config(
        file,
        load_yaml,
        lambda config: config.model_dump(mode="json"),
        "/v1/alert-rules",
        lambda store, project, config, dry: apply(store, project, config, dry_run=dry),
        project=project,
        dry_run=dry_run,
        url=url,
        key=key,
    )
    _report_changes(changes, lambda c: f"{c['action']:<10} {c['section']} {c['name']}", dry_run)


def _one_pass(settings: Settings) -> Settings:
    """Settings for a single detection pass: in-process unless DETECTION_PROCESSES is set, as
    one pass does not repay starting the worker pool (2–3 s, more than it saves)."""
    if "detection_processes" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"detection_processes": 1})


@main.command()
@click.option("--project", help="Only this project.")
def detect(project: str | None) -> None:
    """Run the detection job once (find shifts, attribute them, update incidents), then send
    the alerts it calls for."""
    settings = _one_pass(_settings())
    store = _store(settings, "; stop `promptblame serve` first (it runs this job itself)")
    try:  # the statistics stack loads once there is a store to run on
        from promptblame.analysis.alerting.job import run_alerts
        from promptblame.analysis.detection import run_detection

        store.materialize_scores()
        run = run_detection(store, settings, project_id=project)
        sent = run_alerts(store, settings, project_id=project)
        for p in (
            [project] if project else store.projects_with_scores(datetime(2000, 1, 1, tzinfo=UTC))
        ):
            for i in store.incidents(p, status="open", limit=20):
                click.echo(visible(f"{i['incident_id']}  {i['verdict']:<16} {i['summary']}"))
        for r in run.not_analysed:
            where = "" if project else f"{r['project_id']}  "
            click.echo(
                visible(
                    f"not analysed  {where}{r['app']} {r['metric']} ({r['source']}): "
                    f"{r['reason'].replace('_', ' ')}, {r['detail']}"
                )
            )
    finally:
        store.close()
    click.echo(
        f"{run.series} series; {len(run.not_analysed)} not analysed (too little data);"
        f" incidents opened {run.opened}, revised {run.revised},"
        f" resolved {run.resolved}; alerts sent {sent.sent}, failed {sent.failed}",
        err=True,
    )


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("promptblame-demo"),
    show_default=True,
    help="Fresh directory for the demo's store, key and reports (re-created on each run).",
)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--scale", type=float, default=1.0, help="Traffic volume factor (1 = ~200k).")
@click.option("--no-serve", is_flag=True, help="Exit after writing the reports.")
def demo(data_dir: Path, port: int, scale: float, no_serve: bool) -> None:
    """A month of realistic traffic with injected regressions, end to end on the embedded
    store: ingest over HTTP, scoring, detection, verdicts, HTML reports, served."""
    import time

    from promptblame import demo as d

    started = time.perf_counter()

    def bar(label: str, total: int) -> Any:
        return click.progressbar(length=total, label=f"{label:<22}", file=sys.stderr)

    try:
        result, server = d.run(data_dir, port=port, scale=scale, echo=click.echo, bar=bar)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    took = time.perf_counter() - started
    click.echo(f"\ndone in {took:.0f} s; API key in {data_dir / 'demo-key.txt'}")
    if result.reports:
        click.echo(f"reports written to {result.reports[0].parent}/ (open index.html)")
    ids = [i["incident_id"] for i in result.incidents]
    _demo_commands(data_dir, result.url, result.key, ids, serving=not no_serve)
    if no_serve:
        server.stop()
        return
    click.echo(f"serving {result.url}/reports/  (key: {result.key}); Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _demo_commands(
    data_dir: Path, url: str, key: str, incident_ids: list[str], *, serving: bool
) -> None:
    """The commands that work on the demo's data, printed as they are to be typed (the
    executable by its path when `promptblame` on PATH is another one, or none)."""
    import shlex
    import shutil

    exe = Path(sys.executable).parent / "promptblame"
    found = shutil.which("promptblame")
    cmd = "promptblame"
    if exe.exists() and (found is None or Path(found).resolve() != exe.resolve()):
        cmd = shlex.quote(str(exe))
    env = f"PROMPTBLAME_DATA_DIR={shlex.quote(str(data_dir / 'store'))}"
    first = incident_ids[0] if incident_ids else "<incident id>"
    lines = []
    if serving:
        lines += [
            "while the demo serves, through its API:",
            f"  {cmd} incidents list --url {url} --key {key}",
            f"  {cmd} incidents show {first} --url {url} --key {key}",
        ]
    lines += [
        "once the demo has stopped (a running demo holds its store), on the store itself:",
        f"  {env} {cmd} incidents list --project demo",
        f"  {env} {cmd} report overview --project demo --out overview.html",
        f"  {env} {cmd} report incident {first} --project demo --out incident.html",
    ]
    click.echo("\n" + "\n".join(lines))


@main.group()
def incidents() -> None:
    """List open incidents and show one: verdict, evidence, the report's link."""


def _incident_rows(
    project: str | None, status: str, url: str | None, key: str | None, incident_id: str = ""
) -> list[dict[str, Any]]:
    """Incidents (evidence parsed) through the running server (--url/--key) or the store."""
    if url:
        if incident_id:
            return [_call(url, key, "GET", f"/v1/incidents/{incident_id}")]
        rows = _call(url, key, "GET", "/v1/incidents", params={"status": status, "limit": 200})
        return list(rows["incidents"])
    settings = _settings()
    project = project or settings.default_project
    store = _store(settings, "; pass --url and --key to read through the running server")
    try:
        if incident_id:
            row = store.incident(project, incident_id)
            found = [row] if row is not None else []
        else:
            found = store.incidents(project, status=status, limit=200)
    finally:
        store.close()
    for r in found:
        r["evidence"] = json.loads(r.get("evidence") or "{}")
    return found


@incidents.command("list")
@click.option("--project", help="Project (direct store access; default: the local project).")
@click.option(
    "--status",
    type=click.Choice(["open", "acknowledged", "resolved", "all"]),
    default="open",
    show_default=True,
)
@url_option
@key_option
def incidents_list(project: str | None, status: str, url: str | None, key: str | None) -> None:
    """One line per incident: id, severity, status, age, shift time, headline."""
    rows = _incident_rows(project, "" if status == "all" else status, url, key)
    # (loaded once the rows are read: without a store, the command fails before this import)
    from promptblame.reports.words import fmt_age, fmt_ts, headline, severity

    for r in rows:
        ev = r.get("evidence") or {}
        start = _when(r["shift_start"])
        click.echo(
            visible(
                f"{r['incident_id']}  {severity(r, ev):<8} {r['status']:<12}"
                f" {fmt_age(start):>6} ago  {fmt_ts(start)}  {headline(r, ev)}"
            )
        )
    click.echo(f"{len(rows)} incident(s), {status}", err=True)


def _when(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


@incidents.command("show")
@click.argument("incident_id")
@click.option("--project", help="Project (direct store access; default: the local project).")
@url_option
@key_option
def incidents_show(incident_id: str, project: str | None, url: str | None, key: str | None) -> None:
    """The verdict in sentences, the evidence's figures and where the full report is."""
    from promptblame.reports.words import explanation, fmt_ts, headline, severity

    rows = _incident_rows(project, "", url, key, incident_id)
    if not rows:
        raise click.ClickException(f"no incident {incident_id!r}")
    r = rows[0]
    ev = r.get("evidence") or {}
    lines = [
        f"{severity(r, ev).upper()} · {r['status']} · {headline(r, ev)}",
        f"shift at {fmt_ts(_when(r['shift_start']))}; metric {r['metric']} ({r['source']});"
        f" revision {r['revision']}",
        "",
        *explanation(r, ev),
        "",
        f"report: /reports/incidents/{incident_id} on the server, or"
        f" `promptblame report incident {incident_id} --project <project> --out FILE`",
    ]
    click.echo(visible("\n".join(lines)))


@main.group()
def report() -> None:
    """Export HTML reports as self-contained files (inline CSS and SVG, no scripts, no network)."""


def _export(out: Path, html: str) -> None:
    out.write_text(html, encoding="utf-8")
    click.echo(f"wrote {out} ({len(html.encode()) // 1024} KB)", err=True)


_SERVE_HOLDS = "; stop `promptblame serve` first, or open /reports/ in a browser on the server"


@report.command("incident")
@click.argument("incident_id")
@click.option("--project", required=True, help="Project of the incident.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def report_incident(incident_id: str, project: str, out: Path) -> None:
    """One incident: verdict, evidence, charts, per-version table, prompt diff, samples."""
    from promptblame.errors import NotFound
    from promptblame.reports.data import incident_view
    from promptblame.reports.render import render_incident

    store = _store(_settings(), _SERVE_HOLDS)
    try:
        view = incident_view(store, project, incident_id)
    except NotFound as exc:
        raise click.ClickException(f"{exc} in project {project!r}") from exc
    finally:
        store.close()
    _export(out, render_incident(view, api_base=None))


@report.command("overview")
@click.option("--project", required=True, help="Project to report on.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def report_overview(project: str, out: Path) -> None:
    """Open incidents, trends per app and metric, recent alerts and version rollouts."""
    settings = _settings()
    store = _store(settings, _SERVE_HOLDS)
    try:  # the reports load once there is a store to report on
        from promptblame.reports.data import overview_view
        from promptblame.reports.render import render_overview

        view = overview_view(store, project, settings=settings)
    finally:
        store.close()
    _export(out, render_overview(view, api_base=None))


class GateDataError(click.ClickException):
    """Usage or data problem in `gate` (no such run, no scores): exit 2, like click's usage
    errors, so a CI step can tell "could not gate" from "the candidate failed" (1)."""

    exit_code = 2


def _max_drops(values: tuple[str, ...]) -> tuple[float, dict[str, float]]:
    default, per_metric = 0.02, {}
    for v in values:
        name, sep, number = v.rpartition("=")
        try:
            drop = float(number)
        except ValueError:
            drop = -1.0
        if not drop >= 0 or drop == float("inf") or (sep and not name):
            raise GateDataError(f"--max-drop: expected a number >= 0 or METRIC=NUMBER, got {v!r}")
        if sep:
            per_metric[name] = drop
        else:
            default = drop
    return default, per_metric


@main.command()
@click.option("--app", required=True, help="The app whose eval runs to compare.")
@click.option("--baseline", required=True, help="Baseline version (prompt version or model).")
@click.option("--candidate", required=True, help="Candidate version, same kind as --baseline.")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Score name or response.* metric to gate on (repeat); default: every score.",
)
@click.option(
    "--max-drop",
    "max_drop",
    multiple=True,
    help="Allowed drop in the metric's units (default 0.02); METRIC=NUMBER for one metric.",
)
@click.option("--alpha", type=click.FloatRange(0, 0.5, min_open=True, max_open=True), default=0.05)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
)
@click.option(
    "--by",
    type=click.Choice(["auto", "prompt_version", "model_version", "model"]),
    default="auto",
    show_default=True,
    help="Column the versions are in; auto: the first that holds both.",
)
@click.option("--environment", default="eval", show_default=True)
@click.option("--baseline-run", help="Eval run id (tag run_id); default: the newest run.")
@click.option("--candidate-run", help="Eval run id; default: the newest run.")
@click.option(
    "--case-threshold", type=float, help="Score change that names a case; default: automatic."
)
@click.option("--project", help="Project (embedded store; default: the local project).")
@url_option
@click.option("--api-key", "--key", "key", envvar="PROMPTBLAME_API_KEY", help="Key for --url.")
def gate(
    app: str,
    baseline: str,
    candidate: str,
    metrics: tuple[str, ...],
    max_drop: tuple[str, ...],
    alpha: float,
    fmt: str,
    by: str,
    environment: str,
    baseline_run: str | None,
    candidate_run: str | None,
    case_threshold: float | None,
    project: str | None,
    url: str | None,
    key: str | None,
) -> None:
    """Gate a candidate version on its eval run: paired by case, per-metric tests (McNemar,
    paired t or Wilcoxon), Holm across metrics, the regressed cases named.

    Exit status: 0 pass, 1 fail, 2 usage or data error, 3 inconclusive.
    """
    from promptblame.reports.gate import EXIT_CODES, render_markdown, render_text

    default_drop, per_metric = _max_drops(max_drop)
    body: dict[str, Any] = {
        "app": app,
        "baseline": baseline,
        "candidate": candidate,
        "by": by,
        "environment": environment,
        "baseline_run": baseline_run,
        "candidate_run": candidate_run,
        "metrics": list(metrics),
        "max_drop": default_drop,
        "max_drop_per_metric": per_metric,
        "alpha": alpha,
        "case_threshold": case_threshold,
    }
    if url:
        try:
            result = _call(url, key, "POST", "/v1/gate", json=body)
        except click.ClickException as exc:
            raise GateDataError(exc.message) from exc
    else:
        from promptblame.analysis.service import GateSpec, run_gate
        from promptblame.errors import InvalidArgument, NotFound

        settings = _settings()
        store = _store(settings, "; pass --url and --api-key to gate through the running server")
        try:
            result = run_gate(store, project or settings.default_project, GateSpec(**body))
        except (InvalidArgument, NotFound) as exc:
            raise GateDataError(str(exc)) from exc
        finally:
            store.close()
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo((render_markdown if fmt == "markdown" else render_text)(result), nl=False)
    sys.exit(EXIT_CODES[result["verdict"]])


main.add_command(prompts)
main.add_command(rollouts)
main.add_command(review)

if __name__ == "__main__":
    main()
