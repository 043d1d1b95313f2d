"""`regctl github drift` against GitHub's API on loopback (tests/githubstub.py).

The CLI runs in-process (`run_cli`) with the variables of a scheduled GitHub Actions run;
the stub keeps the repository's issues and labels (pull requests listed as issues, like
GitHub) and records every request. Bodies are parsed with markdown-it-py to prove that
the plan and the error output stay data.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from regctl.core.plan import CreateModel, Plan, SetModelDescription
from regctl.render import github as rendering
from regctl.render.plan import render_markdown

from githubstub import GitHubStub, hrefs, md_tokens, use_env, write

Cli = Callable[..., tuple[int, str, str]]
HOSTILE = "``` <!-- <img src=x onerror=alert(1)> @octocat [x](https://evil.example)\x1b[2J\u202e"


PLAN = "### regctl plan\n\n**1 to change.**\n\n```diff\n~ m: alias Production 1 -> 2\n```\n"
ERRORS = "warning: something\nerror: manifests/m.yaml:3: name: not a name\n"


@pytest.fixture
def scheduled(github_stub: GitHubStub, monkeypatch: pytest.MonkeyPatch) -> GitHubStub:
    """The environment of a scheduled run: no event, GITHUB_SHA set."""
    use_env(monkeypatch, github_stub.env())
    return github_stub


def drift(run_cli: Cli, tmp_path: Path, rc: str, plan: str = PLAN, errors: str = ERRORS) -> str:
    code, out, err = run_cli(
        "github",
        "drift",
        rc,
        "--plan",
        write(tmp_path, "drift.md", plan),
        "--errors",
        write(tmp_path, "diff.err", errors),
    )
    assert code == 0, err
    return out


def test_drift_opens_one_issue_creating_the_label(
    run_cli: Cli, scheduled: GitHubStub, tmp_path: Path
) -> None:
    out = drift(run_cli, tmp_path, "2")
    [issue] = scheduled.issues(label="regctl-drift")
    assert out == f"created label regctl-drift\nopened #{issue['number']} {issue['html_url']}\n"
    assert issue["title"] == "Registry drift detected"
    assert [c.body for c in scheduled.calls_to("POST", "/repos/acme/models/labels")] == [
        {
            "name": "regctl-drift",
            "color": "d93f0b",
            "description": "The MLflow registry differs from the manifests (regctl drift check)",
        }
    ]
    body = issue["body"]
    assert body.startswith("The MLflow Model Registry differs from the manifests on `main`")
    assert PLAN.strip() in body
    assert "error output" not in body and "something" not in body  # drift: no error tail
    assert re.search(
        r"^Last checked: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\[run\]\(\S+\), `main` at 0123456\)$",
        body,
        re.M,
    )
    assert hrefs(body) == {scheduled.run_url}


def test_drift_updates_the_oldest_open_issue(
    run_cli: Cli, scheduled: GitHubStub, tmp_path: Path
) -> None:
    # a pull request carrying the label is listed by GitHub as an issue: never the issue
    pull = scheduled.add_pull_request("labelled PR", labels=["regctl-drift"])
    scheduled.add_issue("closed one", labels=["regctl-drift"], state="closed")
    oldest = scheduled.add_issue("Registry drift detected", labels=["regctl-drift"])
    newer = scheduled.add_issue("Registry drift detected", "newer", labels=["regctl-drift"])
    scheduled.add_issue("unlabelled")
    out = drift(run_cli, tmp_path, "3")
    assert out == f"updated #{oldest} {scheduled.issue(oldest)['html_url']}\n"
    assert scheduled.issue(oldest)["title"] == (
        "Registry drift check: a policy denies the declared state"
    )
    assert scheduled.issue(newer)["body"] == "newer"
    assert scheduled.issue(pull)["title"] == "labelled PR"
    assert [(c.method, c.path) for c in scheduled.writes()] == [
        ("PATCH", f"/repos/acme/models/issues/{oldest}")
    ]
    assert scheduled.calls_to("GET")[0].query == {
        "state": "open",
        "labels": "regctl-drift",
        "per_page": "100",
    }

    # the next check updates the same issue again; nothing new is opened
    drift(run_cli, tmp_path, "2")
    assert scheduled.issue(oldest)["title"] == "Registry drift detected"
    assert len(scheduled.issues(label="regctl-drift")) == 3


def test_drift_closes_every_open_issue_on_0(
    run_cli: Cli, scheduled: GitHubStub, tmp_path: Path
) -> None:
    first = scheduled.add_issue("Registry drift detected", labels=["regctl-drift"])
    second = scheduled.add_issue("Registry drift check failed", labels=["regctl-drift"])
    out = drift(run_cli, tmp_path, "0")
    assert out.splitlines() == [
        f"closed #{n} {scheduled.issue(n)['html_url']}" for n in (first, second)
    ]
    for n in (first, second):
        issue = scheduled.issue(n)
        assert (issue["state"], issue["state_reason"]) == ("closed", "completed")
        [closing] = scheduled.comments(n)
        assert closing["body"] == (
            f"The registry matches `main` again ([check]({scheduled.run_url})). Closing."
        )
    assert [(c.method, c.path.rsplit("/", 2)[-2:]) for c in scheduled.writes()] == [
        ("POST", [str(first), "comments"]),
        ("PATCH", ["issues", str(first)]),
        ("POST", [str(second), "comments"]),
        ("PATCH", ["issues", str(second)]),
    ]
    count = len(scheduled.writes())
    assert drift(run_cli, tmp_path, "0") == "no drift\n"
    assert len(scheduled.writes()) == count


@pytest.mark.parametrize(
    ("rc", "title", "said"),
    [
        ("1", "Registry drift check failed", "`regctl diff --exit-code` exited 1: the check"),
        ("3", "Registry drift check: a policy denies the declared state", "exited 3: a policy"),
        ("120", "Registry drift check failed", "`regctl diff --exit-code` exited 120: the check"),
        ("", "Registry drift check failed", "`regctl diff --exit-code` exited ?: the check"),
        ("2; rm -rf /", "Registry drift check failed", "exited ?: the check"),
        ("-1", "Registry drift check failed", "exited ?: the check"),
    ],
)
def test_drift_failures_quote_the_end_of_the_error_output(
    run_cli: Cli, scheduled: GitHubStub, tmp_path: Path, rc: str, title: str, said: str
) -> None:
    errors = "".join(f"line {i}\n" for i in range(100)) + ERRORS
    drift(run_cli, tmp_path, rc, errors=errors)
    [issue] = scheduled.issues(label="regctl-drift")
    assert issue["title"] == title
    body = issue["body"]
    assert said in body
    assert (PLAN.strip() in body) == (rc == "3")  # the plan: drift and denials only
    [*_, fence] = [t for t in md_tokens(body) if t.type == "fence"]
    assert fence.info == "text"
    lines = fence.content.splitlines()
    assert len(lines) == 40 and lines[-1] == ERRORS.splitlines()[-1] and lines[0] == "line 62"
    assert body.index("The end of its error output:") < body.index(fence.content)


def test_hostile_plan_and_errors_stay_fenced_and_escaped(
    run_cli: Cli, scheduled: GitHubStub, tmp_path: Path
) -> None:
    # the plan as regctl renders it, with hostile values: already escaped, pasted as is
    plan = Plan(
        target="http://mlflow.example",
        models=(HOSTILE,),
        changes=(CreateModel(model=HOSTILE), SetModelDescription(model=HOSTILE)),
    )
    rendered = render_markdown(plan)
    # ...then something that is not regctl's output: an open fence and an open comment
    broken = rendered + "\n<!-- never closed\n````diff\n- and a fence never closed\n"
    errors = f"error: {HOSTILE}\n`````\n<!--\r\n<img src=y onerror=alert(2)>\n\x00@octocat\n"
    drift(run_cli, tmp_path, "3", plan=broken, errors=errors)
    [issue] = scheduled.issues(label="regctl-drift")
    body = issue["body"]
    tokens = md_tokens(body)
    assert "\x1b" not in body and "\u202e" not in body and "\x00" not in body
    assert hrefs(body) == {scheduled.run_url}
    assert not [t for t in tokens if t.type in ("image", "html_inline")]
    # the one HTML block is the open comment, closed before the error tail
    [html] = [t for t in tokens if t.type == "html_block"]
    assert html.content.startswith("<!-- never closed") and html.content.rstrip().endswith("-->")
    fences = [t for t in tokens if t.type == "fence"]
    assert [f.info for f in fences] == ["diff", "text"]  # the plan's, then the error tail
    tail = fences[-1].content
    assert "onerror=alert(2)" in tail and "`````" in tail and "\\r" in tail and "\\x00" in tail
    assert "onerror=alert(2)" not in body.replace(tail, "")
    leaves = [t for t in tokens if t.children is None and t.type not in ("inline", "fence")]
    for t in leaves:
        if "onerror" in t.content or "@octocat" in t.content:
            assert t.type in ("code_inline", "html_block"), (t.type, t.content)


def test_a_long_drift_plan_is_cut_at_50000(
    run_cli: Cli, scheduled: GitHubStub, tmp_path: Path
) -> None:
    plan = "### regctl plan\n\n```diff\n" + "".join(f"~ model {i}\n" for i in range(9000)) + "```\n"
    drift(run_cli, tmp_path, "2", plan=plan)
    body = scheduled.issues(label="regctl-drift")[0]["body"]
    assert 50_000 < len(body) < 51_000
    [fence] = [t for t in md_tokens(body) if t.type == "fence"]
    assert "truncated" not in fence.content
    assert "… truncated; the full diff is in the [job summary](" in body


def test_a_missing_drift_file_is_a_warning(
    run_cli: Cli, scheduled: GitHubStub, tmp_path: Path
) -> None:
    code, out, err = run_cli("github", "drift", "1", "--errors", str(tmp_path / "none.err"))
    assert code == 0
    assert err.startswith("warning: --errors ") and "none.err: cannot read" in err
    assert "error output" not in scheduled.issues(label="regctl-drift")[0]["body"]


def test_drift_body_without_a_run_or_commit() -> None:
    now = dt.datetime(2025, 10, 9, 12, 0, tzinfo=dt.UTC)
    body = rendering.drift_body("2", PLAN, "", run_url=None, sha=None, now=now)
    assert "\nLast checked: 2025-10-09T12:00:00Z\n" in body and hrefs(body) == set()
    assert rendering.drift_closing(None) == "The registry matches `main` again. Closing."


def test_drift_label_errors(run_cli: Cli, scheduled: GitHubStub) -> None:
    code, _, err = run_cli("github", "drift", "2", "--label", "a,b")
    assert code == 1 and "--label" in err and scheduled.calls == []
    scheduled.fail("GET", "/repos/acme/models/issues", 404, "Not Found")
    code, _, err = run_cli("github", "drift", "2")
    assert code == 1
    assert "GitHub API: GET /repos/acme/models/issues?state=open&labels=regctl-drift" in err
