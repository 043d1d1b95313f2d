"""`regctl github comment` (and the GitHub adapter under it) against GitHub's API on
loopback; `regctl github drift` is in test_github_drift.py.

The CLI runs in-process (`run_cli`) with the variables GitHub Actions sets, against
tests/githubstub.py: a real HTTP server that keeps GitHub's state (comments, issues,
labels), paginates with `Link` headers, refuses a body over 65,536 characters and a
wrong token, and records every request. Markdown is parsed with markdown-it-py
(CommonMark plus tables) to prove what a body renders as.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from regctl.adapters.github import next_link
from regctl.render import github as rendering

from conftest import REPO
from githubstub import GitHubStub, actions_environ, hrefs, md_tokens, use_env, write

Cli = Callable[..., tuple[int, str, str]]
MARKER = "<!-- regctl:regctl-plan -->"


@pytest.fixture
def pr(github_stub: GitHubStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """A pull request, and the environment of a workflow run on it."""
    number = github_stub.add_pull_request("promote btcusdt")
    event = github_stub.write_event(tmp_path / "event.json", number)
    use_env(monkeypatch, github_stub.env(event=event))
    return number


# -------------------------------------------------------------------------- comment


def test_the_comment_is_created_then_updated_in_place(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path
) -> None:
    code, out, err = run_cli("github", "comment", write(tmp_path, "a.md", "### plan one\n"))
    assert code == 0, err
    [created] = github_stub.comments(pr)
    assert out == created["html_url"] + "\n"
    assert created["user"] == {"login": github_stub.bot, "type": "Bot"}
    lines = created["body"].split("\n")
    assert lines[0] == MARKER and lines[1] == "### plan one"
    assert hrefs(created["body"]) == {github_stub.run_url}  # the footer: a link to the run

    code, out, err = run_cli("github", "comment", write(tmp_path, "b.md", "### plan two\n"))
    assert code == 0, err
    [updated] = github_stub.comments(pr)
    assert updated["id"] == created["id"] and out == created["html_url"] + "\n"
    assert "### plan two" in updated["body"] and "plan one" not in updated["body"]
    comments_path = f"/repos/acme/models/issues/{pr}/comments"
    assert [(c.method, c.path) for c in github_stub.writes()] == [
        ("POST", comments_path),
        ("PATCH", f"/repos/acme/models/issues/comments/{created['id']}"),
    ]
    assert {c.authorization for c in github_stub.calls} == {f"Bearer {github_stub.token}"}
    assert github_stub.token not in out + err


def test_a_persons_comment_with_the_marker_is_never_edited(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path
) -> None:
    quoted = f"{MARKER}\nI quote the bot's marker."
    person = github_stub.add_comment(pr, quoted, login="mallory")
    # a person named like the bot cannot exist on GitHub, but the type is checked too
    lookalike = github_stub.add_comment(pr, quoted, login=github_stub.bot, user_type="User")
    other_bot = github_stub.add_comment(pr, quoted, login="other[bot]", user_type="Bot")
    other_marker = github_stub.add_comment(
        pr,
        "<!-- regctl:check -->\nanother comment of the bot",
        login=github_stub.bot,
        user_type="Bot",
    )
    plan = write(tmp_path, "plan.md", "### plan\n")
    for _ in range(2):
        code, out, err = run_cli("github", "comment", plan)
        assert code == 0, err
    for seeded in (person, lookalike, other_bot):
        assert github_stub.comment(seeded)["body"] == quoted
    assert github_stub.comment(other_marker)["body"].startswith("<!-- regctl:check -->\n")
    writes = github_stub.writes()
    assert [c.method for c in writes] == ["POST", "PATCH"]
    [mine] = [
        c
        for c in github_stub.comments(pr)
        if c["id"] not in (person, lookalike, other_bot, other_marker)
    ]
    assert writes[1].path.endswith(f"/comments/{mine['id']}")

    # another marker is another comment of its own
    code, out, err = run_cli("github", "comment", plan, "--marker", "check")
    assert code == 0, err
    assert out == github_stub.comment(other_marker)["html_url"] + "\n"
    assert github_stub.comment(other_marker)["body"].startswith("<!-- regctl:check -->\n### plan")


def test_the_comment_of_the_old_github_script_step_is_taken_over(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path
) -> None:
    old = github_stub.add_comment(
        pr,
        "<!-- regctl-plan -->\n## regctl plan for abc1234",
        login=github_stub.bot,
        user_type="Bot",
    )
    code, out, err = run_cli("github", "comment", write(tmp_path, "p.md", "### new\n"))
    assert code == 0, err
    assert [c["id"] for c in github_stub.comments(pr)] == [old]
    assert github_stub.comment(old)["body"].startswith(f"{MARKER}\n### new")


def test_the_bot_comment_is_found_past_the_first_pages(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path
) -> None:
    for i in range(230):
        github_stub.add_comment(pr, f"comment {i}", login=f"user{i % 7}")
    bot = github_stub.bot
    mine = github_stub.add_comment(pr, f"{MARKER}\nold plan", login=bot, user_type="Bot")
    for i in range(20):
        github_stub.add_comment(pr, f"late {i}")
    code, out, err = run_cli("github", "comment", write(tmp_path, "p.md", "### new plan\n"))
    assert code == 0, err
    assert len(github_stub.comments(pr)) == 251  # updated, not added
    assert "### new plan" in github_stub.comment(mine)["body"]
    reads = github_stub.calls_to("GET")
    assert [c.query.get("page", "1") for c in reads] == ["1", "2", "3"]
    assert {c.query["per_page"] for c in reads} == {"100"}
    # pages 2 and 3 come from the Link header, which names the repository by id
    assert [c.path.split("/")[1] for c in reads] == ["repos", "repositories", "repositories"]


def test_a_long_comment_is_cut_inside_its_fence_which_is_closed(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path
) -> None:
    rows = "".join(f"+ version {i}: a line of the plan\n" for i in range(4000))
    markdown = f"### regctl plan\n\n```diff\n{rows}```\n\nafter the fence\n"
    assert len(markdown) > 100_000
    code, out, err = run_cli("github", "comment", write(tmp_path, "big.md", markdown))
    assert code == 0, err  # the stub refuses a body over 65,536 characters with a 422
    [posted] = github_stub.comments(pr)
    body = posted["body"]
    assert 65_000 < len(body) <= 65_536
    tokens = md_tokens(body)
    [fence] = [t for t in tokens if t.type == "fence"]
    assert fence.info == "diff" and "truncated" not in fence.content
    assert fence.content.endswith(": a line of the plan\n")  # cut at a line end
    assert "after the fence" not in body
    note = body[body.index("… truncated") :]
    assert hrefs(note) == {github_stub.run_url}  # the job summary, then the footer link
    assert "job summary" in note


def test_characters_beyond_the_bmp_count_twice(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path
) -> None:
    markdown = "".join(f"{'🙂' * 60}\n" for _ in range(1000))  # 61,000 characters
    code, out, err = run_cli("github", "comment", write(tmp_path, "emoji.md", markdown))
    assert code == 0, err
    body = github_stub.comments(pr)[0]["body"]
    assert len(body.encode("utf-16-le")) // 2 <= 65_536 < len(markdown.encode("utf-16-le")) // 2
    assert "… truncated" in body


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\n```diff\n+ x\n", "\n```"),
        ("a\n````\n```\n", "\n````"),  # a shorter run does not close a longer fence
        ("a\n~~~ info `x`\n", "\n~~~"),
        ("a\n``` x`y\nnot a fence\n", ""),  # a backtick in the info string: not a fence
        ("a\n    ```\n", ""),  # indented four: code, not a fence
        ("```\n<!--\n```\n", ""),  # inside a fence, no HTML block
        ("x\n<!-- open\nmore\n", "\n-->"),
        ("<!--> done\n", ""),  # `-->` may overlap the start
        ("<pre>\nraw\n", "\n</pre>"),
        ("<PRE class=x>raw</pre>\n", ""),
        ("<![CDATA[ x\n", "\n]]>"),
        ("<?php\n", "\n?>"),
        ("<!DOCTYPE x\n", "\n>"),
        ("<details>\n\nplain\n", ""),  # ends at a blank line by itself
    ],
)
def test_closer(text: str, expected: str) -> None:
    assert rendering.closer(text) == expected
    contained = rendering.contain(text) + "\n\nTAIL [run](https://example.com/run)\n"
    assert "https://example.com/run" in hrefs(contained)  # nothing swallows the tail


def test_without_a_token_nothing_is_sent(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN")
    code, out, err = run_cli("github", "comment", write(tmp_path, "p.md", "x\n"))
    assert (code, out) == (1, "")
    assert err == "error: GITHUB_TOKEN is not set: regctl github needs a token for the API\n"
    assert github_stub.calls == []


def test_a_wrong_token_is_refused_by_github(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_wrong")
    code, out, err = run_cli("github", "comment", write(tmp_path, "p.md", "x\n"))
    assert code == 1
    assert err.startswith(f"error: GitHub API: GET /repos/acme/models/issues/{pr}/comments?")
    assert "401 Bad credentials (the token was refused: GITHUB_TOKEN)" in err
    assert "ghs_wrong" not in out + err and err.count("\n") == 1


def test_http_403_is_one_line_with_the_path_and_githubs_message(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path
) -> None:
    path = f"/repos/acme/models/issues/{pr}/comments"
    message = f"Resource not accessible\nby integration\x1b[2J (token {github_stub.token})"
    github_stub.fail("POST", path, 403, message)
    code, out, err = run_cli("github", "comment", write(tmp_path, "p.md", "x\n"))
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "\x1b" not in err
    assert err.startswith(f"error: GitHub API: POST {path}: 403 Resource not accessible by ")
    assert "integration\\x1b[2J (token ***)" in err
    assert github_stub.token not in err
    assert "permissions:" in err  # the hint


def test_a_transient_read_error_is_retried(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path
) -> None:
    path = f"/repos/acme/models/issues/{pr}/comments"
    github_stub.fail("GET", path, 502, "Bad Gateway", headers={"Retry-After": "0"})
    code, out, err = run_cli("github", "comment", write(tmp_path, "p.md", "x\n"))
    assert code == 0, err
    assert [c.status for c in github_stub.calls_to("GET")] == [502, 200]
    assert len(github_stub.comments(pr)) == 1


def test_a_create_is_not_retried(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path
) -> None:
    path = f"/repos/acme/models/issues/{pr}/comments"
    github_stub.fail("POST", path, 502, "Bad Gateway", headers={"Retry-After": "0"})
    code, out, err = run_cli("github", "comment", write(tmp_path, "p.md", "x\n"))
    assert code == 1 and ": 502 Bad Gateway" in err
    assert len(github_stub.calls_to("POST")) == 1  # a lost answer may hide a created comment


def test_a_next_link_off_the_api_is_not_followed(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path
) -> None:
    path = f"/repos/acme/models/issues/{pr}/comments"
    link = '<https://evil.example/steal?page=2>; rel="next"'
    github_stub.fail("GET", path, 200, payload=[], headers={"Link": link})
    code, out, err = run_cli("github", "comment", write(tmp_path, "p.md", "x\n"))
    assert code == 1 and "leaves the API URL" in err and github_stub.writes() == []


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        (
            '<https://a/x?page=2>; rel="next", <https://a/x?page=9>; rel="last"',
            "https://a/x?page=2",
        ),
        ('<https://a/x?page=1>; rel="prev", <https://a/x?page=3>; rel=next', "https://a/x?page=3"),
        ('<https://a/x?labels=a,b&page=2>; rel="next last"', "https://a/x?labels=a,b&page=2"),
        ('<https://a/x?page=9>; rel="last"', None),
        ('<https://a/x?page=2>; rel="nextpage"', None),
    ],
)
def test_next_link(header: str | None, expected: str | None) -> None:
    assert next_link(header) == expected


def test_a_redirect_is_not_followed(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path
) -> None:
    path = f"/repos/acme/models/issues/{pr}/comments"
    elsewhere = f"{github_stub.url}/elsewhere"
    github_stub.fail("GET", path, 301, "Moved Permanently", headers={"Location": elsewhere})
    code, out, err = run_cli("github", "comment", write(tmp_path, "p.md", "x\n"))
    assert code == 1 and ": 301 Moved Permanently (a redirect: not followed" in err
    assert [c.path for c in github_stub.calls] == [path]  # the token went nowhere else


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"issue": {"number": 7}}, None),  # issue_comment on a pull request
        ({"pull_request": {"number": "7"}}, "pull_request.number: expected a positive integer"),
        ({"push": {}}, "neither pull_request.number nor issue.number"),
        ([1], "neither pull_request.number nor issue.number"),
    ],
)
def test_the_pull_request_comes_from_the_event(
    run_cli: Cli,
    github_stub: GitHubStub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    event: object,
    message: str | None,
) -> None:
    for _ in range(7):
        number = github_stub.add_pull_request()
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    use_env(monkeypatch, github_stub.env(event=path))
    code, out, err = run_cli("github", "comment", write(tmp_path, "p.md", "x\n"))
    if message is None:
        assert code == 0, err
        assert len(github_stub.comments(number)) == 1
    else:
        assert code == 1 and message in err and err.count("\n") == 1
        assert github_stub.calls == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GITHUB_REPOSITORY", "acme", "GITHUB_REPOSITORY: expected OWNER/REPO"),
        ("GITHUB_REPOSITORY", "acme/../x", "GITHUB_REPOSITORY: expected OWNER/REPO"),
        ("GITHUB_API_URL", "https://user:pw@api.example", "GITHUB_API_URL: expected an http(s)"),
        ("GITHUB_RUN_ID", "12) [x](https://evil.example", "GITHUB_RUN_ID: expected a number"),
        ("GITHUB_SERVER_URL", "https://x.example/(y)", "GITHUB_SERVER_URL: expected"),
        ("GITHUB_TOKEN", "ab\ncd", "GITHUB_TOKEN: holds spaces or control characters"),
        ("GITHUB_EVENT_PATH", "/nonexistent/event.json", "cannot read"),
    ],
)
def test_bad_environment_is_one_line_naming_the_variable(
    run_cli: Cli,
    github_stub: GitHubStub,
    pr: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(name, value)
    code, out, err = run_cli("github", "comment", write(tmp_path, "p.md", "x\n"))
    assert code == 1 and message in err and err.count("\n") == 1
    assert "pw@" not in err and "ab\ncd" not in err
    assert github_stub.calls == []


def test_a_bad_marker_or_file_is_refused(
    run_cli: Cli, github_stub: GitHubStub, pr: int, tmp_path: Path
) -> None:
    code, _, err = run_cli("github", "comment", write(tmp_path, "p.md", "x"), "--marker", "a -->")
    assert code == 1 and "--marker" in err
    code, _, err = run_cli("github", "comment", str(tmp_path / "missing.md"))
    assert code == 1 and "missing.md: cannot read" in err
    bad = tmp_path / "bad.md"
    bad.write_bytes(b"ok \xff")
    code, _, err = run_cli("github", "comment", str(bad))
    assert code == 1 and "bad.md: not UTF-8 text (byte 3)" in err
    assert github_stub.calls == []


def test_the_console_script_posts_without_importing_mlflow(
    github_stub: GitHubStub, tmp_path: Path
) -> None:
    number = github_stub.add_pull_request()
    event = github_stub.write_event(tmp_path / "event.json", number)
    env = actions_environ({**github_stub.env(event=event), "PYTHONPATH": str(REPO / "controller")})
    script = (
        "import sys\nfrom regctl.cli import main\n"
        "code = main(sys.argv[1:])\nprint('mlflow' in sys.modules, code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "github", "comment", "-"],
        input="### from stdin\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [comment] = github_stub.comments(number)
    assert done.stdout.splitlines() == [comment["html_url"], "False 0"]
    assert comment["body"].startswith(f"{MARKER}\n### from stdin")
