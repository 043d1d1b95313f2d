"""The `.gitlab-ci.yml` of docs/gitlab.md, read as data and then run.

The page's one YAML block is parsed (ruamel, safe) and checked: which jobs GitLab would
start for each kind of pipeline (workflow and job `rules` evaluated), which credential
each script uses, how regctl is installed and called, the apply job's resource group and
environment, and that no merge-request text reaches a script. Then the scripts run with
bash the way GitLab's runner runs them (`set -eo pipefail`, one shell per job, the CI_*
variables GitLab sets), in git clones of a bare repository holding the example manifests,
against the real test MLflow server; the merge-request note step runs against a stand-in
for GitLab's API on loopback.
"""

from __future__ import annotations

import http.server
import json
import re
import shlex
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from ruamel.yaml import YAML

from conftest import Server, free_port, git_commit, init_git

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "gitlab.md"
FENCE = re.compile(r"^```yaml\n(.*?)^```$", re.M | re.S)

JOBS = {"offline", "plan", "apply", "drift"}
RESERVED = {"workflow", "stages", "default", "variables", "include", "image", "cache"}
INSTALL = 'python -m pip install "$REGCTL_SPEC"'
COMMANDS = {"validate", "check", "diff", "apply"}
ENVIRONMENT = "mlflow-registry"
READ_ONLY = re.compile(r"\bMLFLOW_PLAN_\w+")
WRITE = re.compile(r"\bMLFLOW_APPLY_\w+")
# What a merge request's author (or a committer) writes: never named in the file at all.
UNTRUSTED = re.compile(
    r"CI_MERGE_REQUEST_(TITLE|DESCRIPTION\w*|SOURCE_BRANCH_NAME|LABELS|ASSIGNEES)"
    r"|CI_COMMIT_(REF_NAME|REF_SLUG|MESSAGE|TITLE|DESCRIPTION|AUTHOR)"
    r"|GITLAB_USER_(NAME|EMAIL)|CI_EXTERNAL_PULL_REQUEST_\w+"
)
# A valid git branch name that runs `touch pwned` wherever a shell parses it as code.
HOSTILE_BRANCH = "main-$(touch${IFS}pwned)"


def doc_config() -> dict[str, Any]:
    blocks = FENCE.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 1, "docs/gitlab.md must hold exactly one ```yaml block"
    data = YAML(typ="safe", pure=True).load(blocks[0])
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return doc_config()


def jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in config.items() if k not in RESERVED and not k.startswith(".")}


def script(config: dict[str, Any], job: str) -> list[str]:
    lines = jobs(config)[job]["script"]
    assert isinstance(lines, list)
    return lines


def shell_lines(config: dict[str, Any], job: str) -> list[str]:
    return [line for item in script(config, job) for line in item.splitlines()]


# ---- GitLab's `rules:if` expressions, the subset the file uses ---------------------------

TOKEN = re.compile(
    r"\s*(?:(?P<op>==|!=|&&|\|\||\(|\))|\$(?P<var>\w+)|\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'"
    r"|(?P<null>null))"
)


class Expression:
    """`$A == "x" && ($B != $C || $D)`: GitLab's CI/CD variable expressions without
    regular expressions. An unset variable is null; a bare `$VAR` is true when it is set
    and not empty; `&&` binds tighter than `||`."""

    def __init__(self, source: str) -> None:
        self.tokens: list[tuple[str, str | None]] = []
        pos = 0
        while pos < len(source.rstrip()):
            m = TOKEN.match(source, pos)
            assert m, f"cannot read the rule at {source[pos:]!r}"
            kind = next(k for k, v in m.groupdict().items() if v is not None)
            self.tokens.append((kind, m[kind]))
            pos = m.end()

    def evaluate(self, env: dict[str, str]) -> bool:
        self.env, self.pos = env, 0
        value = self._or()
        assert self.pos == len(self.tokens), self.tokens[self.pos :]
        return value

    def _peek(self) -> tuple[str, str | None]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", None)

    def _or(self) -> bool:
        value = self._and()
        while self._peek() == ("op", "||"):
            self.pos += 1
            value = self._and() or value
        return value

    def _and(self) -> bool:
        value = self._atom()
        while self._peek() == ("op", "&&"):
            self.pos += 1
            value = self._atom() and value
        return value

    def _atom(self) -> bool:
        if self._peek() == ("op", "("):
            self.pos += 1
            value = self._or()
            assert self._peek() == ("op", ")")
            self.pos += 1
            return value
        left = self._operand()
        kind, op = self._peek()
        if kind == "op" and op in ("==", "!="):
            self.pos += 1
            right = self._operand()
            return (left == right) == (op == "==")
        return bool(left)

    def _operand(self) -> str | None:
        kind, text = self._peek()
        self.pos += 1
        if kind == "var":
            assert text is not None
            return self.env.get(text)
        if kind in ("dq", "sq"):
            return text
        assert kind == "null", (kind, text)
        return None


def rules_allow(rules: list[dict[str, Any]], env: dict[str, str]) -> bool:
    """The first rule whose `if` holds decides; `when: never` excludes; no match excludes."""
    for rule in rules:
        assert set(rule) <= {"if", "when"}, rule
        if "if" not in rule or Expression(rule["if"]).evaluate(env):
            return bool(rule.get("when", "on_success") != "never")
    return False


MAIN = {"CI_DEFAULT_BRANCH": "main", "CI_PROJECT_ID": "1"}
MR = {
    **MAIN,
    "CI_PIPELINE_SOURCE": "merge_request_event",
    "CI_MERGE_REQUEST_IID": "5",
    "CI_MERGE_REQUEST_PROJECT_ID": "1",
    "CI_MERGE_REQUEST_SOURCE_PROJECT_ID": "1",
    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
}
PIPELINES: dict[str, tuple[dict[str, str], set[str]]] = {
    "merge request": (MR, {"offline", "plan"}),
    "merge request into another branch": (
        {**MR, "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "release"},
        {"offline", "plan"},
    ),
    # a fork's merge request runs in the fork by default (CI_PROJECT_ID is the fork's);
    # a maintainer may run it in this project instead
    "merge request from a fork": (
        {**MR, "CI_MERGE_REQUEST_SOURCE_PROJECT_ID": "2", "CI_PROJECT_ID": "2"},
        {"offline"},
    ),
    "fork's merge request run in this project": (
        {**MR, "CI_MERGE_REQUEST_SOURCE_PROJECT_ID": "2"},
        {"offline"},
    ),
    "push to the default branch": (
        {**MAIN, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main"},
        {"apply"},
    ),
    "Run pipeline on the default branch": (
        {**MAIN, "CI_PIPELINE_SOURCE": "web", "CI_COMMIT_BRANCH": "main"},
        {"apply"},
    ),
    "schedule on the default branch": (
        {**MAIN, "CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_BRANCH": "main"},
        {"drift"},
    ),
    "API pipeline on the default branch": (
        {**MAIN, "CI_PIPELINE_SOURCE": "api", "CI_COMMIT_BRANCH": "main"},
        set(),
    ),
    "push to another branch": (
        {**MAIN, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "feature"},
        set(),
    ),
    "Run pipeline on another branch": (
        {**MAIN, "CI_PIPELINE_SOURCE": "web", "CI_COMMIT_BRANCH": "feature"},
        set(),
    ),
    "schedule on another branch": (
        {**MAIN, "CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_BRANCH": "feature"},
        set(),
    ),
    "tag": ({**MAIN, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_TAG": "v1"}, set()),
    "tag named like the default branch": (
        {**MAIN, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_TAG": "main"},
        set(),
    ),
}


def started(config: dict[str, Any], env: dict[str, str]) -> set[str]:
    if not rules_allow(config["workflow"]["rules"], env):
        return set()
    return {name for name, job in jobs(config).items() if rules_allow(job["rules"], env)}


def test_the_expression_reader_follows_gitlab() -> None:
    env = {"A": "x", "EMPTY": ""}
    cases = {
        '$A == "x"': True,
        "$A == 'y'": False,
        "$UNSET == null": True,
        "$UNSET == $ALSO_UNSET": True,
        "$A == $UNSET": False,
        "$EMPTY": False,
        "$A": True,
        '$A != "x" || $A && $UNSET': False,
        '($A != "x" || $A) && $A == "x"': True,
    }
    assert {src: Expression(src).evaluate(env) for src in cases} == cases


# ---- the file, read -------------------------------------------------------------------


def test_the_jobs_and_when_gitlab_starts_them(config: dict[str, Any]) -> None:
    assert set(jobs(config)) == JOBS
    assert not {"only", "except"} & {k for job in jobs(config).values() for k in job}
    actual = {name: started(config, env) for name, (env, _) in PIPELINES.items()}
    assert actual == {name: expected for name, (_, expected) in PIPELINES.items()}


def test_apply_never_runs_for_merge_requests_or_tags(config: dict[str, Any]) -> None:
    """Whatever else a pipeline has: apply needs a push or Run pipeline on the default
    branch, and a merge request or a tag excludes it even with CI_COMMIT_BRANCH set."""
    rules = jobs(config)["apply"]["rules"]
    for source in ("merge_request_event", "push", "web", "schedule", "api", "trigger"):
        for tag in ("", "v1"):
            env = {**MAIN, "CI_PIPELINE_SOURCE": source, "CI_COMMIT_BRANCH": "main"}
            if tag:
                env["CI_COMMIT_TAG"] = tag
            expected = source in ("push", "web") and not tag
            assert rules_allow(rules, env) is expected, (source, tag)


def test_apply_is_serialised_in_its_environment(config: dict[str, Any]) -> None:
    every = jobs(config)
    apply = every["apply"]
    assert apply["resource_group"] == ENVIRONMENT
    assert apply["environment"]["name"] == ENVIRONMENT
    assert apply["interruptible"] is False  # a newer pipeline never cancels an apply
    assert [n for n, j in every.items() if "environment" in j or "resource_group" in j] == ["apply"]
    assert all(every[n]["interruptible"] is True for n in ("offline", "plan", "drift"))
    assert all(isinstance(job["timeout"], str) for job in every.values())


def test_only_apply_uses_the_write_credential(config: dict[str, Any]) -> None:
    used = {
        name: (
            set(READ_ONLY.findall("\n".join(script(config, name)))),
            set(WRITE.findall("\n".join(script(config, name)))),
        )
        for name in JOBS
    }
    suffixes = {"TRACKING_URI", "TRACKING_TOKEN", "TRACKING_USERNAME", "TRACKING_PASSWORD"}
    assert used["apply"] == (set(), {f"MLFLOW_APPLY_{s}" for s in suffixes})
    assert used["plan"] == used["drift"] == ({f"MLFLOW_PLAN_{s}" for s in suffixes}, set())
    assert used["offline"] == (set(), set())
    # each registry job maps its own set to MLflow's names, from nowhere else
    for name, prefix in (("plan", "PLAN"), ("drift", "PLAN"), ("apply", "APPLY")):
        exports = [line.strip() for line in shell_lines(config, name) if "export MLFLOW_" in line]
        assert exports == [
            f'export MLFLOW_TRACKING_URI="$MLFLOW_{prefix}_TRACKING_URI"',
            *(
                f'export MLFLOW_TRACKING_{s}="${{MLFLOW_{prefix}_TRACKING_{s}:-}}"'
                for s in ("TOKEN", "USERNAME", "PASSWORD")
            ),
        ]
    # no credential is set in the file itself, and nothing defines MLflow's variables for
    # every job
    variables = [
        config.get("variables", {}),
        *(j.get("variables", {}) for j in jobs(config).values()),
    ]
    assert [k for v in variables for k in v if k.startswith("MLFLOW_")] == []


def test_regctl_is_installed_at_a_pinned_release(config: dict[str, Any]) -> None:
    from regctl import __version__

    assert config["default"]["image"] == "python:3.11"
    spec = config["variables"]["REGCTL_SPEC"]
    m = re.fullmatch(r"regctl @ git\+https://[\w.-]+/[\w./-]+\.git@v(?P<version>[\w.]+)", spec)
    assert m, spec
    assert m["version"] == __version__  # the page names this release
    assert config["variables"]["GIT_DEPTH"] == "0"
    for name in JOBS:
        lines = script(config, name)
        assert lines[0] == INSTALL, name
        others = "\n".join(lines[1:])
        assert not re.search(r"\bpip\b", others), name
    text = "\n".join(item for name in JOBS for item in script(config, name))
    assert not re.search(r"pip\s+install\s+(-\S+\s+)*(-e|--editable|\.)(\s|$)", text)
    # no cache: one written by a merge request's pipeline must not feed the apply job
    assert "cache" not in config and "cache" not in config["default"]
    assert not [n for n, j in jobs(config).items() if "cache" in j]


def test_every_script_line_is_a_string(config: dict[str, Any]) -> None:
    for job in jobs(config).values():
        for key in ("before_script", "script", "after_script"):
            if key in job:
                assert isinstance(job[key], list) and job[key], key
                assert [i for i in job[key] if not isinstance(i, str)] == []
    assert "before_script" not in config["default"] and "after_script" not in config["default"]


def test_regctl_is_driven_only_through_its_commands(config: dict[str, Any]) -> None:
    called = set()
    for name in JOBS:
        for line in shell_lines(config, name):
            assert not re.search(r"-m\s+regctl|import\s+regctl|from\s+regctl", line), line
            words = line.split()
            if words and words[0] == "regctl":
                assert len(words) > 1 and words[1] in COMMANDS, line
                called.add(words[1])
            if words and words[0].startswith("python"):
                assert line.strip() == INSTALL, line
    assert called == COMMANDS


def test_no_merge_request_text_reaches_a_script(config: dict[str, Any]) -> None:
    text = "\n".join(FENCE.findall(DOC.read_text(encoding="utf-8")))
    assert UNTRUSTED.findall(text) == []
    # the one value from the merge request, the target branch name, only in double quotes
    for name in JOBS:
        for line in shell_lines(config, name):
            for position in _references(line, "CI_MERGE_REQUEST_"):
                assert _quote_at(line, position) == '"', line
    # the note step's heredoc is quoted: bash expands nothing in the Python
    [note] = [i for i in script(config, "plan") if "REGCTL_NOTE_TOKEN" in i]
    assert "<<'PY'" in note and "<<PY" not in note and '<<"PY"' not in note


def _references(line: str, prefix: str) -> Iterator[int]:
    for m in re.finditer(r"\$\{?" + prefix, line):
        yield m.start()


def _quote_at(line: str, position: int) -> str:
    """The quote bash is inside at `position` ("" when none)."""
    quote, i = "", 0
    while i < position:
        ch = line[i]
        if ch == "\\" and quote != "'":
            i += 2
            continue
        if ch in "\"'" and (not quote or quote == ch):
            quote = "" if quote else ch
        i += 1
    return quote


def test_plan_drift_and_apply_run_what_the_page_says(config: dict[str, Any]) -> None:
    plan = "\n".join(script(config, "plan"))
    assert (
        'regctl diff --base "origin/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME" --format markdown'
        " > plan.md" in plan
    )
    assert "regctl check --format markdown > check.md" in plan
    artifacts = jobs(config)["plan"]["artifacts"]
    assert artifacts["paths"] == ["plan.md", "check.md"]
    assert artifacts["when"] == "always" and artifacts["expose_as"]
    assert script(config, "apply")[-1] == "regctl apply --auto-approve"
    drift = jobs(config)["drift"]
    assert drift["allow_failure"] == {"exit_codes": [2]}
    assert "regctl diff --exit-code --format markdown > drift.md" in "\n".join(drift["script"])
    assert drift["artifacts"]["paths"] == ["drift.md"]


# ---- the scripts, run -----------------------------------------------------------------


def run_script(
    lines: list[str], cwd: Path, env: dict[str, str], *, skip_install: bool = True
) -> subprocess.CompletedProcess[str]:
    """A job's `script` as GitLab's runner runs it: one bash, `set -eo pipefail`."""
    if skip_install:  # regctl is installed already: this tree's, through the shim below
        assert lines[0] == INSTALL
        lines = lines[1:]
    with tempfile.TemporaryDirectory(prefix="gitlab-job-") as folder:
        path = Path(folder) / "script.sh"  # outside CI_PROJECT_DIR, as the runner keeps it
        path.write_text("\n".join(lines) + "\n")
        return subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    """A `regctl` on PATH that runs this tree's package (what `pip install` gives)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    regctl = folder / "regctl"
    controller, python = shlex.quote(str(REPO / "controller")), shlex.quote(sys.executable)
    regctl.write_text(f'#!/bin/sh\nPYTHONPATH={controller} exec {python} -m regctl "$@"\n')
    regctl.chmod(0o755)
    return folder


def base_env(shim: Path, tmp_path: Path, **ci: str) -> dict[str, str]:
    """What a GitLab job's shell sees: the runner's variables and nothing of ours.

    A stale MLFLOW_TRACKING_URI points at a dead port: each job must set its own."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    dead = f"http://127.0.0.1:{free_port()}"
    return {
        "PATH": f"{shim}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
        "CI": "true",
        "GITLAB_CI": "true",
        "GITLAB_USER_LOGIN": "ada",
        "CI_PROJECT_ID": "1",
        "CI_SERVER_URL": "https://gitlab.example.com",
        "CI_API_V4_URL": "https://gitlab.example.com/api/v4",
        "CI_JOB_URL": "https://gitlab.example.com/acme/registry/-/jobs/4242",
        "MLFLOW_TRACKING_URI": dead,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        **ci,
    }


@dataclass
class Origin:
    """The project's repository on GitLab (a bare repository) and an author's clone."""

    bare: Path
    author: Any
    default: str

    def job_checkout(self, where: Path, ref: str) -> Path:
        """What the runner leaves in CI_PROJECT_DIR: the pipeline's ref only, detached."""
        subprocess.run(["git", "init", "-q", str(where)], check=True)
        git = ["git", "-C", str(where)]
        subprocess.run([*git, "remote", "add", "origin", str(self.bare)], check=True)
        subprocess.run([*git, "fetch", "-q", "--no-tags", "origin", ref], check=True)
        subprocess.run([*git, "checkout", "-q", "--detach", "FETCH_HEAD"], check=True)
        return where


@pytest.fixture
def origin(tmp_path: Path, examples_repo: Path, uniq: str) -> Origin:
    """The example manifests under names of this test, pushed to a bare `origin` whose
    default branch has a name that is code to a careless shell."""
    for path in (examples_repo / "manifests").glob("*.yaml"):
        text = re.sub(r"(?m)^(name|experiment): ", rf"\1: {uniq}-", path.read_text())
        path.write_text(text)
    bare = tmp_path / "project.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    author = init_git(examples_repo)
    git_commit(author, "the example manifests")
    author.git.branch("-m", HOSTILE_BRANCH)
    author.git.remote("add", "origin", str(bare))
    author.git.push("-q", "origin", HOSTILE_BRANCH)
    subprocess.run(
        ["git", "-C", str(bare), "symbolic-ref", "HEAD", f"refs/heads/{HOSTILE_BRANCH}"],
        check=True,
    )
    return Origin(bare, author, HOSTILE_BRANCH)


def model_names(root: Path) -> dict[str, str]:
    names = {}
    for path in (root / "manifests").glob("*.yaml"):
        m = re.search(r"(?m)^name: (\S+)", path.read_text())
        assert m
        names[path.stem] = m[1]
    return names


def test_the_jobs_plan_apply_and_report_drift(
    config: dict[str, Any],
    mlflow_server: Server,
    origin: Origin,
    shim: Path,
    tmp_path: Path,
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url, mlflow_server.url)
    dead = f"http://127.0.0.1:{free_port()}"
    reader = {"MLFLOW_PLAN_TRACKING_URI": mlflow_server.url, "MLFLOW_APPLY_TRACKING_URI": dead}
    writer = {"MLFLOW_APPLY_TRACKING_URI": mlflow_server.url, "MLFLOW_PLAN_TRACKING_URI": dead}
    default = origin.default
    names = model_names(Path(origin.author.working_tree_dir))
    lgbm, hmm = names["btcusdt-1h-inference-7d-logret"], names["btcusdt-1h-regimes-hmm"]
    first = origin.author.head.commit.hexsha
    on_default = {
        "CI_DEFAULT_BRANCH": default,
        "CI_COMMIT_BRANCH": default,
        "CI_PIPELINE_SOURCE": "push",
        "CI_COMMIT_SHA": first,
        "CI_COMMIT_SHORT_SHA": first[:8],
    }

    # 1. the first push to the default branch: apply
    work = origin.job_checkout(tmp_path / "apply-1", f"refs/heads/{default}")
    done = run_script(
        script(config, "apply"), work, base_env(shim, tmp_path, **on_default, **writer)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Verified: the registry matches the manifests." in done.stdout
    assert client.get_registered_model(lgbm).aliases == {"Staging": "1"}

    # 2. a merge request that edits one manifest: plan, with the read-only credential
    author = origin.author
    author.git.checkout("-q", "-b", "retune")
    manifest = Path(author.working_tree_dir) / "manifests" / "btcusdt-1h-inference-7d-logret.yaml"
    new_description = "Seven-day log-return forecaster, reviewed in merge request 5."
    manifest.write_text(
        re.sub(
            r"(?m)^description: .*$",
            f"description: {new_description}",
            manifest.read_text(),
            count=1,
        )
    )
    second = git_commit(author, "describe the forecaster")
    author.git.push("-q", "origin", "retune")
    work = origin.job_checkout(tmp_path / "plan", "refs/heads/retune")
    gitlab = GitLabStub()
    with gitlab.serving() as api:
        env = base_env(
            shim,
            tmp_path,
            **reader,
            CI_PIPELINE_SOURCE="merge_request_event",
            CI_DEFAULT_BRANCH=default,
            CI_MERGE_REQUEST_IID="5",
            CI_MERGE_REQUEST_PROJECT_ID="1",
            CI_MERGE_REQUEST_SOURCE_PROJECT_ID="1",
            CI_MERGE_REQUEST_TARGET_BRANCH_NAME=default,
            CI_COMMIT_SHA=second,
            CI_COMMIT_SHORT_SHA=second[:8],
            CI_API_V4_URL=api,
            REGCTL_NOTE_TOKEN="",
        )
        done = run_script(script(config, "plan"), work, env)
    assert done.returncode == 0, done.stdout + done.stderr
    plan_md = (work / "plan.md").read_text()
    assert new_description in plan_md and lgbm in plan_md
    assert hmm not in plan_md  # `--base` found the target branch: only the changed model
    assert "**Plan: 0 to add, 1 to change, 0 to destroy.**" in plan_md
    assert "policy" in (work / "check.md").read_text().lower()
    assert "REGCTL_NOTE_TOKEN is not set" in done.stdout
    assert gitlab.requests == []  # the note step was skipped: not one API call
    assert "regctl validate exited 0, diff 0, check 0" in done.stdout
    # the offline job of the same merge request: no credential, the embedded store
    work = origin.job_checkout(tmp_path / "offline", "refs/heads/retune")
    done = run_script(script(config, "offline"), work, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 manifests valid" in done.stdout and "0 denied" in done.stdout
    assert (work / "mlflow.db").is_file()  # not the stale MLFLOW_TRACKING_URI

    # 3. merged; the pipeline of the FIRST commit is retried: it applies the head
    author.git.push("-q", "origin", f"retune:{default}")
    work = origin.job_checkout(tmp_path / "apply-2", first)
    done = run_script(
        script(config, "apply"), work, base_env(shim, tmp_path, **on_default, **writer)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"applying {default} at {second}" in done.stdout
    model = client.get_registered_model(lgbm)
    assert model.description == new_description
    applied = model.tags["regctl.applied"]
    assert applied.startswith(f"commit {second} by ada at ")
    assert applied.endswith(" via https://gitlab.example.com/acme/registry/-/jobs/4242")
    converged = subprocess.run(
        ["regctl", "diff", "--exit-code"],
        cwd=work,
        env={**base_env(shim, tmp_path), "MLFLOW_TRACKING_URI": mlflow_server.url},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert converged.returncode == 0, converged.stdout + converged.stderr

    # 4. the schedule: no drift, then a description changed by hand in the MLflow UI
    schedule = {**on_default, "CI_PIPELINE_SOURCE": "schedule", **reader}
    work = origin.job_checkout(tmp_path / "drift-1", f"refs/heads/{default}")
    done = run_script(script(config, "drift"), work, base_env(shim, tmp_path, **schedule))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no drift" in done.stdout
    client.update_registered_model(lgbm, description="changed by hand")
    work = origin.job_checkout(tmp_path / "drift-2", f"refs/heads/{default}")
    done = run_script(script(config, "drift"), work, base_env(shim, tmp_path, **schedule))
    assert done.returncode == 2, done.stdout + done.stderr  # allowed to fail: a warning
    assert "changed by hand" in (work / "drift.md").read_text()

    # the hostile branch name was data everywhere
    assert sorted(p.name for p in tmp_path.rglob("pwned*")) == []


# ---- the note step, against a stand-in for GitLab's API -------------------------------

BOT, PERSON = 77, 3
MARKER = "<!-- regctl-plan -->"


@dataclass
class GitLabStub:
    """GitLab's notes API for merge request 5 of project 1, two notes a page."""

    token: str = "glpat-note-token-0123456789"
    notes: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    tokens: set[str | None] = field(default_factory=set)

    def serving(self) -> Any:
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(
                self, status: int, body: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                url = urlsplit(self.path)
                stub.requests.append((self.command, url.path))
                stub.tokens.add(self.headers.get("PRIVATE-TOKEN"))
                if self.headers.get("PRIVATE-TOKEN") != stub.token:
                    return self._answer(401, {"message": "401 Unauthorized"})
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                notes = "/api/v4/projects/1/merge_requests/5/notes"
                if (self.command, url.path) == ("GET", "/api/v4/user"):
                    return self._answer(200, {"id": BOT, "username": "project_1_bot"})
                if (self.command, url.path) == ("GET", notes):
                    page = int(parse_qs(url.query).get("page", ["1"])[0])
                    chunk = stub.notes[(page - 1) * 2 : page * 2]
                    more = len(stub.notes) > page * 2
                    return self._answer(200, chunk, {"X-Next-Page": str(page + 1) if more else ""})
                if (self.command, url.path) == ("POST", notes):
                    note = {"id": 1000 + len(stub.notes), "author": {"id": BOT}, **body}
                    stub.notes.append({**note, "system": False})
                    return self._answer(201, note)
                m = re.fullmatch(re.escape(notes) + r"/(\d+)", url.path)
                if self.command == "PUT" and m:
                    [note] = [n for n in stub.notes if n["id"] == int(m[1])]
                    note["body"] = body["body"]
                    return self._answer(200, note)
                return self._answer(404, {"message": "404 Not Found"})

            do_GET = do_POST = do_PUT = _handle

        class Serving:
            def __enter__(self) -> str:
                self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
                threading.Thread(target=self.server.serve_forever, daemon=True).start()
                return f"http://127.0.0.1:{self.server.server_address[1]}/api/v4"

            def __exit__(self, *exc: object) -> None:
                self.server.shutdown()
                self.server.server_close()

        return Serving()


def note_step(config: dict[str, Any]) -> str:
    [step] = [i for i in script(config, "plan") if "REGCTL_NOTE_TOKEN" in i]
    return step


def run_note(
    config: dict[str, Any], work: Path, api: str, token: str, rcs: tuple[int, int, int]
) -> subprocess.CompletedProcess[str]:
    validate, diff, check = rcs
    prefix = f"validate_rc={validate}\ndiff_rc={diff}\ncheck_rc={check}"
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "CI_API_V4_URL": api,
        "CI_MERGE_REQUEST_PROJECT_ID": "1",
        "CI_MERGE_REQUEST_IID": "5",
        "CI_COMMIT_SHORT_SHA": "0123abcd",
        "CI_JOB_URL": "https://gitlab.example.com/acme/registry/-/jobs/4242",
        "REGCTL_NOTE_TOKEN": token,
    }
    return run_script([prefix, note_step(config)], work, env, skip_install=False)


def test_the_note_is_one_note_updated_on_every_push(config: dict[str, Any], tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "plan.md").write_text("### regctl plan\n\n**Plan: 0 to add, 1 to change**\n")
    (work / "check.md").write_text("policy check: 0 denied\n")
    gitlab = GitLabStub()
    # a person quoting the marker, then the bot's other notes, across pages
    gitlab.notes = [
        {"id": 1, "author": {"id": PERSON}, "system": False, "body": f"why {MARKER}?"},
        {"id": 2, "author": {"id": BOT}, "system": False, "body": "an unrelated bot note"},
        {"id": 3, "author": {"id": BOT}, "system": True, "body": f"system {MARKER}"},
    ]
    with gitlab.serving() as api:
        first = run_note(config, work, api, gitlab.token, (0, 0, 0))
        assert first.returncode == 0, first.stderr
        assert "created note 1003" in first.stdout
        (work / "plan.md").write_text("### regctl plan\n\n**Plan: 0 to add, 2 to change**\n")
        second = run_note(config, work, api, gitlab.token, (0, 3, 3))
        assert second.returncode == 0, second.stderr
        assert "updated note 1003" in second.stdout
        # an empty token: skipped, not one request
        before = list(gitlab.requests)
        skipped = run_note(config, work, api, "", (0, 0, 0))
        assert skipped.returncode == 0 and "REGCTL_NOTE_TOKEN is not set" in skipped.stdout
        assert gitlab.requests == before
        # a refused token fails the step (a broken token is noticed)
        refused = run_note(config, work, api, "wrong", (0, 0, 0))
        assert refused.returncode != 0
    writes = [r for r in gitlab.requests if r[0] in ("POST", "PUT")]
    assert writes == [
        ("POST", "/api/v4/projects/1/merge_requests/5/notes"),
        ("PUT", "/api/v4/projects/1/merge_requests/5/notes/1003"),
    ]
    assert gitlab.tokens == {gitlab.token, "wrong"}
    bodies = {n["id"]: n["body"] for n in gitlab.notes}
    assert bodies[1] == f"why {MARKER}?" and bodies[2] == "an unrelated bot note"
    body = bodies[1003]
    assert body.startswith(MARKER + "\n## regctl plan for 0123abcd")
    assert "2 to change" in body and "1 to change" not in body
    assert "A policy denied this change (`regctl diff` exited 3)" in body
    assert "policy check: 0 denied" in body


@pytest.mark.parametrize(
    ("rcs", "expected"),
    [
        ((0, 0, 0), 0),
        ((0, 3, 0), 3),
        ((0, 0, 3), 3),
        ((0, 1, 0), 1),
        ((1, 1, 0), 1),
        ((0, 3, 1), 1),
        ((0, 0, 120), 1),
    ],
)
def test_the_plan_job_fails_after_the_note(
    config: dict[str, Any], tmp_path: Path, rcs: tuple[int, int, int], expected: int
) -> None:
    """The last step: an error (anything but 0 and 3) is 1, else a denial is 3."""
    validate, diff, check = rcs
    prefix = f"validate_rc={validate}\ndiff_rc={diff}\ncheck_rc={check}"
    done = run_script(
        [prefix, script(config, "plan")[-1]],
        tmp_path,
        {"PATH": "/usr/bin:/bin"},
        skip_install=False,
    )
    assert done.returncode == expected, done.stderr


STUB_REGCTL = '#!/bin/sh\necho "stub plan"\nexit "$STUB_RC"\n'


@pytest.mark.parametrize(("rc", "expected"), [(0, 0), (2, 2), (3, 3), (1, 1), (120, 1)])
def test_the_drift_job_maps_exit_codes(
    config: dict[str, Any], tmp_path: Path, rc: int, expected: int
) -> None:
    """0 passes, 2 (drift) is the code `allow_failure` lets through, 3 stays 3, anything
    else is an error (1). A stand-in regctl exits with each code."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "regctl").write_text(STUB_REGCTL)
    (folder / "regctl").chmod(0o755)
    env = {
        "PATH": f"{folder}:/usr/bin:/bin",
        "STUB_RC": str(rc),
        "CI_DEFAULT_BRANCH": "main",
        "MLFLOW_PLAN_TRACKING_URI": "http://127.0.0.1:9",
    }
    done = run_script(script(config, "drift"), tmp_path, env)
    assert done.returncode == expected, done.stderr
    assert (tmp_path / "drift.md").read_text() == "stub plan\n"


def test_the_registry_jobs_refuse_without_their_uri(config: dict[str, Any], tmp_path: Path) -> None:
    """An unset URI would plan or apply against an empty local sqlite store."""
    for job, variable in (
        ("plan", "MLFLOW_PLAN"),
        ("drift", "MLFLOW_PLAN"),
        ("apply", "MLFLOW_APPLY"),
    ):
        done = run_script(script(config, job), tmp_path, {"PATH": "/usr/bin:/bin"})
        assert done.returncode == 1, job
        assert f"{variable}_TRACKING_URI is not set" in done.stderr, job
    assert not list(tmp_path.glob("*.db"))
