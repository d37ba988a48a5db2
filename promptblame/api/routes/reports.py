"""HTML reports for people: overview, incident, comparison, experiment, and a browser login.

Same keys as the API. Browsers cannot send `Authorization` headers from a link, so a key may
also come from a cookie that `POST /reports/login` sets: HttpOnly (scripts cannot read it),
SameSite=Strict (other sites cannot make the browser send it), Path=/reports (the /v1 API
never reads it, so API auth is unchanged). Pages carry a strict Content-Security-Policy: no
script runs on them even if some text escaped the templates' autoescape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote

from fastapi import Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from promptblame.analysis.service import ExperimentSpec
from promptblame.api import csrf
from promptblame.api.auth import Principal
from promptblame.api.json_body import json_router
from promptblame.api.params import TEXT, Instant, utc
from promptblame.api.routes.analysis import CompareRequest, _parse_split
from promptblame.api.routes.incidents import StatusNote, _set_status, rollback_incident
from promptblame.api.state import AppState, State
from promptblame.errors import Forbidden, InvalidArgument, Unauthorized
from promptblame.releases import rollouts
from promptblame.reports import data
from promptblame.reports.render import (
    render_comparison,
    render_experiment,
    render_experiments,
    render_incident,
    render_incidents,
    render_jobs,
    render_login,
    render_overview,
    render_prompt,
    render_response,
    render_responses,
    render_rollout,
    render_rollouts,
)
from promptblame.store import ResponseFilter

router = json_router(prefix="/reports", tags=["reports"], include_in_schema=False)

COOKIE = "pb_report_key"
COOKIE_MAX_AGE = 12 * 3600
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null"
            # with our own form posts, and the CSRF check needs their real origin
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        },
    )


def _reader(request: Request, state: AppState) -> Principal | None:
    """The read principal from the header, else the login cookie; None means "log in"."""
    s = state.settings
    if s.auth_disabled:
        return Principal(s.default_project, frozenset({"ingest", "read", "admin"}), "local")
    header = request.headers.get("authorization")
    principal: Principal | None
    if header:
        principal = state.keys.check(header)  # a bad header is an API client's error: 401
    else:
        cookie = request.cookies.get(COOKIE, "")
        try:
            principal = state.keys.check(f"Bearer {cookie}") if cookie else None
        except Unauthorized:
            principal = None
    if principal is not None:
        principal.require("read")
    return principal


def _logout(state: AppState) -> bool:
    return not state.settings.auth_disabled


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/reports/login?next={quote(target, safe='')}", status_code=303)


def _safe_next(target: str) -> str:
    """Only our own report pages: never an open redirect."""
    ok = target.startswith("/reports") and not target.startswith("//") and "\\" not in target
    return target if ok else "/reports/"


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, state: State) -> Response:
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    return _html(
        render_overview(
            data.overview_view(state.store, p.project_id, settings=state.settings),
            logout=_logout(state),
        )
    )


def _status_purpose(incident_id: str) -> str:
    return f"incident-status:{incident_id}"


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
def incident(
    request: Request, state: State, incident_id: Annotated[str, Path(min_length=1, max_length=64)]
) -> Response:
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    form_token = csrf.token(
        state.settings, csrf.session_of(request, COOKIE), _status_purpose(incident_id)
    )
    return _html(
        render_incident(
            data.incident_view(state.store, p.project_id, incident_id),
            logout=_logout(state),
            csrf=form_token,
            can_admin="admin" in p.scopes,
        )
    )


_STATUSES = {"acknowledge": "acknowledged", "resolve": "resolved"}


@router.post("/incidents/{incident_id}/status")
async def incident_status(
    request: Request, state: State, incident_id: Annotated[str, Path(min_length=1, max_length=64)]
) -> Response:
    """The Roll back / Acknowledge / Resolve forms: an admin key (the login cookie) and the
    page's CSRF token; then back to the incident page. The same changes as POST
    /v1/incidents/{id}/rollback, /ack and /resolve."""
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    form = parse_qs((await request.body())[:8192].decode("utf-8", "replace"))
    csrf.check(
        state.settings,
        request,
        (form.get("csrf") or [""])[0],
        cookie=COOKIE,
        purpose=_status_purpose(incident_id),
    )
    p.require("admin")
    action = (form.get("action") or [""])[0]
    if action == "rollback":  # the same as POST /v1/incidents/{id}/rollback
        await run_in_threadpool(rollback_incident, incident_id, state, p)
    elif action in _STATUSES:
        note = StatusNote(note=(form.get("note") or [""])[0][:2000].strip())
        status = _STATUSES[action]
        await run_in_threadpool(_set_status, state, p.project_id, incident_id, status, note)
    else:
        raise InvalidArgument("action", "expected acknowledge, resolve or rollback")
    return RedirectResponse(f"/reports/incidents/{quote(incident_id)}", status_code=303)


@router.get("/incidents", response_class=HTMLResponse)
def incidents(
    request: Request,
    state: State,
    status: Annotated[Literal["open", "acknowledged", "resolved", "all"], Query()] = "open",
) -> Response:
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    view = data.incidents_view(state.store, p.project_id, status=status)
    return _html(render_incidents(view, logout=_logout(state)))


@router.get("/experiments", response_class=HTMLResponse)
def experiments(request: Request, state: State) -> Response:
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    view = data.experiments_view(state.store, p.project_id)
    return _html(render_experiments(view, logout=_logout(state)))


@router.get("/rollouts", response_class=HTMLResponse)
def rollouts_page(request: Request, state: State) -> Response:
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    states = sorted(state.store.rollout_states(p.project_id), key=lambda r: r["claimed_at"])
    rows = [rollouts.public(state.store, p.project_id, st) for st in reversed(states)]
    return _html(render_rollouts(rows, logout=_logout(state)))


@router.get("/rollouts/{rollout_id}", response_class=HTMLResponse)
def rollout_page(
    request: Request,
    state: State,
    rollout_id: Annotated[str, Path(min_length=1, max_length=600)],
) -> Response:
    """Step timeline, the guardrails' estimates now and at every decision, the decision log."""
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    st = rollouts.get(state.store, p.project_id, rollout_id)
    view = rollouts.public(state.store, p.project_id, st, live=True)
    charts = data.rollout_charts(state.store, p.project_id, st)
    return _html(render_rollout(view, charts, logout=_logout(state)))


@router.get("/jobs", response_class=HTMLResponse)
def jobs(request: Request, state: State) -> Response:
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    view = data.jobs_view(state.store, p.project_id, state.settings)
    return _html(render_jobs(view, logout=_logout(state)))


def _instant(field: str, text: str) -> datetime | None:
    if not text:
        return None
    try:
        return utc(datetime.fromisoformat(text.strip()))
    except ValueError as exc:
        raise InvalidArgument(
            field, f"expected a date or time like 2026-11-24T14:00, got {text!r}"
        ) from exc


def _number(field: str, text: str, default: float) -> float:
    try:
        return float(text) if text.strip() else default
    except ValueError as exc:
        raise InvalidArgument(field, f"expected a number, got {text!r}") from exc


@router.get("/responses", response_class=HTMLResponse)
def responses(request: Request, state: State) -> Response:
    """The response explorer: filters (dimensions, time range, text, score range), paging."""
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    q = {k: v[:256] for k, v in request.query_params.items()}
    f = ResponseFilter(
        **{k: q.get(k, "").strip() for k in data.EXPLORER_FIELDS},
        since=_instant("since", q.get("since", "")),
        until=_instant("until", q.get("until", "")),
    )
    score = None
    if q.get("metric"):
        lo = _number("min", q.get("min", ""), float("-inf"))
        hi = _number("max", q.get("max", ""), float("inf"))
        score = (q["metric"], max(lo, -1e300), min(hi, 1e300))
    before = None
    if q.get("before"):
        ts, _, event_id = q["before"].partition("|")
        at = _instant("before", ts)
        before = (at, event_id) if at else None
    view = data.responses_view(
        state.store,
        p.project_id,
        f=f,
        query=q,
        search=q.get("q", "").strip(),
        score=score,
        before=before,
    )
    return _html(render_responses(view, logout=_logout(state)))


@router.get(f"/responses/{{event_id:{TEXT}}}", response_class=HTMLResponse)
def response(
    request: Request, state: State, event_id: Annotated[str, Path(min_length=1, max_length=256)]
) -> Response:
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    view = data.response_view(state.store, p.project_id, event_id)
    return _html(render_response(view, logout=_logout(state)))


@router.get(f"/prompts/{{prompt_id:{TEXT}}}", response_class=HTMLResponse)
def prompt(
    request: Request,
    state: State,
    prompt_id: Annotated[str, Path(min_length=1, max_length=256)],
    a: Annotated[str, Query(max_length=256)] = "",
    b: Annotated[str, Query(max_length=256)] = "",
) -> Response:
    """A prompt's versions and the diff of any two (labels and rollouts join with releases)."""
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    view = data.prompt_view(state.store, p.project_id, prompt_id, a=a, b=b)
    return _html(render_prompt(view, logout=_logout(state)))


_GROUP_FIELDS = (*ResponseFilter.__dataclass_fields__,)


@router.get("/compare", response_class=HTMLResponse)
def compare(request: Request, state: State) -> Response:
    """`/reports/compare?metric=correct&a.prompt_version=v1&b.prompt_version=v2` — the same
    fields as POST /v1/compare, groups as `a.<field>` / `b.<field>`."""
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    q = request.query_params
    body: dict[str, Any] = {
        k: q[k]
        for k in ("metric", "source", "since", "until", "test", "statistic", "alpha")
        if k in q
    }
    for g in ("a", "b"):
        body[g] = {f: q[f"{g}.{f}"] for f in _GROUP_FIELDS if f"{g}.{f}" in q}
    try:
        req = CompareRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidArgument(".".join(map(str, err["loc"])), err["msg"]) from exc
    spec = req.spec()
    return _html(
        render_comparison(
            data.comparison_view(state.store, p.project_id, spec), logout=_logout(state)
        )
    )


@router.get(f"/experiments/{{experiment:{TEXT}}}", response_class=HTMLResponse)
def experiment(
    request: Request,
    state: State,
    experiment: Annotated[str, Path(min_length=1, max_length=256)],
    metric: Annotated[list[str], Query(min_length=1)],
    control: Annotated[str, Query(max_length=256)] = "",
    split: Annotated[str, Query(max_length=2048)] = "",
    source: Annotated[str, Query(max_length=256)] = "",
    alpha: Annotated[float, Query(gt=0, le=0.5)] = 0.05,
    since: Instant | None = None,
    until: Instant | None = None,
) -> Response:
    """Every arm vs control on every metric, as GET /v1/experiments/{experiment} (a rollout's
    step included: its incumbent, split and always-valid inference by default)."""
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    control, split, watched = rollouts.experiment_defaults(
        state.store, p.project_id, experiment, control, split
    )
    spec = ExperimentSpec(
        experiment=experiment,
        metrics=metric,
        control=control,
        split=_parse_split(split) if split else None,
        source=source,
        alpha=alpha,
        sequential=watched,
        base=ResponseFilter(since=utc(since), until=utc(until)),
    )
    return _html(
        render_experiment(
            data.experiment_view(state.store, p.project_id, spec), logout=_logout(state)
        )
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(state: State, next: str = "/reports/") -> Response:
    if state.settings.auth_disabled:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _html(render_login(next_url=_safe_next(next)))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, state: State) -> Response:
    """Check the key, keep it in the cookie, go back to the page asked for."""
    raw = await request.body()
    form = parse_qs(raw[:8192].decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/reports/"])[0])
    try:
        principal = await run_in_threadpool(state.keys.check, f"Bearer {key}")
        principal.require("read")
    except (Unauthorized, Forbidden) as exc:
        return _html(render_login(next_url=target, error=str(exc)), status=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        max_age=COOKIE_MAX_AGE,
        path="/reports",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or state.settings.public_url.startswith("https"),
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/reports/login", status_code=303)
    response.delete_cookie(COOKIE, path="/reports", httponly=True, samesite="strict")
    return response
