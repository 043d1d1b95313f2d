"""The scaffolded workflows, executed (issue 15, acceptance 2).

A team's repository is made by `regctl init` (the default action reference), with the
example manifests (renamed for this test) and run directories, committed to a git
"origin"; the workspace is a clone of it, as actions/checkout leaves it. tests/ghrunner.py
runs each workflow's jobs: every `run:` step with its env and GitHub's files, the regctl
action's composite steps, against the real test MLflow server and a loopback stand-in
for GitHub's REST API (tests/githubstub.py). Asserted: the outcome a team sees, namely
the plan comment on the pull request (one, updated in place), the registry converged
after the push to main, the drift issue opened by a hand edit and closed once applied.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regctl.commands.init import default_action, init

from conftest import REPO, Server
from ghrunner import Job, Runner
from githubstub import GitHubStub

MARKER = "<!-- regctl:regctl-plan -->"


def git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=Ada", "-c", "user.email=ada@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return proc.stdout.strip()


class Team:
    """The team's repository: `origin` (what GitHub holds) and a fresh `workspace`
    clone per job run."""

    def __init__(self, root: Path, uniq: str, server: Server, gh: GitHubStub) -> None:
        self.root = root
        self.uniq = uniq
        self.server = server
        self.gh = gh
        self.origin = root / "origin"
        init(self.origin, action=default_action())
        shutil.copytree(REPO / "examples" / "runs", self.origin / "examples" / "runs")
        self.models = []
        for src in sorted((REPO / "manifests").glob("*.yaml")):
            text = src.read_text(encoding="utf-8")
            text = re.sub(r"^name: (.*)$", rf"name: {uniq}-\1", text, flags=re.M)
            text = re.sub(r"^experiment: (.*)$", rf"experiment: {uniq}-\1", text, flags=re.M)
            (self.origin / "manifests" / f"{uniq}-{src.name}").write_text(text, encoding="utf-8")
            self.models.append(f"{uniq}-{src.stem}")
        git("init", "-q", "-b", "main", cwd=self.origin)
        git("add", "-A", cwd=self.origin)
        git("commit", "-qm", "scaffold and the first models", cwd=self.origin)
        self.runs = 0

    def manifest(self, model: str) -> Path:
        return self.origin / "manifests" / f"{model}.yaml"

    def checkout(self, ref: str = "main") -> Path:
        self.runs += 1
        ws = self.root / f"ws{self.runs}"
        git("clone", "-q", str(self.origin), str(ws), cwd=self.root)
        git("checkout", "-q", ref, cwd=ws)
        return ws

    def run(
        self,
        workflow: str,
        event_name: str,
        event: dict[str, Any],
        *,
        ref: str = "main",
        secrets: dict[str, str],
        github: dict[str, Any] | None = None,
    ) -> dict[str, Job]:
        ws = self.checkout(ref)
        runner = Runner(
            workspace=ws,
            temp=self.root / f"runner{self.runs}",
            event_name=event_name,
            event=event,
            repository=self.gh.repository,
            secrets=secrets,
            action_root=REPO,
            action_refs=("./", default_action()),
            github={
                "sha": git("rev-parse", "HEAD", cwd=ws),
                "ref": f"refs/heads/{ref}",
                "token": self.gh.token,
                "api_url": self.gh.url,
                "server_url": self.gh.server_url,
                **(github or {}),
            },
        )
        return runner.run(ws / ".github" / "workflows" / f"{workflow}.yml")

    def push_to_main(self) -> Job:
        event = {"ref": "refs/heads/main", "after": git("rev-parse", "main", cwd=self.origin)}
        jobs = self.run("apply", "push", event, secrets={"MLFLOW_TRACKING_URI": self.server.url})
        return jobs["apply"]

    def diff_rc(self) -> int:
        ws = self.checkout()
        proc = subprocess.run(
            ["regctl", "--tracking-uri", self.server.url, "diff", "--exit-code", *self.models],
            cwd=ws,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return proc.returncode


@pytest.fixture
def gh() -> Iterator[GitHubStub]:
    with GitHubStub() as stub:
        yield stub


@pytest.fixture
def team(tmp_path: Path, uniq: str, mlflow_server: Server, gh: GitHubStub) -> Team:
    return Team(tmp_path, uniq, mlflow_server, gh)


def client(server: Server) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(server.url, server.url)


def test_a_push_to_main_applies_and_records_the_commit(team: Team) -> None:
    job = team.push_to_main()
    assert job.result == "success", job.log()
    # what the runner did not execute, and why: the checkout is the workspace, the Python
    # is the test's, and the action's install would replace the test's own regctl
    assert any("checkout" in s for s in job.skipped)
    assert sum("(the test's regctl is installed)" in s for s in job.skipped) == 2
    assert "### regctl plan" in job.summary  # the diff step's markdown
    assert "Apply complete" in job.step("Apply").stdout
    assert team.diff_rc() == 0
    head = git("rev-parse", "main", cwd=team.origin)
    for model in team.models:
        tags = client(team.server).get_registered_model(model).tags
        assert head in tags["regctl.applied"], tags
    # a second push of the same head writes nothing
    again = team.push_to_main()
    assert again.result == "success"
    assert "No changes" in again.step("Apply").stdout


def promote(team: Team, branch: str) -> str:
    """A pull request's branch that moves Production to the LGBM model's version."""
    model = next(m for m in team.models if "inference" in m)
    git("checkout", "-q", "-b", branch, cwd=team.origin)
    path = team.manifest(model)
    text = path.read_text(encoding="utf-8")
    assert "aliases: [Staging]" in text
    path.write_text(text.replace("aliases: [Staging]", "aliases: [Staging, Production]"))
    git("commit", "-qam", "promote the forecaster to Production", cwd=team.origin)
    git("checkout", "-q", "main", cwd=team.origin)
    return model


def pr_event(team: Team, number: int, branch: str, *, fork: bool = False) -> dict[str, Any]:
    head = "mallory/models" if fork else team.gh.repository
    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "title": "$(touch pwned) `promote` <!-- x -->",
            "head": {
                "ref": branch,
                "sha": git("rev-parse", branch, cwd=team.origin),
                "repo": {"full_name": head},
            },
            "base": {"ref": "main", "repo": {"full_name": team.gh.repository}},
        },
    }


def run_plan(team: Team, number: int, branch: str, *, fork: bool = False) -> dict[str, Job]:
    secrets = {} if fork else {"MLFLOW_PLAN_TRACKING_URI": team.server.url}
    return team.run(
        "plan",
        "pull_request",
        pr_event(team, number, branch, fork=fork),
        ref=branch,
        secrets=secrets,
        github={"base_ref": "main", "head_ref": branch},
    )


def test_a_pull_request_gets_one_plan_comment_updated_in_place(team: Team) -> None:
    assert team.push_to_main().result == "success"
    model = promote(team, "promote")
    gh = team.gh
    pr = gh.add_pull_request("promote the forecaster")
    person = gh.add_comment(pr, f"{MARKER}\nI quote the bot's marker", login="octocat")

    jobs = run_plan(team, pr, "promote")
    assert jobs["offline"].result == "success", jobs["offline"].log()
    assert jobs["plan"].result == "success", jobs["plan"].log()
    bots = [c for c in gh.comments(pr) if c["user"]["login"] == gh.bot]
    assert len(bots) == 1
    body = bots[0]["body"]
    assert body.startswith(MARKER)
    assert "### regctl plan" in body and "Policy: passed" in body
    assert model in body and "Production" in body
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in body
    assert gh.comment(person)["body"] == f"{MARKER}\nI quote the bot's marker"
    assert not (team.root / "ws2" / "pwned").exists()

    # a later push updates the same comment; the person's is never edited
    again = run_plan(team, pr, "promote")
    assert again["plan"].result == "success", again["plan"].log()
    assert [c["id"] for c in gh.comments(pr) if c["user"]["login"] == gh.bot] == [bots[0]["id"]]
    edits = [c for c in gh.writes() if c.method == "PATCH"]
    assert [c.path for c in edits] == [f"/repos/{gh.repository}/issues/comments/{bots[0]['id']}"]
    assert gh.comment(person)["body"] == f"{MARKER}\nI quote the bot's marker"


def test_a_fork_runs_the_offline_job_only(team: Team) -> None:
    promote(team, "fork-branch")
    pr = team.gh.add_pull_request("from a fork")
    jobs = run_plan(team, pr, "fork-branch", fork=True)
    assert jobs["offline"].result == "success", jobs["offline"].log()
    assert jobs["plan"].result == "skipped"
    assert team.gh.calls == []


def test_a_denied_promotion_is_commented_then_fails_the_job(team: Team) -> None:
    assert team.push_to_main().result == "success"
    model = next(m for m in team.models if "inference" in m)
    git("checkout", "-q", "-b", "deny", cwd=team.origin)
    lgbm = team.origin / "policies" / "lgbm.yaml"
    text = lgbm.read_text(encoding="utf-8")
    # a stricter bound than the example run meets: the promotion is denied
    tightened = re.sub(r"(rmse_test:\s*\{\s*max:\s*)[0-9.]+", r"\g<1>0.001", text, count=1)
    assert tightened != text, "the LGBM policy has no rmse_test max to tighten"
    lgbm.write_text(tightened)
    path = team.manifest(model)
    promoted = path.read_text().replace("aliases: [Staging]", "aliases: [Staging, Production]")
    path.write_text(promoted)
    git("commit", "-qam", "promote against a tighter policy", cwd=team.origin)
    git("checkout", "-q", "main", cwd=team.origin)
    pr = team.gh.add_pull_request("denied")
    jobs = run_plan(team, pr, "deny")
    plan = jobs["plan"]
    assert plan.result == "failure"
    [comment] = team.gh.comments(pr)
    assert "Policy: denied" in comment["body"]
    assert "exited 3" in plan.log()


def test_drift_opens_the_issue_and_closes_it_once_applied(team: Team) -> None:
    assert team.push_to_main().result == "success"
    model = next(m for m in team.models if "inference" in m)
    client(team.server).delete_registered_model_alias(model, "Staging")  # a hand edit
    secrets = {"MLFLOW_PLAN_TRACKING_URI": team.server.url}
    jobs = team.run("drift", "schedule", {"schedule": "23 * * * *"}, secrets=secrets)
    assert jobs["drift"].result == "success", jobs["drift"].log()  # drift is reported
    [issue] = team.gh.issues(state="open", label="regctl-drift")
    assert issue["title"] == "Registry drift detected"
    assert model in issue["body"] and "Staging" in issue["body"]

    assert team.push_to_main().result == "success"  # apply repairs it
    healed = team.run("drift", "schedule", {"schedule": "23 * * * *"}, secrets=secrets)
    assert healed["drift"].result == "success", healed["drift"].log()
    assert team.gh.issues(state="open", label="regctl-drift") == []
    assert team.gh.issue(issue["number"])["state"] == "closed"


def test_drift_with_an_unreachable_registry_fails_and_says_so(team: Team) -> None:
    secrets = {"MLFLOW_PLAN_TRACKING_URI": "http://127.0.0.1:9"}
    jobs = team.run("drift", "schedule", {"schedule": "23 * * * *"}, secrets=secrets)
    assert jobs["drift"].result == "failure"
    [issue] = team.gh.issues(state="open", label="regctl-drift")
    assert issue["title"] == "Registry drift check failed"
    assert json.dumps(issue["body"])  # a body, whatever the error said
