"""Render a policy report as text, JSON, markdown (pull-request comment) or GitHub
workflow annotations.

Every name, run, location, policy and rule name, finding and waiver reason is hostile:
each format escapes them with `regctl.escape` (text lines, code spans in table cells,
workflow-command escaping, inert JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

from regctl import escape
from regctl.policy.values import Outcome, PolicyReport, Result

__all__ = ["FORMAT_VERSION", "render_report"]

FORMAT_VERSION: Final = 1
"""Version of the JSON report; bumped on any incompatible change."""


def render_report(report: PolicyReport, fmt: str, *, verbose: bool = False) -> str:
    """Render a report as `text`, `json`, `markdown` or `github` (workflow annotations).

    Text and markdown list passing results only when `verbose` (markdown folds them into
    a collapsed section); json always holds every result. The output ends with a newline.
    Names, runs, locations, policy and rule names, findings and waiver reasons are
    hostile: each format escapes them with `regctl.escape` (text lines, code spans in
    table cells, workflow-command escaping, inert JSON).
    """
    if fmt == "text":
        return _render_text(report, verbose=verbose)
    if fmt == "json":
        return _render_json(report)
    if fmt == "markdown":
        return _render_markdown(report, verbose=verbose)
    if fmt == "github":
        return _render_github(report)
    raise ValueError(f"unknown report format {fmt!r} (text, json, markdown, github)")


def _summary(report: PolicyReport) -> str:
    c = report.counts()
    if not report.results:
        return "policy check: no policy applies to the selected versions"
    expired = f" ({c['expired-waiver']} by expired waivers)" if c["expired-waiver"] else ""
    return (
        f"policy check: {c['deny'] + c['expired-waiver']} denied{expired}, "
        f"{c['warn']} warned, {c['waived']} waived, {c['pass']} passed"
    )


_LABELS: Final[Mapping[Outcome, str]] = {
    "deny": "DENY",
    "expired-waiver": "DENY (waiver expired)",
    "warn": "WARN",
    "waived": "WAIVED",
    "pass": "pass",
}


def _render_text(report: PolicyReport, *, verbose: bool) -> str:
    lines = []
    for r in report.results:
        if not verbose and r.outcome == "pass":
            continue
        where = r.location + ": " if r.location else ""
        lines.append(escape.text(f"{where}{_LABELS[r.outcome]}: {r.message}"))
        if r.failed and r.waive_with is not None and r.waiver_note is None:
            # the binding a waiver of exactly this run needs, ready to paste
            lines.append(escape.text(f"  a waiver of this run gives: {r.waive_with}"))
    lines.append(_summary(report))
    return "\n".join(lines) + "\n"


def _render_json(report: PolicyReport) -> str:
    summary: dict[str, int] = dict(report.counts().items())
    summary["denied"] = len(report.denied)
    summary["exit_code"] = report.exit_code
    doc = {
        "format_version": FORMAT_VERSION,
        "results": [r.to_json() for r in report.results],
        "summary": summary,
    }
    return escape.json_text(json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False)) + "\n"


_MD_HEADER: Final = (
    "| Outcome | Model | Version | Run | Policy / rule | Observed | Bound | Detail |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _md_row(r: Result) -> str:
    outcome = f"**{r.outcome}**" if r.failed else r.outcome
    version = f"v{r.version}" if r.version is not None else "new"
    detail = r.detail
    if r.waiver_expires is not None:
        state = "waived until" if r.outcome == "waived" else "waiver expired on"
        detail += f"; {state} {r.waiver_expires.isoformat()}: {r.waiver_reason}"
    # Every cell but the outcome and the version number is a value: a code span.
    md = escape.md_cell
    cells = (
        outcome,
        md(r.model),
        version,
        md(r.run),
        md(f"{r.policy} / {r.rule}"),
        md(r.observed),
        md(r.bound),
        md(detail),
    )
    return "| " + " | ".join(cells) + " |"


def _render_markdown(report: PolicyReport, *, verbose: bool) -> str:
    c = report.counts()
    out = ["### Policy check", ""]
    if not report.results:
        out.append("No policy applies to the selected versions.")
        return "\n".join(out) + "\n"
    denied = c["deny"] + c["expired-waiver"]
    out.append(
        f"{'**' if denied else ''}{denied} denied{'**' if denied else ''} · "
        f"{c['warn']} warned · {c['waived']} waived · {c['pass']} passed"
    )
    findings = [r for r in report.results if r.outcome != "pass"]
    if findings:
        out += ["", _MD_HEADER, *(_md_row(r) for r in findings)]
    passes = report.passed
    if verbose and passes:
        out += [
            "",
            f"<details><summary>{len(passes)} passed</summary>",
            "",
            _MD_HEADER,
            *(_md_row(r) for r in passes),
            "",
            "</details>",
        ]
    return "\n".join(out) + "\n"


_LOCATION_RE: Final = re.compile(r"^(?P<file>.+?)(?::(?P<line>\d+))?(?::(?P<col>\d+))?$", re.S)
_GH_LEVELS: Final[Mapping[Outcome, str]] = {
    "deny": "error",
    "expired-waiver": "error",
    "warn": "warning",
    "waived": "notice",
}


def _render_github(report: PolicyReport) -> str:
    lines = []
    for r in report.results:
        level = _GH_LEVELS.get(r.outcome)
        if level is None:
            continue
        props = []
        m = _LOCATION_RE.match(r.location)
        if m is not None and r.location:
            props.append(f"file={escape.annotation_property(m.group('file'))}")
            if m.group("line"):
                props.append(f"line={m.group('line')}")
            if m.group("col"):
                props.append(f"col={m.group('col')}")
        props.append(f"title={escape.annotation_property(f'{r.policy}/{r.rule}')}")
        message = r.message if r.outcome != "waived" else f"waived: {r.message}"
        lines.append(f"::{level} {','.join(props)}::{escape.annotation(message)}")
    lines.append(_summary(report))
    return "\n".join(lines) + "\n"
