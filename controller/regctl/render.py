"""Render a Plan as text (Terraform-like), markdown (pull-request comment) or JSON.

One describe handler per change type; every format is built from those lines, so a new
change type needs one function here and one in apply.
"""

from __future__ import annotations

import json
from functools import singledispatch
from typing import Any

from regctl.plan import (
    Change,
    CreateModel,
    CreateVersion,
    DeleteAlias,
    DeleteModel,
    DeleteVersion,
    Plan,
    SetAlias,
    SetModelDescription,
    SetModelTag,
    SetVersionDescription,
    SyncRun,
    symbol,
)

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
    return f"version {c.expected_version}{pin} from run {run}", lines


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
    lines = []
    if c.metric:
        new = "n/a" if c.new_value is None else f"{c.new_value:.6g}"
        old = "n/a" if c.old_value is None else f"{c.old_value:.6g}"
        lines.append(
            f"{c.metric}: {new} (incumbent {old})" if c.old is not None else f"{c.metric}: {new}"
        )
    return head, lines


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


def render_text(plan: Plan, *, color: bool = False) -> str:
    """Terraform-like text, grouped by model, in apply order within each model."""

    def paint(sym: str, text: str) -> str:
        return f"{_COLORS[sym]}{text}{_RESET}" if color else text

    if plan.empty and not plan.notes:
        return f"No changes. The registry at {plan.target} matches the manifests.\n"
    out: list[str] = []
    if plan.empty:
        out.append(f"No changes. The registry at {plan.target} matches the manifests.")
    else:
        out.append(f"regctl will make these changes to {plan.target}:")
    for name, changes in _groups(plan):
        out.append("")
        out.append(f"  # {name}" if name else "  # runs to log (sync)")
        for c in changes:
            sym = symbol(c)
            head, lines = describe(c)
            out.append(paint(sym, f"  {sym} {head}"))
            out.extend(f"      {line}" for line in lines)
        for note in (n for n in plan.notes if n.model == name):
            out.append(paint("!", f"  ! {note.message}"))
    if not plan.empty:
        out.append("")
        out.append(summary_line(plan))
    return "\n".join(out) + "\n"


def render_markdown(plan: Plan) -> str:
    """The plan as a pull-request comment."""
    out = ["### regctl plan", ""]
    if plan.empty:
        out.append(f"No changes: the registry at `{plan.target}` matches the manifests.")
    else:
        out.append(f"**{summary_line(plan)}** Target: `{plan.target}`")
    for name, changes in _groups(plan):
        out += ["", f"#### `{name}`" if name else "#### runs to log (sync)", ""]
        if changes:
            out.append("```diff")
            for c in changes:
                head, lines = describe(c)
                out.append(f"{symbol(c)} {head}")
                out.extend(f"{'+' if symbol(c) == '+' else ' '}     {line}" for line in lines)
            out.append("```")
        for note in (n for n in plan.notes if n.model == name):
            out.append(f"- {note.message}")
    return "\n".join(out) + "\n"


def render_json(plan: Plan) -> str:
    """Stable, versioned JSON (keys sorted, changes in apply order)."""
    return json.dumps(plan.to_json(), indent=2, sort_keys=True) + "\n"


def render(plan: Plan, fmt: str, *, color: bool = False) -> str:
    renderers: dict[str, Any] = {
        "text": lambda: render_text(plan, color=color),
        "markdown": lambda: render_markdown(plan),
        "json": lambda: render_json(plan),
    }
    return str(renderers[fmt]())
