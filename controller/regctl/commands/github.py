"""`regctl github comment` and `regctl github drift`: regctl's results on GitHub, for CI.

The Python form of the github-script steps that plan.yml and drift.yml used, so that a
composite action can run them. Both read what GitHub Actions puts in the environment
(passed in as a mapping), check it where it is read (one line naming the variable; the
token is never shown), compose the markdown with `regctl.render.github` and talk to
GitHub through `regctl.adapters.github`.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import re
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from regctl import escape
from regctl.adapters.github import GitHub
from regctl.errors import ExitCode, RegctlError, type_name
from regctl.render import github as body

DEFAULT_API: Final = "https://api.github.com"
DEFAULT_SERVER: Final = "https://github.com"
DEFAULT_BOT: Final = "github-actions[bot]"
DEFAULT_MARKER: Final = "regctl-plan"
DEFAULT_LABEL: Final = "regctl-drift"
READ_LIMIT: Final = 1024 * 1024  # far more than a body holds: the rest is cut anyway
EVENT_LIMIT: Final = 64 * 1024 * 1024

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a marker NAME
_OWNER: Final = re.compile(r"[A-Za-z0-9_.-]+")
_TOKEN: Final = re.compile(r"[\x21-\x7e]+")  # visible ASCII: nothing to inject in a header
_SERVER: Final = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?")
_SHA: Final = re.compile(r"[0-9a-fA-F]{7,64}")


@dataclass(frozen=True, slots=True)
class Context:
    """Where to post and as whom: checked values from the environment."""

    api_url: str
    token: str
    owner: str
    repo: str
    bot: str
    run_url: str | None


@dataclass(frozen=True, slots=True)
class GitHubReport:
    """What a `regctl github` command did: stdout lines, warnings, the exit code."""

    lines: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    exit_code: int = ExitCode.OK


@dataclass
class _Done:
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def report(self) -> GitHubReport:
        return GitHubReport(tuple(self.lines), tuple(self.warnings))


def context(environ: Mapping[str, str]) -> Context:
    """The repository, API, token, bot login and run link from GitHub Actions' variables."""
    token = environ.get("GITHUB_TOKEN", "").strip()
    if not token:
        raise RegctlError("GITHUB_TOKEN is not set: regctl github needs a token for the API")
    if not _TOKEN.fullmatch(token):
        raise RegctlError("GITHUB_TOKEN: holds spaces or control characters; not a token")
    api_url = _api_url(environ.get("GITHUB_API_URL", "").strip() or DEFAULT_API)
    repository = environ.get("GITHUB_REPOSITORY", "").strip()
    owner, _, repo = repository.partition("/")
    if not all(_OWNER.fullmatch(p) and p not in (".", "..") for p in (owner, repo)):
        raise RegctlError(
            f"GITHUB_REPOSITORY: expected OWNER/REPO, got {escape.text(repository)!r}"
        )
    bot = environ.get("REGCTL_GITHUB_BOT", "").strip() or DEFAULT_BOT
    return Context(api_url, token, owner, repo, bot, _run_url(environ, owner, repo))


def _api_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
        or not url.isprintable()
        or " " in url
    ):
        raise RegctlError(
            "GITHUB_API_URL: expected an http(s) URL without credentials, query or fragment"
        )
    return url.rstrip("/")


def _run_url(environ: Mapping[str, str], owner: str, repo: str) -> str | None:
    """The workflow run's page (its job summary), or None outside GitHub Actions."""
    server = (environ.get("GITHUB_SERVER_URL", "").strip() or DEFAULT_SERVER).rstrip("/")
    if not _SERVER.fullmatch(server):
        raise RegctlError(f"GITHUB_SERVER_URL: expected an http(s) URL, got {server!r}")
    run_id = environ.get("GITHUB_RUN_ID", "").strip()
    if not run_id:
        return None
    if not run_id.isdigit() or not run_id.isascii():
        raise RegctlError(f"GITHUB_RUN_ID: expected a number, got {escape.text(run_id)!r}")
    return f"{server}/{owner}/{repo}/actions/runs/{run_id}"


def pull_request_number(environ: Mapping[str, str]) -> int:
    """The pull request (or issue) of the event: `pull_request.number`, else `issue.number`."""
    where = environ.get("GITHUB_EVENT_PATH", "").strip()
    if not where:
        raise RegctlError("GITHUB_EVENT_PATH is not set: no event to find the pull request in")
    shown = escape.text(where)
    try:
        with open(where, "rb") as stream:
            raw = stream.read(EVENT_LIMIT + 1)
    except OSError as exc:
        raise RegctlError(f"GITHUB_EVENT_PATH {shown}: cannot read: {exc.strerror}") from None
    if len(raw) > EVENT_LIMIT:
        raise RegctlError(f"GITHUB_EVENT_PATH {shown}: over {EVENT_LIMIT} bytes")
    try:
        event = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RegctlError(f"GITHUB_EVENT_PATH {shown}: not JSON: {_first(exc)}") from None
    for key in ("pull_request", "issue"):
        item = event.get(key) if isinstance(event, dict) else None
        if isinstance(item, dict) and "number" in item:
            number = item["number"]
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise RegctlError(
                    f"GITHUB_EVENT_PATH {shown}: {key}.number: expected a positive integer, "
                    f"got {type_name(number, mapping='an object')}"
                )
            return number
    raise RegctlError(
        f"GITHUB_EVENT_PATH {shown}: neither pull_request.number nor issue.number: "
        "not a pull-request event"
    )


def _first(exc: Exception) -> str:
    return escape.text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def read_markdown(path: str) -> str:
    """The first READ_LIMIT bytes of `path` (`-`: stdin) as UTF-8 text; bytes that are not
    UTF-8 are an error naming the file."""
    shown = "(stdin)" if path == "-" else escape.text(path)
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(READ_LIMIT + 1)
        else:
            with open(path, "rb") as stream:
                raw = stream.read(READ_LIMIT + 1)
    except OSError as exc:
        raise RegctlError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        return str(decoder.decode(raw[:READ_LIMIT], final=len(raw) <= READ_LIMIT))
    except UnicodeDecodeError as exc:
        raise RegctlError(f"{shown}: not UTF-8 text (byte {exc.start})") from None


def _read_part(path: Path, *, tail: bool) -> str:
    """READ_LIMIT bytes of a file the drift check wrote, from its start (the plan) or its
    end (the error output); bytes that are not UTF-8 become U+FFFD (it is only shown)."""
    with path.open("rb") as stream:
        if tail:
            stream.seek(0, 2)
            stream.seek(max(0, stream.tell() - READ_LIMIT))
        return stream.read(READ_LIMIT).decode("utf-8", errors="replace")


def _client(ctx: Context) -> GitHub:
    return GitHub(ctx.api_url, ctx.token, ctx.owner, ctx.repo)


def comment(
    path: str,
    environ: Mapping[str, str],
    *,
    marker: str = DEFAULT_MARKER,
    client: GitHub | None = None,
) -> GitHubReport:
    """Post FILE's markdown as the one comment of the bot on the event's pull request:
    the bot's comment whose first line is the marker is updated in place, else one is
    created. A comment by anyone else is never edited, whatever it quotes."""
    if not _NAME.fullmatch(marker):
        raise RegctlError(
            f"--marker {escape.text(marker)!r}: expected letters, digits, '.', '_' or '-' "
            "(at most 64, starting with a letter or digit)"
        )
    ctx = context(environ)
    number = pull_request_number(environ)
    text = body.comment_body(read_markdown(path), marker, ctx.run_url)
    gh = client or _client(ctx)
    bot = ctx.bot.casefold()
    mine = [
        c
        for c in gh.issue_comments(number)
        if c.user_type == "Bot" and c.login.casefold() == bot and body.is_marked(c.body, marker)
    ]
    done = gh.update_comment(mine[0].id, text) if mine else gh.create_comment(number, text)
    return GitHubReport((escape.text(done.html_url),))


def drift(
    rc: str,
    environ: Mapping[str, str],
    *,
    plan: Path | None = None,
    errors: Path | None = None,
    label: str = DEFAULT_LABEL,
    now: dt.datetime | None = None,
    client: GitHub | None = None,
) -> GitHubReport:
    """Report the scheduled drift check (`regctl diff --exit-code` exited `rc`) in ONE
    issue labelled `label`: on 0, comment on and close every open one; else update the
    oldest open one (title and body), or open one (creating the label if missing)."""
    if not label or len(label) > 50 or "," in label or not label.isprintable():
        raise RegctlError(
            f"--label {escape.text(label)!r}: expected a label name (1 to 50 printable "
            "characters, no comma)"
        )
    sha = environ.get("GITHUB_SHA", "").strip() or None
    if sha is not None and not _SHA.fullmatch(sha):
        raise RegctlError(f"GITHUB_SHA: expected a commit id, got {escape.text(sha)!r}")
    ctx = context(environ)
    status = body.exit_status(rc.strip())
    done = _Done()
    texts = {name: _optional(p, name, done) for name, p in (("--plan", plan), ("--errors", errors))}
    gh = client or _client(ctx)
    open_issues = (i for i in gh.open_issues(label) if not i.pull_request)  # PRs are issues too
    issues = sorted(open_issues, key=lambda i: i.number)  # the oldest first
    if status == "0":
        for issue in issues:
            gh.create_comment(issue.number, body.drift_closing(ctx.run_url))
            closed = gh.update_issue(issue.number, {"state": "closed", "state_reason": "completed"})
            done.lines.append(f"closed #{issue.number} {escape.text(closed.html_url)}")
        if not issues:
            done.lines.append("no drift")
        return done.report()
    title = body.drift_title(status)
    text = body.drift_body(
        status,
        texts["--plan"],
        texts["--errors"],
        run_url=ctx.run_url,
        sha=sha,
        now=now or dt.datetime.now(dt.UTC),
    )
    if issues:
        issue = gh.update_issue(issues[0].number, {"title": title, "body": text})
        done.lines.append(f"updated #{issue.number} {escape.text(issue.html_url)}")
        return done.report()
    if not gh.has_label(label):
        gh.create_label(label, body.LABEL_COLOR, body.LABEL_DESCRIPTION)
        done.lines.append(f"created label {escape.text(label)}")
    issue = gh.create_issue(title, text, [label])
    done.lines.append(f"opened #{issue.number} {escape.text(issue.html_url)}")
    return done.report()


def _optional(path: Path | None, option: str, done: _Done) -> str:
    """A file the drift check may not have written: missing is empty, with a warning."""
    if path is None:
        return ""
    try:
        return _read_part(path, tail=option == "--errors")
    except OSError as exc:
        shown = escape.text(str(path))
        done.warnings.append(f"{option} {shown}: cannot read ({exc.strerror or exc}); left out")
        return ""
