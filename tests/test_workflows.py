"""The GitHub Actions workflows (SPEC section 7), read as data.

They cannot run here, so these tests pin down what makes them safe and correct: triggers,
least-privilege permissions, the apply concurrency group, actions pinned to commit SHAs,
no expression expanded into shell or JavaScript source, secrets only on jobs that forks
cannot reach, the write credential only in the apply job's environment, and regctl driven
only through its commands. The drift job's steps are executed: its shell with a stand-in
`regctl` that exits 0, 1, 2 or 3, its github-script with node and a recording stand-in for
the GitHub API. actionlint runs when present.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
NAMES = ("plan", "apply", "drift")

SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
VERSION_COMMENT = re.compile(r"^\s+# v\d+\.\d+\.\d+$")
FORK_CONDITION = "github.event.pull_request.head.repo.full_name == github.repository"
# Pull-request text an attacker controls; never to be expanded inside a script.
UNTRUSTED = re.compile(
    r"github\.event\.pull_request\.(title|body|head\.ref|head\.label)|github\.head_ref"
)
COMMANDS = ("validate", "sync", "check", "diff", "apply")
SOURCE_PATHS = {"manifests/**", "policies/**", "examples/**", "controller/**"}
GITHUB_SCRIPT = "actions/github-script@"
# MLflow's variables, as each registry job's `env:` maps them: the read-only credential
# (repository secrets, reachable by any branch's code) and the write credential (secrets of
# the `mlflow-registry` environment, which only main reaches).
MLFLOW_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)
READ_ONLY_ENV = {
    v: f"${{{{ secrets.{v.replace('MLFLOW_', 'MLFLOW_PLAN_')} }}}}" for v in MLFLOW_VARIABLES
}
WRITE_ENV = {v: f"${{{{ secrets.{v} }}}}" for v in MLFLOW_VARIABLES}
WRITE_SECRETS = set(MLFLOW_VARIABLES)
APPLY_ENVIRONMENT = "mlflow-registry"
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)
SECRET_REF = re.compile(r"\bsecrets\b(?:\s*\.\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*))?")


def load(name: str) -> dict[str, Any]:
    data = YAML(typ="safe", pure=True).load((WORKFLOWS / f"{name}.yml").read_text())
    assert isinstance(data, dict), name
    return data


def triggers(wf: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.2 (ruamel) reads `on` as a string; a YAML 1.1 reader would give True.
    on = wf.get("on", wf.get(True))
    assert isinstance(on, dict)
    return on


def steps(wf: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_id, job in wf["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def scripts(wf: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every piece of source code a step runs: `run:` shell and github-script `script:`."""
    for job_id, step in steps(wf):
        label = f"{job_id}/{step.get('name') or step.get('uses') or step.get('run')}"
        if "run" in step:
            yield label, step["run"]
        if str(step.get("uses", "")).startswith(GITHUB_SCRIPT):
            yield label, step["with"]["script"]


def runs(wf: dict[str, Any], job: str | None = None) -> list[str]:
    return [s["run"] for j, s in steps(wf) if "run" in s and job in (None, j)]


def step_using(wf: dict[str, Any], job: str, action: str) -> dict[str, Any]:
    found = [s for j, s in steps(wf) if j == job and str(s.get("uses", "")).startswith(action)]
    assert len(found) == 1, (job, action, found)
    return found[0]


def env_values(node: Any) -> Iterator[str]:
    """Strings reachable from node, skipping `env:` mappings (where secrets may go)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "env":
                yield from env_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from env_values(item)
    elif isinstance(node, str):
        yield node


@pytest.fixture(scope="module", params=NAMES)
def workflow(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, load(request.param)


def test_triggers() -> None:
    plan, apply, drift = (triggers(load(n)) for n in NAMES)

    assert set(plan) == {"pull_request"}
    assert set(plan["pull_request"]["paths"]) >= SOURCE_PATHS

    assert set(apply) == {"push", "workflow_dispatch"}
    assert apply["push"]["branches"] == ["main"]
    assert set(apply["push"]["paths"]) >= SOURCE_PATHS

    assert set(drift) == {"schedule", "workflow_dispatch"}
    assert [bool(c["cron"].strip()) for c in drift["schedule"]] == [True]


def test_top_level_permissions_are_read_only(workflow: tuple[str, dict[str, Any]]) -> None:
    name, wf = workflow
    assert wf["permissions"] == {"contents": "read"}, name


def test_write_permissions_only_on_the_jobs_that_need_them() -> None:
    expected = {
        "plan": {"offline": None, "plan": {"contents": "read", "pull-requests": "write"}},
        "apply": {"apply": None},
        "drift": {"drift": {"contents": "read", "issues": "write"}},
    }
    actual = {
        name: {job_id: job.get("permissions") for job_id, job in load(name)["jobs"].items()}
        for name in NAMES
    }
    assert actual == expected


def test_concurrency() -> None:
    # never two applies at once, and never cancel one half way through its writes
    assert load("apply")["concurrency"] == {"group": "regctl-apply", "cancel-in-progress": False}
    assert load("drift")["concurrency"] == {"group": "regctl-drift", "cancel-in-progress": True}
    plan = load("plan")["concurrency"]
    assert "github.event.pull_request.number" in plan["group"]
    assert plan["cancel-in-progress"] is True


def test_every_action_is_pinned_to_a_commit_sha(workflow: tuple[str, dict[str, Any]]) -> None:
    name, wf = workflow
    uses = [s["uses"] for _, s in steps(wf) if "uses" in s]
    assert uses, name
    assert [u for u in uses if not SHA_PIN.match(u)] == []
    # the comment naming the release is what a reviewer (and Dependabot) reads
    lines = (WORKFLOWS / f"{name}.yml").read_text().splitlines()
    matches = [m for m in map(USES_LINE.match, lines) if m]
    assert len(matches) == len(uses)
    assert [m.group(0) for m in matches if not VERSION_COMMENT.match(m["rest"])] == []


def test_no_expression_is_expanded_inside_scripts(workflow: tuple[str, dict[str, Any]]) -> None:
    # Everything reaches shell and JavaScript through `env:`; an expression in a script is
    # pasted into its source before it runs, which is how pull-request text gets executed.
    name, wf = workflow
    found = list(scripts(wf))
    assert found, name
    assert [label for label, src in found if UNTRUSTED.search(src)] == []
    assert [label for label, src in found if "${{" in src] == []


def test_secrets_only_in_env_and_only_on_same_repository_jobs(
    workflow: tuple[str, dict[str, Any]],
) -> None:
    name, wf = workflow
    assert [s for s in env_values(wf) if "secrets." in s] == [], f"{name}: secrets outside env:"
    if "pull_request" not in triggers(wf):
        return
    for job_id, job in wf["jobs"].items():
        if "secrets." in repr(job):
            condition = " ".join(str(job.get("if", "")).split())
            assert condition == FORK_CONDITION, f"{name}/{job_id}: secrets reachable from forks"


def test_plan_gives_secrets_only_to_the_same_repository_job() -> None:
    wf = load("plan")
    jobs = wf["jobs"]
    assert [s for s in env_values(wf) if "secrets." in s] == []
    assert "secrets." not in repr(jobs["offline"])
    assert "if" not in jobs["offline"]  # the offline checks run for forks too
    assert "secrets." in repr(jobs["plan"]["env"])
    assert " ".join(jobs["plan"]["if"].split()) == FORK_CONDITION


def secrets_of(node: Any) -> set[str]:
    """The secret names a job (or workflow) refers to; `secrets[...]` and `toJSON(secrets)`,
    which could reach any secret, are refused outright."""
    found = set()
    for expression in EXPRESSION.findall(repr(node)):
        for match in SECRET_REF.finditer(expression):
            assert match["name"], f"secrets used other than as secrets.NAME: {expression!r}"
            found.add(match["name"])
    return found


def test_the_plan_job_gets_only_the_read_only_credential() -> None:
    """Case 12: the plan job installs and runs the pull request's code, so anyone who can
    push a branch controls it; it must hold nothing that writes the registry."""
    jobs = load("plan")["jobs"]
    assert jobs["plan"]["env"] == READ_ONLY_ENV
    assert secrets_of(jobs["plan"]) == {
        v.replace("MLFLOW_", "MLFLOW_PLAN_") for v in MLFLOW_VARIABLES
    }
    assert secrets_of(jobs["offline"]) == set()
    assert "environment" not in jobs["plan"] and "environment" not in jobs["offline"]
    # not even in a comment or a step's env: the file names no write secret at all
    text = (WORKFLOWS / "plan.yml").read_text()
    assert [v for v in WRITE_SECRETS if re.search(rf"secrets\.{v}\b", text)] == []


def test_the_drift_job_reads_with_the_read_only_credential() -> None:
    """A diff never writes: the drift job uses the plan job's credential, not apply's."""
    [job] = load("drift")["jobs"].values()
    assert job["env"] == READ_ONLY_ENV
    assert secrets_of(job) & WRITE_SECRETS == set()
    assert "environment" not in job


def test_the_write_credential_lives_only_in_the_apply_environment() -> None:
    """The apply job enters the `mlflow-registry` environment (its secrets are released only
    to the branches its deployment policy admits: main) and is the only job that names the
    write secrets or any environment."""
    holders = {
        (name, job_id)
        for name in NAMES
        for job_id, job in load(name)["jobs"].items()
        if secrets_of(job) & WRITE_SECRETS
    }
    assert holders == {("apply", "apply")}
    environments = {
        (name, job_id): job["environment"]
        for name in NAMES
        for job_id, job in load(name)["jobs"].items()
        if "environment" in job
    }
    assert environments == {("apply", "apply"): APPLY_ENVIRONMENT}
    job = load("apply")["jobs"]["apply"]
    assert job["env"] == WRITE_ENV
    assert secrets_of(job) == WRITE_SECRETS


def test_regctl_is_driven_only_through_its_commands(workflow: tuple[str, dict[str, Any]]) -> None:
    name, wf = workflow
    for src in runs(wf):
        assert not re.search(r"python3?\s+(-\S*\s+)*-c\b|-m\s+regctl|import\s+regctl", src), src
        for line in src.splitlines():
            words = line.split()
            if words and words[0] == "regctl":
                assert len(words) > 1 and words[1] in COMMANDS, line
            if words and words[0].startswith("python"):
                assert line.strip() == "python -m pip install -e .", line


def test_each_job_installs_regctl_on_python_311_with_a_timeout(
    workflow: tuple[str, dict[str, Any]],
) -> None:
    name, wf = workflow
    for job_id, job in wf["jobs"].items():
        assert isinstance(job["timeout-minutes"], int), (name, job_id)
        setup = step_using(wf, job_id, "actions/setup-python@")
        assert str(setup["with"]["python-version"]) == "3.11"
        assert "python -m pip install -e ." in runs(wf, job_id)


def test_plan_workflow() -> None:
    wf = load("plan")
    assert "regctl validate" in runs(wf, "offline")
    assert "regctl check --format github" in runs(wf, "offline")

    checkout = step_using(wf, "plan", "actions/checkout@")
    assert checkout["with"]["fetch-depth"] == 0  # so --base can read origin/<base>
    [plan_step] = [s for j, s in steps(wf) if j == "plan" and "regctl diff --" in s.get("run", "")]
    assert plan_step["env"] == {"BASE_REF": "${{ github.base_ref }}"}
    assert 'regctl diff --base "origin/$BASE_REF" --format markdown > plan.md' in plan_step["run"]

    script = step_using(wf, "plan", GITHUB_SCRIPT)["with"]["script"]
    assert "<!-- regctl-plan -->" in script
    assert "readFileSync" in script and "'plan.md'" in script
    # one comment, found by its marker and updated on later pushes
    assert "updateComment" in script and "createComment" in script


def test_apply_workflow() -> None:
    wf = load("apply")
    checkout = step_using(wf, "apply", "actions/checkout@")
    assert checkout["with"]["ref"] == "main"  # main's head, not the triggering commit

    sources = runs(wf, "apply")
    record = next(i for i, s in enumerate(sources) if "REGCTL_COMMIT" in s)
    assert "git rev-parse HEAD" in sources[record]
    assert '>> "$GITHUB_ENV"' in sources[record]
    sync = sources.index("regctl sync")
    apply = sources.index("regctl apply --auto-approve")
    assert record < sync < apply


def test_drift_workflow() -> None:
    wf = load("drift")
    [diff_step] = [s for _, s in steps(wf) if "regctl diff --" in s.get("run", "")]
    assert "regctl diff --exit-code --format markdown > drift.md" in diff_step["run"]
    script = step_using(wf, "drift", GITHUB_SCRIPT)["with"]["script"]
    for needle in ("'Registry drift detected'", "'regctl-drift'", "'drift.md'", "'closed'"):
        assert needle in script
    # the steps after the diff run whenever it ran: none of them has a condition
    names = [s.get("name") for _, s in steps(wf)]
    after = list(steps(wf))[names.index("Diff") :]
    assert [s.get("name") for _, s in after if "if" in s] == []
    assert [s.get("name") for _, s in after[1:]] == [
        "Open, update or close the drift issue",
        "Fail on errors or denials",
    ]


# ---- the drift job, executed -------------------------------------------------------------

# A stand-in for `regctl`: prints the given stdout and stderr, exits with the given code.
STUB_REGCTL = """#!/bin/sh
printf '%s\\n' "$*" >> "$STUB_DIR/args"
cat "$STUB_DIR/stdout"
cat "$STUB_DIR/stderr" >&2
exit "$STUB_RC"
"""

# github-script's calling convention (an async function of require, github, context, core),
# with a stand-in GitHub client that records every call and answers from state.json.
GITHUB_SCRIPT_HARNESS = r"""
const fs = require('fs');
const [scriptPath, statePath] = process.argv.slice(2);
const script = fs.readFileSync(scriptPath, 'utf8');
const state = JSON.parse(fs.readFileSync(statePath, 'utf8'));
const calls = [];
const record = (name, result) => async (args) => {
  calls.push([name, args]);
  return result;
};
const issues = {
  listForRepo: () => { throw new Error('listForRepo is called through paginate'); },
  createComment: record('createComment', { data: {} }),
  update: record('update', { data: {} }),
  create: record('create', { data: { number: 99 } }),
  createLabel: record('createLabel', { data: {} }),
  getLabel: async (args) => {
    calls.push(['getLabel', args]);
    if (!state.labelExists) throw Object.assign(new Error('Not Found'), { status: 404 });
    return { data: {} };
  },
};
const github = {
  rest: { issues },
  paginate: async (method, args) => {
    if (method !== issues.listForRepo) throw new Error('unexpected paginate');
    calls.push(['listForRepo', args]);
    return state.open;
  },
};
const context = {
  repo: { owner: 'acme', repo: 'models' },
  serverUrl: 'https://github.com',
  runId: 42,
  sha: '0123456789abcdef0123456789abcdef01234567',
};
const core = { info: (message) => calls.push(['info', message]) };
const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
new AsyncFunction('require', 'github', 'context', 'core', script)(require, github, context, core)
  .then(() => process.stdout.write(JSON.stringify(calls)))
  .catch((error) => {
    console.error(error);
    process.exit(1);
  });
"""

HOSTILE_ERR = "error: manifests/m.yaml:3: name: ```\n<img src=https://evil.example/x.png>\n@octocat"
OPEN_ISSUE = {"number": 5, "title": "Registry drift detected", "labels": [{"name": "regctl-drift"}]}


def drift_step(name: str) -> dict[str, Any]:
    [found] = [s for j, s in steps(load("drift")) if j == "drift" and s.get("name") == name]
    return found


def run_shell(src: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A `run:` step the way the runner runs `shell: bash`."""
    script = cwd / "step.sh"
    script.write_text(src)
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_diff_step(
    tmp_path: Path, rc: int, stdout: str, stderr: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, str], str]:
    stub = tmp_path / "stub"
    (stub / "bin").mkdir(parents=True)
    regctl = stub / "bin" / "regctl"
    regctl.write_text(STUB_REGCTL)
    regctl.chmod(0o755)
    (stub / "stdout").write_text(stdout)
    (stub / "stderr").write_text(stderr)
    work = tmp_path / "work"
    work.mkdir()
    output, summary = work / "github_output", work / "step_summary"
    env = {
        "PATH": f"{stub / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "STUB_DIR": str(stub),
        "STUB_RC": str(rc),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    proc = run_shell(drift_step("Diff")["run"], work, env)
    outputs = (
        dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
        if output.exists()
        else {}
    )
    assert (stub / "args").read_text().split() == ["diff", "--exit-code", "--format", "markdown"]
    return proc, outputs, summary.read_text() if summary.exists() else ""


def run_issue_step(
    work: Path, rc: str, *, open_issues: list[dict[str, Any]], label_exists: bool = True
) -> list[tuple[str, Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the github-script step cannot be executed")
    step = drift_step("Open, update or close the drift issue")
    assert step["env"] == {"DRIFT_RC": "${{ steps.diff.outputs.rc }}"}
    (work / "script.js").write_text(step["with"]["script"])
    (work / "state.json").write_text(json.dumps({"open": open_issues, "labelExists": label_exists}))
    (work / "harness.js").write_text(GITHUB_SCRIPT_HARNESS)
    proc = subprocess.run(
        [node, "harness.js", "script.js", "state.json"],
        cwd=work,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DRIFT_RC": rc},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [tuple(c) for c in json.loads(proc.stdout)]


def run_fail_step(work: Path, rc: str) -> int:
    step = drift_step("Fail on errors or denials")
    assert step["env"] == {"DRIFT_RC": "${{ steps.diff.outputs.rc }}"}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DRIFT_RC": rc}
    return run_shell(step["run"], work, env).returncode


def issue_writes(calls: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [c for c in calls if c[0] in ("create", "update", "createComment")]


def rendered(body: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(body)


@pytest.mark.parametrize(
    ("rc", "title", "fails"),
    [
        (2, "Registry drift detected", 0),
        (3, "Registry drift check: a policy denies the declared state", 3),
        (1, "Registry drift check failed", 1),
        (120, "Registry drift check failed", 1),
    ],
)
def test_drift_reports_every_non_zero_exit_in_the_issue(
    tmp_path: Path, rc: int, title: str, fails: int
) -> None:
    """Case 7: a diff that exits 1, 2 or 3 (or anything but 0) opens the drift issue, says
    which it was, quotes the end of stderr as inert code, and fails the job afterwards for
    anything but drift."""
    plan = "## regctl plan\n\n~ m: alias Production 1 -> 2\n" if rc in (2, 3) else ""
    err = "warning: something\n" + HOSTILE_ERR + "\n" if rc != 2 else ""
    proc, outputs, summary = run_diff_step(tmp_path, rc, plan, err)
    assert proc.returncode == 0, proc.stderr  # the issue step must still run
    assert outputs == {"rc": str(rc)}
    assert err.strip() in proc.stderr  # stderr still reaches the log
    assert (plan in summary) if plan else (summary == "")
    work = tmp_path / "work"

    # no issue yet: one is opened (and the label created)
    calls = run_issue_step(work, outputs["rc"], open_issues=[], label_exists=False)
    [(kind, created)] = issue_writes(calls)
    assert kind == "create"
    assert created["title"] == title and created["labels"] == ["regctl-drift"]
    assert [c[0] for c in calls if c[0] == "createLabel"] == ["createLabel"]
    body = created["body"]
    if rc != 2:
        assert f"exited {rc}" in body
    if plan:
        assert plan.strip() in body
    if err:
        html = rendered(body)
        assert "<img" not in html
        run_url = "https://github.com/acme/models/actions/runs/42"
        assert set(re.findall(r'href="([^"]*)"', html)) == {run_url}
        tail = HOSTILE_ERR.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        code_blocks = re.findall(r"<pre><code[^>]*>(.*?)</code></pre>", html, re.S)
        assert any(tail in block for block in code_blocks), html

    # an open issue: updated in place, title included, nothing else opened
    calls = run_issue_step(work, outputs["rc"], open_issues=[OPEN_ISSUE])
    [(kind, updated)] = issue_writes(calls)
    assert kind == "update"
    assert updated["issue_number"] == 5 and updated["title"] == title
    assert updated["body"].split("Last checked:")[0] == body.split("Last checked:")[0]

    assert run_fail_step(work, outputs["rc"]) == fails


def test_drift_closes_the_issue_on_exit_0(tmp_path: Path) -> None:
    proc, outputs, _ = run_diff_step(tmp_path, 0, "No changes.\n", "")
    assert proc.returncode == 0 and outputs == {"rc": "0"}
    work = tmp_path / "work"
    calls = run_issue_step(work, "0", open_issues=[OPEN_ISSUE, {**OPEN_ISSUE, "number": 9}])
    writes = issue_writes(calls)
    assert [(k, a["issue_number"]) for k, a in writes] == [
        ("createComment", 5),
        ("update", 5),
        ("createComment", 9),
        ("update", 9),
    ]
    assert all(a["state"] == "closed" for k, a in writes if k == "update")
    assert issue_writes(run_issue_step(work, "0", open_issues=[])) == []
    assert run_fail_step(work, "0") == 0


def test_drift_without_an_exit_code_is_a_failure(tmp_path: Path) -> None:
    """A missing or odd `rc` output (the step was changed, the output lost) is an error."""
    tmp_path.joinpath("drift.md").write_text("")
    calls = run_issue_step(tmp_path, "", open_issues=[])
    [(kind, created)] = issue_writes(calls)
    assert kind == "create" and created["title"] == "Registry drift check failed"
    assert run_fail_step(tmp_path, "") == 1
    assert run_fail_step(tmp_path, "2; rm -rf /") == 1


def test_actionlint() -> None:
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (pip install -e '.[dev]' brings it)")
    files = sorted(str(p.relative_to(REPO)) for p in WORKFLOWS.glob("*.yml"))
    assert files
    proc = subprocess.run(
        [actionlint, "-no-color", *files], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
