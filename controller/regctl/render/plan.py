"""Render a Plan as text (Terraform-like), markdown (pull-request comment) or JSON.

One describe handler per change type; every format is built from those lines, so a new
change type needs one function here and one in apply.

Every name, description, tag, run id, path and the target come from the registry, the
manifests or a run directory: `regctl.escape` renders them as data. Text lines go
through `escape.text` whole (colour is added after it); in markdown each value is an
inline code span (`escape.md_code`, `escape.md_cell` in tables), and the describe lines
inside the ```diff fence are `escape.text` lines, so no value can close the fence.
"""

from __future__ import annotations

import json
import math
from functools import singledispatch
from typing import Any

from regctl import escape
from regctl.core.plan import (
    Change,
    CreateModel,
    CreateVersion,
    DeleteAlias,
    DeleteModel,
    DeleteVersion,
    Plan,
    RecordDigest,
    SetAlias,
    SetModelDescription,
    SetModelTag,
    SetVersionDescription,
    SyncRun,
)
from regctl.policy.values import Comparison, MetricSeries, Review
from regctl.render.chart import chart_lines
from regctl.render.policy import render_report

_COLORS = {"+": "\x1b[32m", "~": "\x1b[33m", "-": "\x1b[31m", "!": "\x1b[36m"}
_RESET = "\x1b[0m"


def _q(value: str | None) -> str:
    if value is None:
        return "(none)"
    text = value if len(value) <= 80 else value[:77] + "..."
    return json.dumps(text, ensure_ascii=False)


@singledispatch
def describe(change: Change) -> tuple[str, list[str]]:
    """A change as a headline and detail lines."""
    raise NotImplementedError(type(change).__name__)


@describe.register
def _(c: SyncRun) -> tuple[str, list[str]]:
    return (
        f"run {c.run_name} in experiment {c.experiment!r}",
        [f"from {c.run_dir} ({c.files} files, {_size(c.bytes)})"],
    )


@describe.register
def _(c: CreateModel) -> tuple[str, list[str]]:
    lines = []
    if c.description is not None:
        lines.append(f"description: {_q(c.description)}")
    lines += [f"tag {k}: {_q(v)}" for k, v in sorted(c.tags.items())]
    return f"registered model {c.model}", lines


@describe.register
def _(c: SetModelDescription) -> tuple[str, list[str]]:
    return f"description: {_q(c.old)} -> {_q(c.new)}", []


@describe.register
def _(c: SetModelTag) -> tuple[str, list[str]]:
    return f"tag {c.key}: {_q(c.old)} -> {_q(c.new)}", []


@describe.register
def _(c: CreateVersion) -> tuple[str, list[str]]:
    run = c.run_name or c.run_id or "?"
    pin = " (pinned)" if c.pinned else ""
    lines = [
        f"source: runs:/{c.run_id or '<run id after sync>'}"
        + (f"/{c.artifact_path}" if c.artifact_path else "")
    ]
    if c.description is not None:
        lines.append(f"description: {_q(c.description)}")
    if c.digest:
        lines.append(f"content: {c.digest}")
    return f"version {c.expected_version}{pin} from run {run}", lines


@describe.register
def _(c: RecordDigest) -> tuple[str, list[str]]:
    return f"version {c.version} content digest: {c.digest}", [
        "recorded from the entry's run directory (the version had no record)"
    ]


@describe.register
def _(c: SetVersionDescription) -> tuple[str, list[str]]:
    return f"version {c.version} description: {_q(c.old)} -> {_q(c.new)}", []


@describe.register
def _(c: SetAlias) -> tuple[str, list[str]]:
    head = (
        f"alias {c.alias} -> version {c.new}"
        if c.old is None
        else f"alias {c.alias}: version {c.old} -> {c.new}"
    )
    return head, [f"run: {c.run_name}"] if c.run_name else []


@describe.register
def _(c: DeleteAlias) -> tuple[str, list[str]]:
    return f"alias {c.alias} (on version {c.old})", []


@describe.register
def _(c: DeleteVersion) -> tuple[str, list[str]]:
    return f"version {c.version} (run {c.run_id})", []


@describe.register
def _(c: DeleteModel) -> tuple[str, list[str]]:
    return f"registered model {c.model}", []


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def summary_line(plan: Plan) -> str:
    counts = plan.counts()
    return (
        f"Plan: {counts['add']} to add, {counts['change']} to change, "
        f"{counts['destroy']} to destroy."
    )


def _groups(plan: Plan) -> list[tuple[str, list[Change]]]:
    names = sorted({c.model for c in plan.changes} | {n.model for n in plan.notes})
    return [(name, [c for c in plan.changes if c.model == name]) for name in names]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _evidence(review: Review | None, change: Change) -> list[str]:
    """For an alias move, the candidate's primary metric beside the incumbent's."""
    if review is None or not isinstance(change, SetAlias):
        return []
    for comp in review.comparisons:
        if (comp.model, comp.alias) == (change.model, change.alias) and comp.rows:
            row = comp.rows[0]
            if comp.incumbent is None:
                return [f"{row.metric}: {_fmt(row.candidate)} (no incumbent)"]
            return [f"{row.metric}: {_fmt(row.candidate)} (incumbent {_fmt(row.incumbent)})"]
    return []


def render_text(plan: Plan, *, color: bool = False, review: Review | None = None) -> str:
    """Terraform-like text, grouped by model, in apply order within each model."""

    esc = escape.text

    def paint(sym: str, text: str) -> str:  # after escaping: the only raw escapes
        return f"{_COLORS[sym]}{text}{_RESET}" if color else text

    out: list[str] = []
    if plan.empty:
        out.append(esc(f"No changes. The registry at {plan.target} matches the manifests."))
    else:
        out.append(esc(f"regctl will make these changes to {plan.target}:"))
    if plan.options.scope is not None:
        out.append(esc(f"Scope: only the models {', '.join(plan.options.scope)}"))
    for name, changes in _groups(plan):
        out.append("")
        out.append(esc(f"  # {name}") if name else "  # runs to log (sync)")
        for c in changes:
            sym = c.sign()
            head, lines = describe(c)
            out.append(paint(sym, esc(f"  {sym} {head}")))
            out.extend(esc(f"      {line}") for line in [*lines, *_evidence(review, c)])
        for note in (n for n in plan.notes if n.model == name):
            out.append(paint("!", esc(f"  ! {note.message}")))
    if not plan.empty:
        out.append("")
        out.append(summary_line(plan))
    if review is not None and review.report.results:
        out.append("")
        out.append(render_report(review.report, "text").rstrip("\n"))
    return "\n".join(out) + "\n"


def _comparison_table(comp: Comparison) -> list[str]:
    code = escape.md_code
    inc = "incumbent (none)" if comp.incumbent is None else f"incumbent {code(comp.incumbent)}"
    out = [
        "",
        f"**{code(comp.model)} {code(comp.alias)}**: candidate {code(comp.candidate)} vs {inc}",
        "",
        "| metric | candidate | incumbent | delta |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in comp.rows:
        delta = "" if row.delta is None else f"{row.delta:+.6g}"
        name = escape.md_cell(row.metric)
        if row is comp.rows[0] and comp.primary_metric:
            name = f"**{name}**"
        out.append(f"| {name} | {_fmt(row.candidate)} | {_fmt(row.incumbent)} | {delta} |")
    return out + chart_lines(comp)


def render_markdown(plan: Plan, review: Review | None = None) -> str:
    """The plan as a pull-request comment: summary, changes, verdicts, alias evidence."""
    out = ["### regctl plan", ""]
    if plan.empty:
        target = escape.md_code(plan.target)
        out.append(f"No changes: the registry at {target} matches the manifests.")
    else:
        out.append(f"**{summary_line(plan)}** Target: {escape.md_code(plan.target)}")
    if plan.options.scope is not None:
        scope = ", ".join(escape.md_code(n) for n in plan.options.scope) or "(none)"
        out += ["", f"Scope: only the models {scope}"]
    if review is not None:
        report = review.report
        head = "**Policy: denied**" if report.denied else "**Policy: passed**"
        counts = (
            f"{len(report.denied)} denied, {len(report.warned)} warned, {len(report.waived)} waived"
        )
        out += ["", f"{head} ({counts})"]
    for name, changes in _groups(plan):
        out += ["", f"#### {escape.md_code(name)}" if name else "#### runs to log (sync)", ""]
        if changes:
            # One line per value (escape.text) and every line starts with a symbol or
            # six spaces: nothing inside can close the fence.
            out.append("```diff")
            for c in changes:
                head, lines = describe(c)
                out.append(escape.text(f"{c.sign()} {head}"))
                pad = "+" if c.sign() == "+" else " "
                out.extend(
                    escape.text(f"{pad}     {line}") for line in [*lines, *_evidence(review, c)]
                )
            out.append("```")
        for note in (n for n in plan.notes if n.model == name):
            out.append(f"- {escape.md_code(note.message)}")
    if review is not None:
        if review.comparisons:
            out += ["", "#### Alias moves"]
            for comp in review.comparisons:
                out += _comparison_table(comp)
        if review.report.results:
            out += ["", render_report(review.report, "markdown")]
    return "\n".join(out).rstrip("\n") + "\n"


def _series_json(series: MetricSeries | None) -> dict[str, Any] | None:
    """The chart's data: a value that is missing or not finite is null, and `skipped`
    says which (strict JSON has no NaN)."""
    if series is None:
        return None
    points: list[dict[str, Any]] = []
    for p in series.points:
        finite = p.value is not None and math.isfinite(p.value)
        point: dict[str, Any] = {"version": p.version, "value": p.value if finite else None}
        if not finite:
            point["skipped"] = "missing" if p.value is None else repr(p.value)
        points.append(point)
    return {
        "metric": series.metric,
        "candidate": series.candidate,
        "incumbent": series.incumbent,
        "total": series.total,
        "points": points,
    }


def render_json(plan: Plan, review: Review | None = None) -> str:
    """Stable, versioned JSON (keys sorted, changes in apply order)."""
    data = plan.to_json()
    if review is not None:
        data["policy"] = json.loads(render_report(review.report, "json"))
        data["comparisons"] = [
            {
                "model": c.model,
                "alias": c.alias,
                "candidate": c.candidate,
                "incumbent": c.incumbent,
                "primary_metric": c.primary_metric,
                "rows": [r._asdict() for r in c.rows],
                "series": _series_json(c.series),
            }
            for c in review.comparisons
        ]
    return json.dumps(data, indent=2, sort_keys=True) + "\n"  # ASCII: \u escapes only


def render(plan: Plan, fmt: str, *, color: bool = False, review: Review | None = None) -> str:
    """Render a plan in one of FORMATS."""
    renderers: dict[str, Any] = {
        "text": lambda: render_text(plan, color=color, review=review),
        "markdown": lambda: render_markdown(plan, review),
        "json": lambda: render_json(plan, review),
    }
    return str(renderers[fmt]())
