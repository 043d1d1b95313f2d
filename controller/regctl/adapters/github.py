"""GitHub's REST API, the part regctl's CI needs: issue comments, issues, labels.

The only module that talks to GitHub, with the standard library's urllib (no new
dependency; `requests` stays the MLflow adapter's). Answers are validated where they are
parsed, into frozen values (`Comment`, `Issue`); every failure becomes one `GitHubError`
here, once: one line with the method, the API path, the status and GitHub's own message
(escaped, shortened). The token goes to the API origin only: redirects are not followed
and a `Link: rel="next"` that leaves `api_url` is refused. It never appears in a message.

Retries: reads and PATCH (the same body twice gives the same state) are retried on 429,
5xx and connection failures, after `Retry-After` when GitHub sends it (at most 60 s),
else 1 s then 2 s. POST is never retried: a lost answer may hide a comment or an issue
that was created.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Any, Final

from regctl import escape
from regctl.errors import GitHubError, type_name

API_VERSION: Final = "2022-11-28"
PAGE_SIZE: Final = 100  # GitHub's maximum per_page
MAX_PAGES: Final = 1000  # 100,000 items: past that, something loops
MAX_ANSWER: Final = 32 * 1024 * 1024  # 100 comments of 65,536 characters fit
RETRIED_STATUS: Final = frozenset({429, 500, 502, 503, 504})
RETRIED_METHODS: Final = frozenset({"GET", "PATCH"})
MAX_WAIT: Final = 60.0
MESSAGE_CHARS: Final = 300
_LINK: Final = re.compile(r"<([^>]*)>([^<]*)")
_REL: Final = re.compile(r"""\brel\s*=\s*(?:"([^"]*)"|([^\s;,]+))""")


@dataclass(frozen=True, slots=True)
class Comment:
    """An issue or pull-request comment: who wrote it (`login`, `user_type` such as `Bot`
    or `User`; empty for a deleted account) and what it says."""

    id: int
    body: str
    login: str
    user_type: str
    html_url: str


@dataclass(frozen=True, slots=True)
class Issue:
    """An issue, or a pull request (GitHub lists both as issues; `pull_request` tells)."""

    number: int
    title: str
    html_url: str
    pull_request: bool


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: Message
    raw: bytes


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx becomes an error instead of a request (with the token) to somewhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class GitHub:
    """The REST API of one repository, as the token in `token` may use it.

    `api_url` is GitHub's API root (`https://api.github.com`, or `https://HOST/api/v3`),
    already checked: http(s), no credentials, query or fragment, no trailing slash.
    """

    def __init__(
        self,
        api_url: str,
        token: str,
        owner: str,
        repo: str,
        *,
        timeout: float = 30.0,
        attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api = api_url
        self._token = token
        self._repo_path = f"/repos/{_seg(owner)}/{_seg(repo)}"
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._sleep = sleep
        self._opener = urllib.request.build_opener(_NoRedirect())

    # ------------------------------------------------------------------ comments

    def issue_comments(self, number: int) -> list[Comment]:
        """Every comment of issue or pull request `number`, oldest first (every page)."""
        path = f"{self._repo_path}/issues/{number}/comments"
        return [_comment(item, f"GET {path}") for item in self._pages(path, {})]

    def create_comment(self, number: int, body: str) -> Comment:
        path = f"{self._repo_path}/issues/{number}/comments"
        return _comment(self._json("POST", path, {"body": body}), f"POST {path}")

    def update_comment(self, comment_id: int, body: str) -> Comment:
        path = f"{self._repo_path}/issues/comments/{comment_id}"
        return _comment(self._json("PATCH", path, {"body": body}), f"PATCH {path}")

    # -------------------------------------------------------------------- issues

    def open_issues(self, label: str) -> list[Issue]:
        """The open issues and pull requests that carry `label` (every page)."""
        path = f"{self._repo_path}/issues"
        query = {"state": "open", "labels": label}
        return [_issue(item, f"GET {path}") for item in self._pages(path, query)]

    def create_issue(self, title: str, body: str, labels: Sequence[str]) -> Issue:
        path = f"{self._repo_path}/issues"
        data = {"title": title, "body": body, "labels": list(labels)}
        return _issue(self._json("POST", path, data), f"POST {path}")

    def update_issue(self, number: int, fields: Mapping[str, str]) -> Issue:
        path = f"{self._repo_path}/issues/{number}"
        return _issue(self._json("PATCH", path, dict(fields)), f"PATCH {path}")

    # -------------------------------------------------------------------- labels

    def has_label(self, name: str) -> bool:
        path = f"{self._repo_path}/labels/{_seg(name)}"
        answer = self._request("GET", path, None, allow=(404,))
        return answer.status != 404

    def create_label(self, name: str, color: str, description: str) -> None:
        """Create the label; one that another run created meanwhile is fine."""
        path = f"{self._repo_path}/labels"
        data = {"name": name, "color": color, "description": description}
        answer = self._request("POST", path, data, allow=(422,))
        if answer.status == 422 and not _already_exists(answer):
            raise self._failure("POST", path, answer)

    # ------------------------------------------------------------------ transport

    def _json(self, method: str, path: str, data: Any) -> Any:
        return _decode(self._request(method, path, data), method, path)

    def _pages(self, path: str, query: Mapping[str, str]) -> Iterator[Any]:
        target = f"{path}?{urllib.parse.urlencode({**query, 'per_page': PAGE_SIZE})}"
        for _ in range(MAX_PAGES):
            answer = self._request("GET", target, None)
            items = _decode(answer, "GET", target)
            if not isinstance(items, list):
                raise _unexpected(f"GET {target}", "the answer", "a list", items)
            yield from items
            following = next_link(answer.headers.get("Link"))
            if following is None:
                return
            target = self._relative(following, target)
        raise GitHubError(
            f"GitHub API: GET {path}: more than {MAX_PAGES} pages; stopped",
            method="GET",
            path=path,
        )

    def _relative(self, url: str, current: str) -> str:
        """The API path of a `Link` URL; one outside the API root is refused."""
        if not url.startswith(self._api + "/"):
            raise GitHubError(
                f"GitHub API: GET {current}: the next page's link leaves the API URL "
                "(GITHUB_API_URL); not followed, so the token stays with the API",
                method="GET",
                path=current,
            )
        return url[len(self._api) :]

    def _request(
        self, method: str, path: str, data: Any, *, allow: tuple[int, ...] = ()
    ) -> _Answer:
        attempt = 0
        while True:
            attempt += 1
            retry = method in RETRIED_METHODS and attempt < self._attempts
            try:
                answer = self._send(method, path, data)
            except OSError as exc:
                if retry:
                    self._sleep(float(2 ** (attempt - 1)))
                    continue
                raise GitHubError(
                    f"GitHub API: {method} {escape.text(path)}: cannot reach "
                    f"{escape.text(self._api)}: {self._redact(_reason(exc))}",
                    method=method,
                    path=path,
                ) from None
            if 200 <= answer.status < 300 or answer.status in allow:
                return answer
            if retry and answer.status in RETRIED_STATUS:
                self._sleep(_wait(answer.headers, attempt))
                continue
            raise self._failure(method, path, answer)

    def _send(self, method: str, path: str, data: Any) -> _Answer:
        body = None if data is None else json.dumps(data).encode("utf-8")
        request = urllib.request.Request(self._api + path, data=body, method=method)
        request.add_header("Accept", "application/vnd.github+json")
        request.add_header("X-GitHub-Api-Version", API_VERSION)
        request.add_header("User-Agent", "regctl")
        request.add_header("Authorization", f"Bearer {self._token}")
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return _Answer(response.status, response.headers, _read(response))
        except urllib.error.HTTPError as exc:
            with exc:
                return _Answer(exc.code, exc.headers, _read(exc))
        except http.client.HTTPException as exc:  # a broken answer, not an OSError
            raise OSError(f"broken answer: {type(exc).__name__}") from None

    def _failure(self, method: str, path: str, answer: _Answer) -> GitHubError:
        message = self._redact(_message(answer))
        hint = _HINTS.get(answer.status // 100 * 100 if answer.status < 400 else answer.status, "")
        return GitHubError(
            f"GitHub API: {method} {escape.text(path)}: {answer.status} {message}{hint}",
            status=answer.status,
            method=method,
            path=path,
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text


_HINTS: Final = {
    300: " (a redirect: not followed; is GITHUB_REPOSITORY the repository's current name?)",
    401: " (the token was refused: GITHUB_TOKEN)",
    403: " (does the job's `permissions:` grant `issues: write` / `pull-requests: write`?)",
}


def next_link(header: str | None) -> str | None:
    """The URL of `rel="next"` in a `Link` header, if any."""
    for link in _LINK.finditer(header or ""):
        for rel in _REL.finditer(link.group(2)):
            if "next" in (rel.group(1) or rel.group(2) or "").split():
                return link.group(1).strip()
    return None


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _read(response: Any) -> bytes:
    raw = bytes(response.read(MAX_ANSWER + 1))
    if len(raw) > MAX_ANSWER:
        raise OSError(f"an answer over {MAX_ANSWER} bytes")
    return raw


def _reason(exc: OSError) -> str:
    reason = getattr(exc, "reason", None) or exc.strerror or exc
    return escape.text(str(reason))[:MESSAGE_CHARS]


def _wait(headers: Message, attempt: int) -> float:
    value = headers.get("Retry-After", "")
    try:
        return min(MAX_WAIT, max(0.0, float(value)))
    except ValueError:
        return float(2 ** (attempt - 1))


def _decode(answer: _Answer, method: str, path: str) -> Any:
    try:
        return json.loads(answer.raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise GitHubError(
            f"GitHub API: {method} {escape.text(path)}: {answer.status} with an answer "
            "that is not JSON",
            status=answer.status,
            method=method,
            path=path,
        ) from None


def _message(answer: _Answer) -> str:
    """GitHub's own words: `message`, then each of `errors`; one line, shortened."""
    try:
        data = json.loads(answer.raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        text = answer.raw.decode("utf-8", errors="replace").strip()
        return _short(text or http.client.responses.get(answer.status, "no message"))
    parts = [str(data.get("message") or "")]
    for item in data.get("errors") or ():
        if isinstance(item, dict):
            words = item.get("message") or " ".join(
                str(item[k]) for k in ("resource", "field", "code") if item.get(k)
            )
            parts.append(str(words))
        else:
            parts.append(str(item))
    return _short("; ".join(p for p in parts if p) or "no message")


def _short(text: str) -> str:
    one = escape.text(" ".join(text.split()))
    return one if len(one) <= MESSAGE_CHARS else one[: MESSAGE_CHARS - 1] + "…"


def _already_exists(answer: _Answer) -> bool:
    try:
        data = json.loads(answer.raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    errors = data.get("errors") if isinstance(data, dict) else None
    return any(isinstance(e, dict) and e.get("code") == "already_exists" for e in errors or ())


def _unexpected(where: str, field: str, expected: str, got: Any) -> GitHubError:
    method, _, path = where.partition(" ")
    return GitHubError(
        f"GitHub API: {escape.text(where)}: unexpected answer: {field}: expected "
        f"{expected}, got {type_name(got, mapping='an object')}",
        method=method,
        path=path,
    )


_KINDS: Final = {int: "an integer", str: "a string", dict: "an object"}


def _field(item: Any, key: str, kind: type, where: str, *, optional: bool = False) -> Any:
    """`item[key]` if it is a `kind`; null or absent is `kind()` when `optional`."""
    if not isinstance(item, dict):
        raise _unexpected(where, "an item", "an object", item)
    value = item.get(key)
    if optional and value is None:
        return kind()
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _unexpected(where, key, _KINDS[kind], value)
    return value


def _comment(item: Any, where: str) -> Comment:
    user = _field(item, "user", dict, where, optional=True)  # null for a deleted account
    return Comment(
        id=_field(item, "id", int, where),
        body=_field(item, "body", str, where, optional=True),
        login=_field(user, "login", str, where, optional=True),
        user_type=_field(user, "type", str, where, optional=True),
        html_url=_field(item, "html_url", str, where, optional=True),
    )


def _issue(item: Any, where: str) -> Issue:
    return Issue(
        number=_field(item, "number", int, where),
        title=_field(item, "title", str, where, optional=True),
        html_url=_field(item, "html_url", str, where, optional=True),
        pull_request=item.get("pull_request") is not None,  # item: an object (number)
    )
