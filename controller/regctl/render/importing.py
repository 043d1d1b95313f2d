"""The text `regctl import` prints: one line per model, then skips, stage notes,
warnings, errors, what was marked as managed, a summary and the next step."""

from __future__ import annotations

from collections.abc import Sequence

from regctl import escape
from regctl.core.importplan import ImportReport
from regctl.core.model import MANAGED_TAG

_STATUSES = ("created", "updated", "unchanged", "failed")


def render_report(
    report: ImportReport, *, adopted: Sequence[str] = (), draft: str | None = None
) -> str:
    """The text `regctl import` prints; `draft` names an output folder that is not the
    repository's `manifests/` (its manifests are not in effect)."""
    lines = []
    for m in report.models:
        count = f"{m.versions} version{'s' if m.versions != 1 else ''}"
        if m.status == "failed":
            lines.append(f"failed     {m.file}: {m.name}")
        elif m.status == "updated":
            lines.append(f"updated    {m.file}: {m.name} ({count}): " + "; ".join(m.changes))
        else:
            lines.append(f"{m.status:<10} {m.file}: {m.name} ({count})")
    lines += [f"skipped: {s}" for s in report.skipped]
    lines += [f"stage: {s}" for s in report.stages]
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"error: {e}" for e in report.errors]
    if adopted:
        lines.append(
            f"Marked {len(adopted)} model(s) as managed by regctl ({MANAGED_TAG}=true): "
            + ", ".join(adopted)
        )
    pending = [n for n in report.unmanaged if n not in set(adopted)]
    if pending:
        lines.append(
            "Not marked as managed (the manifests are a draft outside manifests/): "
            + ", ".join(pending)
        )
    counts = {s: sum(1 for m in report.models if m.status == s) for s in _STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines.append(f"Imported {len(report.models)} model(s): {summary or 'none'}.")
    if draft is not None:
        lines.append(
            f"Next: review the drafts in {draft} and move them to manifests/ to put them in effect."
        )
    elif report.warnings:
        lines.append("Next: `regctl diff` shows what the warnings above leave to change.")
    elif not report.errors:
        lines.append("Next: `regctl diff` shows no changes.")
    return "".join(escape.text(line) + "\n" for line in lines)  # names are the registry's
