"""Render a resolved version (and its download) as text or JSON, for `regctl resolve`.

Every value is the registry's or the run's: text lines go through `escape.text` whole and
JSON through `escape.json_text`. `dumps` is also how a download's `regctl-resolved.json`
is written, so the file and `--format json` agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from regctl import escape

if TYPE_CHECKING:
    # Only for annotations: the values live in the engine, above this layer.
    from regctl.engine.resolved import Downloaded, Resolved

FORMATS = ("text", "json")
_SHOWN_AS = ("regctl.digest", "regctl.files")  # the content line shows the record


def render_text(resolved: Resolved, downloaded: Downloaded | None = None) -> str:
    """Human-readable, deterministic: keys sorted, one line per param, metric and tag.

    Every value is the registry's or the run's: each line goes through `escape.text`.
    """
    r = resolved
    lines = [
        f"{r.target}: {r.model} version {r.version}",
        f"  registry:     {r.registry}",
        f"  aliases:      {', '.join(r.aliases) or '-'}",
        f"  description:  {_one_line(r.description) or '-'}",
        f"  run:          {r.run_name or '-'} ({r.run_id})",
        f"  experiment:   {r.experiment_name} ({r.experiment_id})",
        f"  source:       {r.source}",
        f"  model file:   {r.model_path}",
    ]
    lines.append(f"  content:      {r.content_digest or '- (no record)'}")
    tags = [(f"model {k}", v) for k, v in r.model_tags.items()]
    tags += [(f"version {k}", v) for k, v in r.version_tags.items() if k not in _SHOWN_AS]
    lines.append(f"  provenance:   {'' if tags else '-'}".rstrip())
    lines += [f"    {k} = {_one_line(v)}" for k, v in tags]
    lines.append(f"  params ({len(r.params)}):")
    lines += [f"    {k} = {_one_line(v)}" for k, v in r.params.items()]
    lines.append(f"  metrics ({len(r.metrics)}):")
    lines += [f"    {k} = {v!r}" for k, v in r.metrics.items()]
    if downloaded is not None:
        lines.append(
            f"downloaded {len(downloaded.files)} files ({downloaded.bytes} bytes) "
            f"to {downloaded.directory}"
        )
        checked = "matches the registry's record" if downloaded.verified else "no record"
        lines.append(f"content: {downloaded.digest} ({checked})")
        lines.append(f"model file: {downloaded.directory / r.model_file}")
    return "\n".join(escape.text(line) for line in lines)


def render_json(resolved: Resolved, downloaded: Downloaded | None = None) -> str:
    """`Resolved.to_json()`, plus `download` (folder and files) after a download."""
    data = resolved.to_json()
    if downloaded is not None:
        data["download"] = {
            "directory": str(downloaded.directory),
            "files": [{"path": p, "size": n, "sha256": h} for p, n, h in downloaded.files],
            "digest": downloaded.digest,
            "verified": downloaded.verified,
        }
    return escape.json_text(dumps(data)).rstrip("\n")


def dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())
