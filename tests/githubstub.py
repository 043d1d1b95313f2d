"""A stand-in for GitHub's REST API on loopback: a real HTTP server in a thread.

It serves the endpoints regctl's CI uses, with GitHub's shapes and rules, from state the
test seeds and then queries:

- issue comments: list (paginated, oldest first), create, update;
- issues: list for the repository (`state`, `labels`, newest first like GitHub, pull
  requests included: GitHub lists them as issues), get, create, update;
- labels: get (case-insensitive), create (422 `already_exists` when taken).

Pagination honours `per_page` (default 30, at most 100) and `page`, and answers with a
`Link` header whose URLs use GitHub's `/repositories/{id}/...` form, so a client must
follow the link it gets rather than rebuild it. Bodies over 65,536 characters are
refused with GitHub's 422. Every request needs `Authorization: Bearer TOKEN` (or
`token TOKEN`), else 401 "Bad credentials". Every request is recorded (method, path,
query, JSON body, Authorization header, the status answered).

    with GitHubStub() as gh:                        # or gh = GitHubStub().start(); gh.stop()
        pr = gh.add_pull_request()
        gh.add_comment(pr, "<!-- regctl:regctl-plan -->\\nquoted", login="mallory")
        env = gh.env(event=gh.write_event(tmp_path / "event.json", pr))
        ...                                         # run regctl (or a workflow step) with
                                                    # actions_environ(env): CI's own removed
        assert [c.method for c in gh.writes()] == ["POST"]
        assert gh.comments(pr)[-1]["user"]["login"] == gh.bot

Faults: `gh.fail("POST", "/repos/acme/models/issues/1/comments", 403, "Resource not
accessible by integration")` answers the next matching request (a path, or a compiled
regex) with that status, `times` times, with optional `headers` (`Retry-After`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

BODY_LIMIT = 65536
DOCS = "https://docs.github.com/rest"


@dataclass(frozen=True)
class Call:
    """One request the stub received, and the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None
    status: int


@dataclass
class _Fault:
    method: str
    path: str | re.Pattern[str]
    status: int
    payload: Any
    times: int
    headers: dict[str, str]

    def matches(self, method: str, path: str) -> bool:
        if method != self.method:
            return False
        if isinstance(self.path, re.Pattern):
            return self.path.fullmatch(path) is not None
        return path == self.path


class _Refused(Exception):
    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.payload: dict[str, Any] = {"message": message, "documentation_url": DOCS}
        if errors:
            self.payload["errors"] = errors


@dataclass
class _State:
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # by lowercased name


class GitHubStub:
    """GitHub's REST API for one repository (`repository`, "owner/name"), on loopback.

    `url` is the API root to put in GITHUB_API_URL; `server_url` the web root that
    `html_url`s use; comments and issues created through the API are by `bot` (type Bot).
    """

    def __init__(
        self,
        *,
        token: str = "ghs_stub-token-0123456789",
        repository: str = "acme/models",
        bot: str = "github-actions[bot]",
        server_url: str = "https://github.example",
        repository_id: int = 4242,
    ) -> None:
        self.token = token
        self.repository = repository
        self.bot = bot
        self.server_url = server_url
        self.repository_id = repository_id
        self.calls: list[Call] = []
        self._state = _State()
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(1_000_001)
        self._clock = itertools.count()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> GitHubStub:
        stub = self

        class Handler(_Handler):
            owner = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> GitHubStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, *, event: Path | None = None, **extra: str) -> dict[str, str]:
        """The variables GitHub Actions would set for a run against this stub."""
        values = {
            "GITHUB_TOKEN": self.token,
            "GITHUB_API_URL": self.url,
            "GITHUB_REPOSITORY": self.repository,
            "GITHUB_SERVER_URL": self.server_url,
            "GITHUB_RUN_ID": "987654321",
            "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
        }
        if event is not None:
            values["GITHUB_EVENT_PATH"] = str(event)
        values.update(extra)
        return values

    @property
    def run_url(self) -> str:
        """The workflow run page that `env()` describes."""
        return f"{self.server_url}/{self.repository}/actions/runs/987654321"

    def write_event(self, path: Path, number: int, *, kind: str = "pull_request") -> Path:
        """A GITHUB_EVENT_PATH payload for issue or pull request `number`."""
        with self._lock:
            item = self._state.issues[number]
        payload = {"action": "synchronize", kind: {"number": number, "title": item["title"]}}
        path.write_text(json.dumps(payload), encoding="utf-8")
        return path

    # -------------------------------------------------------------------- seeding

    def add_issue(
        self,
        title: str = "an issue",
        body: str = "",
        *,
        labels: Iterable[str] = (),
        state: str = "open",
        pull_request: bool = False,
        login: str = "octocat",
        user_type: str = "User",
    ) -> int:
        """A new issue (or pull request); its number."""
        with self._lock:
            return self._new_issue(title, body, list(labels), login, user_type, state, pull_request)

    def add_pull_request(self, title: str = "a change", **kwargs: Any) -> int:
        return self.add_issue(title, pull_request=True, **kwargs)

    def add_comment(
        self, number: int, body: str, *, login: str = "octocat", user_type: str = "User"
    ) -> int:
        """A comment on issue or pull request `number` by someone (a person by default);
        its id."""
        with self._lock:
            return int(self._new_comment(number, body, login, user_type)["id"])

    def add_label(self, name: str, color: str = "ededed", description: str = "") -> None:
        with self._lock:
            self._state.labels[name.lower()] = _label(name, color, description)

    def fail(
        self,
        method: str,
        path: str | re.Pattern[str],
        status: int,
        message: str = "Internal Server Error",
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        payload: Any = None,
    ) -> None:
        """Answer the next `times` requests `method path` with `status` (GitHub's error
        shape with `message`, or `payload` as given)."""
        body = payload if payload is not None else {"message": message, "documentation_url": DOCS}
        with self._lock:
            self._faults.append(_Fault(method, path, status, body, times, dict(headers or {})))

    # -------------------------------------------------------------------- queries

    def calls_to(self, method: str | None = None, path: str | None = None) -> list[Call]:
        """The recorded requests with this method and/or path (query string excluded)."""
        with self._lock:
            return [
                c
                for c in self.calls
                if method in (None, c.method) and (path is None or c.path == path)
            ]

    def writes(self) -> list[Call]:
        """Every request that is not a GET, in order."""
        with self._lock:
            return [c for c in self.calls if c.method != "GET"]

    def comments(self, number: int) -> list[dict[str, Any]]:
        with self._lock:
            found = [c for c in self._state.comments.values() if c["_issue"] == number]
            return [_public(c) for c in sorted(found, key=lambda c: c["_order"])]

    def comment(self, comment_id: int) -> dict[str, Any]:
        with self._lock:
            return _public(self._state.comments[comment_id])

    def issue(self, number: int) -> dict[str, Any]:
        with self._lock:
            return _public(self._state.issues[number])

    def issues(
        self, *, state: str = "all", label: str | None = None, pull_requests: bool = False
    ) -> list[dict[str, Any]]:
        """Issues, oldest first, by state (`open`, `closed`, `all`) and label."""
        with self._lock:
            found = [
                i
                for i in self._state.issues.values()
                if state in ("all", i["state"])
                and (label is None or label.lower() in _label_names(i))
                and (pull_requests or "pull_request" not in i)
            ]
            return [_public(i) for i in sorted(found, key=lambda i: i["number"])]

    def labels(self) -> list[str]:
        with self._lock:
            return sorted(label["name"] for label in self._state.labels.values())

    # ------------------------------------------------------------------- serving

    def _answer(
        self, method: str, target: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        parts = urllib.parse.urlsplit(target)
        path = parts.path
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        authorization = headers.get("Authorization")
        body: Any = None
        with self._lock:
            status, payload, extra = 500, None, {}
            try:
                if raw:
                    try:
                        body = json.loads(raw.decode("utf-8"))
                    except (UnicodeDecodeError, ValueError):
                        raise _Refused(400, "Problems parsing JSON") from None
                if authorization not in (f"Bearer {self.token}", f"token {self.token}"):
                    raise _Refused(401, "Bad credentials")
                fault = next((f for f in self._faults if f.matches(method, path)), None)
                if fault is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    status, payload, extra = fault.status, fault.payload, fault.headers
                else:
                    status, payload, extra = self._route(method, path, query, body)
            except _Refused as refused:
                status, payload = refused.status, refused.payload
            self.calls.append(Call(method, path, query, body, authorization, status))
            return status, payload, extra

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        prefixes = (f"/repos/{self.repository}", f"/repositories/{self.repository_id}")
        rest = next((path[len(p) :] for p in prefixes if path.startswith(p + "/")), None)
        if rest is None:
            raise _Refused(404, "Not Found")
        for verb, pattern, handler in self._routes():
            found = re.fullmatch(pattern, rest)
            if found and verb == method:
                return handler(found, query, body if isinstance(body, dict) else {})
        raise _Refused(404, "Not Found")

    def _routes(self) -> list[tuple[str, str, Callable[..., tuple[int, Any, dict[str, str]]]]]:
        return [
            ("GET", r"/issues/(\d+)/comments", self._list_comments),
            ("POST", r"/issues/(\d+)/comments", self._create_comment),
            ("PATCH", r"/issues/comments/(\d+)", self._update_comment),
            ("GET", r"/issues", self._list_issues),
            ("POST", r"/issues", self._create_issue),
            ("GET", r"/issues/(\d+)", self._get_issue),
            ("PATCH", r"/issues/(\d+)", self._update_issue),
            ("GET", r"/labels/([^/]+)", self._get_label),
            ("POST", r"/labels", self._create_label),
        ]

    def _page(
        self, items: list[dict[str, Any]], path: str, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        try:
            per_page = min(100, max(1, int(query.get("per_page", "30"))))
            page = max(1, int(query.get("page", "1")))
        except ValueError:
            raise _Refused(422, "Invalid request: per_page and page are numbers") from None
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []
        base = f"{self.url}/repositories/{self.repository_id}{path}"
        for rel, number in (("prev", page - 1), ("next", page + 1), ("last", last), ("first", 1)):
            if 1 <= number <= last and (rel in ("prev", "next") or page != number):
                params = urllib.parse.urlencode({**query, "per_page": per_page, "page": number})
                links.append(f'<{base}?{params}>; rel="{rel}"')
        headers = {"Link": ", ".join(links)} if links else {}
        return 200, [_public(i) for i in chunk], headers

    def _issue_or_404(self, number: str | int) -> dict[str, Any]:
        issue = self._state.issues.get(int(number))
        if issue is None:
            raise _Refused(404, "Not Found")
        return issue

    def _list_comments(self, found: re.Match[str], query: dict[str, str], body: Any) -> Any:
        number = int(self._issue_or_404(found[1])["number"])
        items = [c for c in self._state.comments.values() if c["_issue"] == number]
        items.sort(key=lambda c: c["_order"])
        return self._page(items, f"/issues/{number}/comments", query)

    def _create_comment(self, found: re.Match[str], query: dict[str, str], body: Any) -> Any:
        number = int(self._issue_or_404(found[1])["number"])
        text = _body(body, "IssueComment", required=True)
        return 201, _public(self._new_comment(number, text, self.bot, "Bot")), {}

    def _update_comment(self, found: re.Match[str], query: dict[str, str], body: Any) -> Any:
        comment = self._state.comments.get(int(found[1]))
        if comment is None:
            raise _Refused(404, "Not Found")
        comment["body"] = _body(body, "IssueComment", required=True)
        comment["updated_at"] = self._now()
        return 200, _public(comment), {}

    def _list_issues(self, found: re.Match[str], query: dict[str, str], body: Any) -> Any:
        state = query.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise _Refused(422, "Validation Failed", [{"field": "state", "code": "invalid"}])
        wanted = {n.strip().lower() for n in query.get("labels", "").split(",") if n.strip()}
        items = [
            i
            for i in self._state.issues.values()
            if state in ("all", i["state"]) and wanted <= _label_names(i)
        ]
        items.sort(key=lambda i: i["_order"], reverse=query.get("direction", "desc") == "desc")
        return self._page(items, "/issues", query)

    def _create_issue(self, found: re.Match[str], query: dict[str, str], body: Any) -> Any:
        title = body.get("title")
        if not isinstance(title, str) or not title:
            raise _Refused(422, "Validation Failed", [{"field": "title", "code": "missing_field"}])
        text = _body(body, "Issue", required=False)
        labels = [str(n) for n in body.get("labels") or ()]
        number = self._new_issue(title, text, labels, self.bot, "Bot", "open", False)
        return 201, _public(self._state.issues[number]), {}

    def _get_issue(self, found: re.Match[str], query: dict[str, str], body: Any) -> Any:
        return 200, _public(self._issue_or_404(found[1])), {}

    def _update_issue(self, found: re.Match[str], query: dict[str, str], body: Any) -> Any:
        issue = self._issue_or_404(found[1])
        if "body" in body:
            issue["body"] = _body(body, "Issue", required=False)
        if "title" in body:
            issue["title"] = str(body["title"])
        if "state" in body:
            if body["state"] not in ("open", "closed"):
                raise _Refused(422, "Validation Failed", [{"field": "state", "code": "invalid"}])
            issue["state"] = body["state"]
            issue["state_reason"] = body.get("state_reason")
            issue["closed_at"] = self._now() if body["state"] == "closed" else None
        if "labels" in body:
            issue["labels"] = [self._ensure_label(str(n)) for n in body["labels"]]
        issue["updated_at"] = self._now()
        return 200, _public(issue), {}

    def _get_label(self, found: re.Match[str], query: dict[str, str], body: Any) -> Any:
        label = self._state.labels.get(urllib.parse.unquote(found[1]).lower())
        if label is None:
            raise _Refused(404, "Not Found")
        return 200, dict(label), {}

    def _create_label(self, found: re.Match[str], query: dict[str, str], body: Any) -> Any:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _Refused(422, "Validation Failed", [{"field": "name", "code": "missing_field"}])
        if name.lower() in self._state.labels:
            errors = [{"resource": "Label", "code": "already_exists", "field": "name"}]
            raise _Refused(422, "Validation Failed", errors)
        color = str(body.get("color") or "ededed")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", color):
            raise _Refused(422, "Validation Failed", [{"field": "color", "code": "invalid"}])
        label = _label(name, color, str(body.get("description") or ""))
        self._state.labels[name.lower()] = label
        return 201, dict(label), {}

    # ------------------------------------------------------------------- helpers

    def _now(self) -> str:
        start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        return (start + dt.timedelta(seconds=next(self._clock))).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _ensure_label(self, name: str) -> dict[str, Any]:
        # GitHub creates the labels an issue names that do not exist yet
        return self._state.labels.setdefault(name.lower(), _label(name, "ededed", ""))

    def _new_issue(
        self,
        title: str,
        body: str,
        labels: list[str],
        login: str,
        user_type: str,
        state: str,
        pull_request: bool,
    ) -> int:
        number = max(self._state.issues, default=0) + 1
        kind = "pull" if pull_request else "issues"
        now = self._now()
        issue: dict[str, Any] = {
            "number": number,
            "title": title,
            "body": body,
            "state": state,
            "state_reason": None,
            "labels": [self._ensure_label(n) for n in labels],
            "user": {"login": login, "type": user_type},
            "html_url": f"{self.server_url}/{self.repository}/{kind}/{number}",
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "_order": next(self._clock),
        }
        if pull_request:
            issue["pull_request"] = {
                "url": f"{self.url}/repos/{self.repository}/pulls/{number}",
                "html_url": issue["html_url"],
            }
        self._state.issues[number] = issue
        return number

    def _new_comment(self, number: int, body: str, login: str, user_type: str) -> dict[str, Any]:
        issue = self._state.issues[number]
        comment_id = next(self._ids)
        now = self._now()
        comment = {
            "id": comment_id,
            "body": body,
            "user": {"login": login, "type": user_type},
            "html_url": f"{issue['html_url']}#issuecomment-{comment_id}",
            "issue_url": f"{self.url}/repos/{self.repository}/issues/{number}",
            "created_at": now,
            "updated_at": now,
            "_issue": number,
            "_order": next(self._clock),
        }
        self._state.comments[comment_id] = comment
        return comment


def actions_environ(
    values: Mapping[str, str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`base` (default: this process's environment) without any variable `regctl github`
    reads (CI sets its own), plus `values` (such as `stub.env()`): for a subprocess."""
    kept = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not (k.startswith("GITHUB_") or k == "REGCTL_GITHUB_BOT")
    }
    return {**kept, **values}


class _Handler(BaseHTTPRequestHandler):
    owner: GitHubStub
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection does not hold its thread forever

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, payload, extra = self.owner._answer(
            self.command, self.path, dict(self.headers.items()), raw
        )
        data = b"" if payload is None else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return None  # quiet: the stub records every request in `calls`


def _public(item: Mapping[str, Any]) -> dict[str, Any]:
    """A copy without the stub's own bookkeeping (keys starting with `_`)."""
    return json.loads(json.dumps({k: v for k, v in item.items() if not k.startswith("_")}))


def _label(name: str, color: str, description: str) -> dict[str, Any]:
    return {"name": name, "color": color, "description": description}


def _label_names(issue: Mapping[str, Any]) -> set[str]:
    return {label["name"].lower() for label in issue["labels"]}


def _body(data: Mapping[str, Any], resource: str, *, required: bool) -> str:
    text = data.get("body")
    if text is None and not required:
        return ""
    if not isinstance(text, str) or (required and not text):
        raise _Refused(422, "Validation Failed", [{"field": "body", "code": "missing_field"}])
    if len(text) > BODY_LIMIT:
        message = f"body is too long (maximum is {BODY_LIMIT} characters)"
        errors = [{"resource": resource, "code": "custom", "field": "body", "message": message}]
        raise _Refused(422, "Validation Failed", errors)
    return text


# ---- helpers for the tests of regctl's GitHub side --------------------------------------


def use_env(monkeypatch: pytest.MonkeyPatch, values: Mapping[str, str]) -> None:
    """Exactly these GitHub variables (CI may have set its own)."""
    env = actions_environ(values)
    for key in set(os.environ) - set(env):
        monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def md_tokens(text: str) -> list[Token]:
    """Every token, the inline children included, in document order."""
    out: list[Token] = []
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        out.append(token)
        out.extend(token.children or ())
    return out


def hrefs(text: str) -> set[str]:
    return {str(t.attrs["href"]) for t in md_tokens(text) if t.type == "link_open"}


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)
