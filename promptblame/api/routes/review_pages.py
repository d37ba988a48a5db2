"""The review pages: queues, one response at a time to label, and evaluator agreement.

Same login cookie as the other report pages. The label form posts with the page's CSRF token
(`api.csrf`) and needs a key with the `review` or `admin` scope; a read key sees the pages but
its posts are refused. The review page is the one page that runs a script: a static,
first-party file (`/reports/static/review.js`, CSP `script-src 'self'`; nothing inline, so text
from responses still cannot run) that turns key presses into the form's buttons. Without it
every action is still a plain form post.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from promptblame.api import csrf
from promptblame.api.json_body import json_router
from promptblame.api.routes.reports import COOKIE, CSP, _html, _logout, _reader, _to_login
from promptblame.api.routes.review import reviewer_name
from promptblame.api.state import State
from promptblame.errors import InvalidArgument
from promptblame.reports import review_view
from promptblame.reports.render import render_page
from promptblame.review import queues
from promptblame.review.config import NAME

router = json_router(prefix="/reports", tags=["reports"], include_in_schema=False)
Queue = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME)]
REVIEW_CSP = CSP.replace("default-src 'none';", "default-src 'none'; script-src 'self';")
_SCRIPT = files("promptblame.reports").joinpath("static/review.js").read_text(encoding="utf-8")


def _purpose(queue: str) -> str:
    return f"review:{queue}"


@router.get("/review")
def review_queues(request: Request, state: State) -> Response:
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    view = review_view.queues_view(state.store, p.project_id)
    return _html(
        render_page("review_queues.html", v=view, logout=_logout(state), nav_here="/reports/review")
    )


@router.get("/review/{queue}")
def review_item(
    request: Request,
    state: State,
    queue: Queue,
    last: Annotated[str, Query(max_length=256)] = "",
) -> Response:
    """The reviewer's next item (leased to them), or the queue's end. `last`: the item just
    answered, whose automated scores are shown now that the reviewer has given theirs."""
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    can_label = bool(p.scopes & {"review", "admin"})
    reviewer = reviewer_name(state, p)
    view = review_view.item_view(
        state.store,
        p.project_id,
        queue,
        reviewer=reviewer,
        key_id=p.key_id,
        serve=can_label,
        last=last,
    )
    token = csrf.token(state.settings, csrf.session_of(request, COOKIE), _purpose(queue))
    html = render_page(
        "review.html",
        v=view,
        csrf=token,
        can_label=can_label,
        logout=_logout(state),
        nav_here="/reports/review",
        reviewer=reviewer,
    )
    response = _html(html)
    response.headers["Content-Security-Policy"] = REVIEW_CSP
    return response


@router.post("/review/{queue}")
async def review_answer(request: Request, state: State, queue: Queue) -> Response:
    """The label form: label, skip or undo; then the next item."""
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    form = parse_qs(
        (await request.body())[:65536].decode("utf-8", "replace"), keep_blank_values=True
    )
    one = {k: v[0] for k, v in form.items()}
    csrf.check(state.settings, request, one.get("csrf", ""), cookie=COOKIE, purpose=_purpose(queue))
    if not p.scopes & {"review", "admin"}:
        p.require("review")
    reviewer = reviewer_name(state, p)
    action = one.get("action", "")
    event_id = one.get("event_id", "")[:256]
    last = ""
    if action == "undo":
        await run_in_threadpool(
            queues.undo, state.store, p.project_id, queue, reviewer=reviewer, key_id=p.key_id
        )
    elif action in ("label", "skip"):
        labels = {k[len("f.") :]: v for k, v in one.items() if k.startswith("f.")}
        await run_in_threadpool(
            lambda: queues.submit(
                state.store,
                p.project_id,
                queue,
                event_id=event_id,
                reviewer=reviewer,
                key_id=p.key_id,
                labels=labels,
                comment=one.get("comment", "").strip(),
                skip=action == "skip",
            )
        )
        last = event_id if action == "label" else ""
    else:
        raise InvalidArgument("action", "expected label, skip or undo")
    target = f"/reports/review/{quote(queue)}" + (f"?last={quote(last, safe='')}" if last else "")
    return RedirectResponse(target, status_code=303)


@router.get("/agreement")
def agreement(
    request: Request, state: State, metric: Annotated[str, Query(max_length=64)] = ""
) -> Response:
    p = _reader(request, state)
    if p is None:
        return _to_login(request)
    view = review_view.agreement_view(state.store, p.project_id, metric)
    return _html(
        render_page("agreement.html", v=view, logout=_logout(state), nav_here="/reports/agreement")
    )


@router.get("/static/review.js")
def review_script() -> Response:
    return Response(
        _SCRIPT,
        media_type="text/javascript",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=300"},
    )
