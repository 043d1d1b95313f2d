"""What `regctl log` prints: a model's promotions as text or versioned JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from regctl import escape
from regctl.core.history import Event

FORMAT_VERSION = 1
"""Version of the JSON that `render_log(..., "json")` writes."""


def render_log(model: str, events: Sequence[Event], fmt: str, *, alias: str | None = None) -> str:
    """Events as `text` (one block per commit) or versioned `json`, in the given order.

    Text: a header line `date  author  short  subject`, then the moves and notes
    indented. JSON: `{"format_version": 1, "model", "alias", "events": [...]}`.
    """
    if fmt == "json":
        doc = {
            "format_version": FORMAT_VERSION,
            "model": model,
            "alias": alias,
            "events": [
                {
                    "commit": e.commit.sha,
                    "short": e.commit.short,
                    "date": e.commit.date,
                    "author": e.commit.author,
                    "subject": e.commit.subject,
                    "moves": list(e.moves),
                    "notes": list(e.notes),
                }
                for e in events
            ],
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if fmt != "text":
        raise ValueError(f"unknown format {fmt!r} (text, json)")
    if not events:
        what = f"alias {alias} of {model}" if alias else model
        return escape.text(f"No promotions of {what} in the git history.") + "\n"
    blocks = []
    for e in events:
        c = e.commit
        # Commit subjects, author names and manifest values are anyone's text.
        lines = [escape.text(f"{c.date}  {c.author}  {c.short}  {c.subject}")]
        lines += [escape.text(f"    {m}") for m in e.moves]
        lines += [escape.text(f"    ! {n}") for n in e.notes]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
