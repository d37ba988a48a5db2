"""Render the reports to HTML strings: the same page is served and exported.

`api_base` is where the JSON API links point: "" on the server (same origin), None in exported
files, which then show the API paths as text so the file loads nothing and links nowhere.
`logout` shows the log-out button (not in local no-auth mode).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from promptblame import __version__
from promptblame.releases.policy import guard_num
from promptblame.reports.data import (
    ComparisonView,
    ExperimentsView,
    ExperimentView,
    IncidentsView,
    IncidentView,
    JobsView,
    OverviewView,
    PromptView,
    ResponsesView,
    ResponseView,
)
from promptblame.reports.env import environment


def _render(template: str, *, api_base: str | None, **context: Any) -> str:
    return (
        environment()
        .get_template(template)
        .render(
            api_base=api_base,
            version=__version__,
            rendered_at=datetime.now(UTC),
            **{
                "logout": True,
                "incident_link": None,
                "csrf": "",
                "can_admin": False,
                "nav_here": "",
                **context,
            },
        )
    )


def render_incident(
    view: IncidentView,
    *,
    api_base: str | None = "",
    logout: bool = True,
    csrf: str = "",
    can_admin: bool = False,
) -> str:
    """`csrf`: the form token for this page's Acknowledge/Resolve forms (none: no forms)."""
    return _render(
        "incident.html", api_base=api_base, logout=logout, v=view, csrf=csrf, can_admin=can_admin
    )


def render_overview(
    view: OverviewView,
    *,
    api_base: str | None = "",
    logout: bool = True,
    incident_link: str | None = None,
) -> str:
    """`incident_link`, for exported files: where incident `{id}` was exported beside this one,
    e.g. "incident-{id}.html"; without it exported incidents are not linked."""
    return _render(
        "overview.html",
        api_base=api_base,
        logout=logout,
        incident_link=incident_link,
        v=view,
        nav_here="/reports/",
    )


def render_comparison(
    view: ComparisonView, *, api_base: str | None = "", logout: bool = True
) -> str:
    return _render("comparison.html", api_base=api_base, logout=logout, v=view)


def render_experiment(
    view: ExperimentView, *, api_base: str | None = "", logout: bool = True
) -> str:
    return _render("experiment.html", api_base=api_base, logout=logout, v=view)


def render_login(*, next_url: str, error: str = "") -> str:
    return _render("login.html", api_base="", logout=False, next_url=next_url, error=error)


_TITLES = {
    400: "Bad request",
    401: "Log in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Conflict",
    422: "Something in the address is not valid",
}


def render_error(status: int, lines: list[str], *, logout: bool = True) -> str:
    """An error page in the browser: what is wrong, in words, and links back."""
    title = _TITLES.get(status, "Something went wrong")
    return _render(
        "error.html", api_base="", logout=logout, status=status, title=title, lines=lines
    )


def render_incidents(view: IncidentsView, *, logout: bool = True) -> str:
    return _render(
        "incidents.html", api_base="", logout=logout, v=view, nav_here="/reports/incidents"
    )


def render_experiments(view: ExperimentsView, *, logout: bool = True) -> str:
    return _render(
        "experiments.html", api_base="", logout=logout, v=view, nav_here="/reports/experiments"
    )


def render_jobs(view: JobsView, *, logout: bool = True) -> str:
    return _render("jobs.html", api_base="", logout=logout, v=view, nav_here="/reports/jobs")


def render_responses(view: ResponsesView, *, logout: bool = True) -> str:
    return _render(
        "responses.html", api_base="", logout=logout, v=view, nav_here="/reports/responses"
    )


def render_response(view: ResponseView, *, logout: bool = True) -> str:
    return _render(
        "response.html", api_base="", logout=logout, v=view, nav_here="/reports/responses"
    )


def render_rollouts(rows: list[dict[str, Any]], *, logout: bool = True) -> str:
    return _render(
        "rollouts.html", api_base="", logout=logout, v=rows, nav_here="/reports/rollouts"
    )


def render_rollout(
    rollout: dict[str, Any], charts: list[dict[str, Any]], *, logout: bool = True
) -> str:
    """`rollout`: GET /v1/rollouts/{id}'s answer (the live estimates and the decision log);
    `charts`: each guardrail's estimates over time (`data.rollout_charts`)."""
    return _render(
        "rollout.html", api_base="", logout=logout, r=rollout, charts=charts, guard_num=guard_num
    )


def render_prompt(view: PromptView, *, logout: bool = True) -> str:
    return _render("prompt.html", api_base="", logout=logout, v=view)


def render_page(template: str, *, logout: bool = True, **context: Any) -> str:
    """A served page (review, agreement) with the shared context."""
    return _render(template, api_base="", logout=logout, **context)
