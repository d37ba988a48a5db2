"""The gate's result as terminal text or a pull-request comment (Markdown).

Case ids, inputs and outputs come from the app and its LLM: untrusted. Text output shows
control characters as symbols (no ANSI escape reaches a terminal or CI log); Markdown escapes
HTML and Markdown syntax and defuses @mentions, so an output cannot format, link or ping anyone.
"""

from __future__ import annotations

import re
from typing import Any

from promptblame.display import visible

EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 3}
"""Exit status of `promptblame gate` per verdict; 2 is a usage or data error."""

MAX_CASES_SHOWN = 25  # per list in text/Markdown; JSON has them all
_ENTITIES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", "@": "&#64;", "#": "&#35;", ":": "&#58;"}
)
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()!|~])")  # inline syntax; our cells never start a line


def plain(value: object, limit: int = 120) -> str:
    """One line of inert text: newlines as spaces, control and bidi characters as visible
    symbols (display.visible), cut to `limit`."""
    text = visible(" ".join(str(value).split("\n")).replace("\t", " "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def md(value: object, limit: int = 120) -> str:
    """One line of Markdown that renders as the literal text: HTML escaped, inline syntax
    backslashed; @mentions (would ping), #123 (would link an issue) and "https:" (would
    autolink) written as entities."""
    return _MD_SPECIAL.sub(r"\\\1", plain(value, limit).translate(_ENTITIES))


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}" if abs(v) < 1e-3 and v else f"{v:.{digits}f}"


def _ci(m: dict[str, Any]) -> str:
    if m["ci_low"] is None:
        return "-"
    return f"[{_num(m['ci_low'])}, {_num(m['ci_high'])}]"


def _p(v: float | None) -> str:
    return "-" if v is None else f"{v:.2g}"


def _title(r: dict[str, Any], esc: Any) -> str:
    b, c = r["baseline"], r["candidate"]
    return (
        f"app {esc(r['app'])}, {r['compared']} {esc(b['version'])} (run {esc(b['run_id'] or '-')})"
        f" -> {esc(c['version'])} (run {esc(c['run_id'] or '-')}), environment"
        f" {esc(r['environment'])}"
    )


def _value(v: float, kind: str) -> str:
    if kind == "pass_fail":
        return "pass" if v == 1.0 else "fail"
    return _num(v)


def render_text(r: dict[str, Any]) -> str:
    lines = [f"promptblame gate: {r['verdict'].upper()}", _title(r, plain), ""]
    head = (
        f"{'metric':<24} {'test':<22} {'cases':>5} {'baseline':>9} {'candidate':>9}"
        f" {'change':>8}  {'CI':<20} {'p (Holm)':>8}  verdict"
    )
    lines.append(head)
    for m in r["metrics"]:
        name = plain(m["metric"] + (f" [{m['source']}]" if m["source"] else ""), 24)
        lines.append(
            f"{name:<24} {m['test']:<22} {m['cases']:>5} {_num(m['baseline_mean']):>9}"
            f" {_num(m['candidate_mean']):>9} {_num(m['effect']):>8}  {_ci(m):<20}"
            f" {_p(m['p_holm']):>8}  {m['verdict'].upper()}"
        )
        lines.append(f"  {m['why']}")
    for m in r["metrics"]:
        for label, changes in (("regressed", m["regressed"]), ("improved", m["improved"])):
            if not changes:
                continue
            lines += ["", f"{label.capitalize()} cases of {plain(m['metric'])}: {len(changes)}"]
            for c in changes[:MAX_CASES_SHOWN]:
                lines.append(
                    f"  {plain(c['case_id'], 40)}: {_value(c['baseline'], m['kind'])} ->"
                    f" {_value(c['candidate'], m['kind'])}   input: {plain(c['input'], 80)}"
                )
                lines.append(f"      baseline:  {plain(c['baseline_output'], 100)}")
                lines.append(f"      candidate: {plain(c['candidate_output'], 100)}")
            if len(changes) > MAX_CASES_SHOWN:
                lines.append(f"  ... and {len(changes) - MAX_CASES_SHOWN} more (--format json)")
    for side in ("baseline", "candidate"):
        missing = r[f"cases_only_in_{side}"]
        if missing:
            shown = ", ".join(plain(c, 40) for c in missing[:MAX_CASES_SHOWN])
            more = f" (+{len(missing) - MAX_CASES_SHOWN})" if len(missing) > MAX_CASES_SHOWN else ""
            lines += ["", f"Cases only in the {side} run ({len(missing)}): {shown}{more}"]
    if r["warnings"]:
        lines += ["", *(f"warning: {plain(w, 300)}" for w in r["warnings"])]
    code = EXIT_CODES[r["verdict"]]
    lines += ["", f"exit {code} ({r['verdict']})"]
    return "\n".join(lines) + "\n"


def render_markdown(r: dict[str, Any]) -> str:
    """A pull-request comment: verdict, a metric table, the moved cases folded away."""
    lines = [
        f"### promptblame gate: **{r['verdict'].upper()}**",
        "",
        _title(r, md),
        "",
        "| metric | test | cases | baseline | candidate | change | CI | p (Holm) | verdict |",
        "|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for m in r["metrics"]:
        name = md(m["metric"]) + (f" ({md(m['source'])})" if m["source"] else "")
        lines.append(
            f"| {name} | {m['test']} | {m['cases']} | {_num(m['baseline_mean'])} |"
            f" {_num(m['candidate_mean'])} | {_num(m['effect'])} | {_ci(m)} |"
            f" {_p(m['p_holm'])} | **{m['verdict']}** |"
        )
    lines.append("")
    lines += [f"- **{md(m['metric'])}**: {m['why']}" for m in r["metrics"]]  # ours: numbers
    for m in r["metrics"]:
        for label, changes in (("regressed", m["regressed"]), ("improved", m["improved"])):
            if not changes:
                continue
            lines += [
                "",
                f"<details><summary>{len(changes)} {label} cases of {md(m['metric'])}</summary>",
                "",
                "| case | baseline | candidate | input | baseline output | candidate output |",
                "|---|---|---|---|---|---|",
            ]
            for c in changes[:MAX_CASES_SHOWN]:
                lines.append(
                    f"| {md(c['case_id'], 60)} | {_value(c['baseline'], m['kind'])} |"
                    f" {_value(c['candidate'], m['kind'])} | {md(c['input'], 80)} |"
                    f" {md(c['baseline_output'], 100)} | {md(c['candidate_output'], 100)} |"
                )
            if len(changes) > MAX_CASES_SHOWN:
                lines.append(f"\n{len(changes) - MAX_CASES_SHOWN} more in the JSON output.")
            lines += ["", "</details>"]
    for side in ("baseline", "candidate"):
        missing = r[f"cases_only_in_{side}"]
        if missing:
            shown = ", ".join(md(c, 60) for c in missing[:MAX_CASES_SHOWN])
            lines += ["", f"**{len(missing)} cases only in the {side} run**: {shown}"]
    if r["warnings"]:
        lines += ["", *(f"> {md(w, 300)}" for w in r["warnings"])]
    return "\n".join(lines) + "\n"
