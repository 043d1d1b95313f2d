"""What `regctl github` posts: the pull-request comment and the drift issue, as markdown.

Pure functions of strings. The comment's markdown and the drift plan are regctl's own
markdown (`diff`/`check --format markdown`), whose values are already escaped; they are
pasted, but contained: a fence or an HTML block (comment, `<pre>`, ...) left open is
closed before anything regctl adds, so it cannot swallow the footer or the error tail.
The drift check's error output is data: each line escaped with `escape.text` (no control
or bidi character) and the whole in a fence longer than any run of backticks in it.

Sizes are counted as UTF-16 code units (what JavaScript's `length` counts, and never
fewer than the characters), so a body stays within GitHub's 65,536-character limit
however GitHub counts.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from regctl import escape

COMMENT_LIMIT: Final = 65536  # GitHub rejects longer comment and issue bodies
PLAN_LIMIT: Final = 50000  # the drift issue's plan, as drift.yml cut it
ERROR_LINES: Final = 40
ERROR_CHARS: Final = 5000
LABEL_COLOR: Final = "d93f0b"
LABEL_DESCRIPTION: Final = "The MLflow registry differs from the manifests (regctl drift check)"

_LINE_END: Final = re.compile(r"\r\n|\r|\n")  # CommonMark's line endings, no others
_FENCE_OPEN: Final = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
# HTML blocks that only an end marker closes (CommonMark 4.6, kinds 1 to 5); a blank
# line ends the other kinds.
_HTML_BLOCKS: Final = (
    (re.compile(r" {0,3}<(script|pre|style|textarea)(?:[\s>]|$)", re.I), None),
    (re.compile(r" {0,3}<!--"), "-->"),
    (re.compile(r" {0,3}<\?"), "?>"),
    (re.compile(r" {0,3}<![A-Za-z]"), ">"),
    (re.compile(r" {0,3}<!\[CDATA\["), "]]>"),
)
_BACKTICKS: Final = re.compile(r"`+")


def size(text: str) -> int:
    """`text`'s length in UTF-16 code units (a character beyond the BMP counts 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _prefix(text: str, units: int) -> str:
    """The longest prefix of `text` of at most `units` UTF-16 code units."""
    if size(text) <= units:
        return text
    used = 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > units:
            return text[:i]
    return text


def _closing(line: str) -> str | None:
    """The end marker of the HTML block `line` opens, if one must close it."""
    for start, end in _HTML_BLOCKS:
        found = start.match(line)
        if found:
            marker = end or f"</{found.group(1).lower()}>"
            # the end may be on the same line, even overlapping the start (`<!-->`)
            return None if marker in line.lower() else marker
    return None


def closer(markdown: str) -> str:
    """What closes the fenced code block or HTML block open at the end of `markdown`
    ("" when none is): appended, it stops that block from running on."""
    fence = ""
    html = ""
    for line in _LINE_END.split(markdown):
        if fence:
            if re.fullmatch(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*", line):
                fence = ""
        elif html:
            if html.lower() in line.lower():
                html = ""
        elif opened := _FENCE_OPEN.fullmatch(line):
            if not (opened.group(1)[0] == "`" and "`" in opened.group(2)):
                fence = opened.group(1)
        else:
            html = _closing(line) or ""
    if fence:
        return f"\n{fence}"
    return f"\n{html}" if html else ""


def contain(markdown: str) -> str:
    """`markdown` with its open fence or HTML block closed."""
    return markdown + closer(markdown)


def truncate(markdown: str, limit: int, note: str) -> str:
    """`markdown` contained and at most `limit` units; if it must be cut, cut at a line
    end (when one is in the second half), close what the cut left open, then `note`."""
    whole = contain(markdown)
    if size(whole) <= limit:
        return whole
    tail = f"\n\n{note}"
    room = limit - size(tail)
    cut = _prefix(markdown, room)
    newline = cut.rfind("\n")
    if newline > len(cut) // 2:
        cut = cut[:newline]
    while True:
        end = closer(cut)
        over = size(cut) + size(end) - room
        if over <= 0 or not cut:
            return cut + end + tail
        cut = _prefix(cut, size(cut) - over)


def _summary(run_url: str | None, what: str) -> str:
    if run_url is None:
        return f"… truncated; the full {what} is in the job summary of the workflow run."
    return f"… truncated; the full {what} is in the [job summary]({run_url})."


# --------------------------------------------------------------------- the comment


def marker(name: str) -> str:
    """The first line of the comment `regctl github comment --marker NAME` owns."""
    return f"<!-- regctl:{name} -->"


def is_marked(body: str, name: str) -> bool:
    """Whether `body` starts with the marker line of `name` (or the `<!-- NAME -->` of
    the github-script steps regctl's workflows used before, so their comment is kept)."""
    first = _LINE_END.split(body, maxsplit=1)[0].strip()
    return first in (marker(name), f"<!-- {name} -->")


def comment_body(markdown: str, name: str, run_url: str | None) -> str:
    """The marker line, `markdown` (contained, cut to fit), a small link to the run."""
    head = marker(name) + "\n"
    foot = f"\n\n<sub>[workflow run]({run_url})</sub>\n" if run_url else "\n"
    room = COMMENT_LIMIT - size(head) - size(foot)
    return head + truncate(markdown.rstrip(), room, _summary(run_url, "text")) + foot


# ---------------------------------------------------------------------- the issue


def exit_status(rc: str) -> str:
    """The drift check's exit code as shown: its digits, or `?` when it is not a number."""
    return str(int(rc)) if re.fullmatch(r"[0-9]{1,9}", rc) else "?"


def drift_title(rc: str) -> str:
    """The drift issue's title for exit status `rc` (from `exit_status`, not "0")."""
    if rc == "2":
        return "Registry drift detected"
    if rc == "3":
        return "Registry drift check: a policy denies the declared state"
    return "Registry drift check failed"


def _intro(rc: str) -> list[str]:
    if rc == "2":
        return [
            "The MLflow Model Registry differs from the manifests on `main`: someone changed",
            "it by hand (for example in the MLflow UI), or a change on `main` was not applied.",
            "Revert the change in the registry, run the apply workflow, or put the change in a",
            "manifest through a pull request.",
        ]
    if rc == "3":
        return [
            "`regctl diff --exit-code` exited 3: a policy denies the state that the manifests on",
            "`main` declare, so the apply workflow refuses it. Change the manifests or the",
            "policies through a pull request.",
        ]
    return [
        f"`regctl diff --exit-code` exited {rc}: the check could not compare the registry",
        "with `main` (for example the server is unreachable, the credential was refused,",
        "or a manifest is invalid), so whether the registry drifted is unknown.",
    ]


def fenced(text: str) -> str:
    """`text` as a fenced code block that nothing inside can close."""
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def error_tail(text: str) -> str:
    """The end of the check's error output: its last lines, each escaped, at most
    ERROR_CHARS characters (`…` marks a cut)."""
    lines = text.rstrip().split("\n")[-ERROR_LINES:]
    tail = "\n".join(escape.text(line) for line in lines)
    return f"…{tail[-ERROR_CHARS:]}" if len(tail) > ERROR_CHARS else tail


def drift_body(
    rc: str,
    plan: str,
    errors: str,
    *,
    run_url: str | None,
    sha: str | None,
    now: dt.datetime,
) -> str:
    """The drift issue's body for exit status `rc` (not "0"): what happened, when it was
    checked, the plan (exit 2 and 3), the end of the error output (all but exit 2)."""
    where = [f"[run]({run_url})"] if run_url else []
    if sha:
        where.append(f"`main` at {sha[:7]}")
    checked = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    parts = [
        *_intro(rc),
        "This issue is updated by every scheduled check and closed when the registry",
        "matches again.",
        "",
        f"Last checked: {checked}" + (f" ({', '.join(where)})" if where else ""),
        "",
    ]
    shown = plan.rstrip() if rc in ("2", "3") else ""
    if shown:
        parts += [truncate(shown, PLAN_LIMIT, _summary(run_url, "diff")), ""]
    tail = error_tail(errors) if rc != "2" else ""
    if tail:
        parts += ["The end of its error output:", "", fenced(tail)]
    note = _summary(run_url, "output")
    return truncate("\n".join(parts).rstrip("\n") + "\n", COMMENT_LIMIT, note)


def drift_closing(run_url: str | None) -> str:
    """The comment on a drift issue that a clean check closes."""
    check = f" ([check]({run_url}))" if run_url else ""
    return f"The registry matches `main` again{check}. Closing."
