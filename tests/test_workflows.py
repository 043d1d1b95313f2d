"""The GitHub Actions workflows and the regctl action (SPEC section 7), read as data.

Two sets of workflows are checked, the same rules for both: the ones `regctl init`
scaffolds into a team's repository (`regctl.scaffold`, with the default action reference)
and this repository's own `.github/workflows/`, which must be those templates rendered
with the local action `./`. They pin down what makes them safe and correct: triggers,
least-privilege permissions, the apply concurrency group, third-party actions pinned to
commit SHAs, no expression expanded into shell, secrets only on jobs that forks cannot
reach, the write credential only in the apply job's environment, regctl reached only
through the action (which installs it from its own ref, never `pip install -e .`).
tests/test_workflow_runs.py executes them; actionlint runs on both sets here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from regctl.commands.init import WORKFLOWS as NAMES
from regctl.commands.init import default_action, workflow

from conftest import REPO

OWN = REPO / ".github" / "workflows"
ACTION_FILE = REPO / "action.yml"
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
VERSION_COMMENT = re.compile(r"^\s+# v\d+\.\d+\.\d+$")
FORK_CONDITION = "github.event.pull_request.head.repo.full_name == github.repository"
# Pull-request text an attacker controls; never to be expanded inside a script.
UNTRUSTED = re.compile(
    r"github\.event\.pull_request\.(title|body|head\.ref|head\.label)|github\.head_ref"
)
COMMANDS = ("validate", "sync", "check", "diff", "apply")
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
KINDS = ("scaffold", "own")


def parse(text: str) -> dict[str, Any]:
    data = YAML(typ="safe", pure=True).load(text)
    assert isinstance(data, dict)
    return data


def text_of(kind: str, name: str) -> str:
    if kind == "own":
        return (OWN / f"{name}.yml").read_text(encoding="utf-8")
    return workflow(name, default_action())


def action_of(kind: str) -> str:
    return "./" if kind == "own" else default_action()


def load(name: str, kind: str = "scaffold") -> dict[str, Any]:
    return parse(text_of(kind, name))


def triggers(wf: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.2 (ruamel) reads `on` as a string; a YAML 1.1 reader would give True.
    on = wf.get("on", wf.get(True))
    assert isinstance(on, dict)
    return on


def steps(wf: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_id, job in wf["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def runs(wf: dict[str, Any], job: str | None = None) -> list[str]:
    return [s["run"] for j, s in steps(wf) if "run" in s and job in (None, j)]


def regctl_steps(wf: dict[str, Any], job: str, action: str) -> list[dict[str, Any]]:
    return [s for j, s in steps(wf) if j == job and s.get("uses") == action]


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


def secrets_of(node: Any) -> set[str]:
    """The secret names a job (or workflow) refers to; `secrets[...]` and `toJSON(secrets)`,
    which could reach any secret, are refused outright."""
    found = set()
    for expression in EXPRESSION.findall(repr(node)):
        for match in SECRET_REF.finditer(expression):
            assert match["name"], f"secrets used other than as secrets.NAME: {expression!r}"
            found.add(match["name"])
    return found


@pytest.fixture(scope="module", params=[(k, n) for k in KINDS for n in NAMES])
def wf(request: pytest.FixtureRequest) -> tuple[str, str, dict[str, Any]]:
    kind, name = request.param
    return kind, name, load(name, kind)


@pytest.mark.parametrize("name", NAMES)
def test_this_repository_runs_the_scaffolded_workflows(name: str) -> None:
    """One source: `.github/workflows/` is `regctl init`'s output with the local action."""
    assert text_of("own", name) == workflow(name, "./")


def test_the_shipped_policies_are_the_scaffolded_ones() -> None:
    from regctl.commands.init import scaffold_files

    files = scaffold_files(default_action())
    shipped = sorted(p.name for p in (REPO / "policies").glob("*.yaml"))
    assert shipped == sorted(rel.split("/")[1] for rel in files if rel.startswith("policies/"))
    for name in shipped:
        assert (REPO / "policies" / name).read_text(encoding="utf-8") == files[f"policies/{name}"]
    assert (REPO / "schema" / "regctl.schema.json").read_text(encoding="utf-8") == files[
        "schema/regctl.schema.json"
    ]


def test_triggers() -> None:
    plan, apply, drift = (triggers(load(n)) for n in NAMES)
    assert set(plan) == {"pull_request"}
    assert set(apply) == {"push", "workflow_dispatch"}
    assert apply["push"]["branches"] == ["main"]
    assert set(drift) == {"schedule", "workflow_dispatch"}
    assert [bool(c["cron"].strip()) for c in drift["schedule"]] == [True]


def test_top_level_permissions_are_read_only(wf: tuple[str, str, dict[str, Any]]) -> None:
    kind, name, data = wf
    assert data["permissions"] == {"contents": "read"}, (kind, name)


def test_write_permissions_only_on_the_jobs_that_need_them() -> None:
    expected = {
        "plan": {"offline": None, "plan": {"contents": "read", "pull-requests": "write"}},
        "apply": {"apply": None},
        "drift": {"drift": {"contents": "read", "issues": "write"}},
    }
    for kind in KINDS:
        actual = {
            name: {j: job.get("permissions") for j, job in load(name, kind)["jobs"].items()}
            for name in NAMES
        }
        assert actual == expected, kind


def test_concurrency() -> None:
    # never two applies at once, and never cancel one half way through its writes
    assert load("apply")["concurrency"] == {"group": "regctl-apply", "cancel-in-progress": False}
    assert load("drift")["concurrency"] == {"group": "regctl-drift", "cancel-in-progress": True}
    plan = load("plan")["concurrency"]
    assert "github.event.pull_request.number" in plan["group"]
    assert plan["cancel-in-progress"] is True


def test_third_party_actions_are_pinned_to_a_commit_sha(
    wf: tuple[str, str, dict[str, Any]],
) -> None:
    kind, name, data = wf
    uses = [s["uses"] for _, s in steps(data) if "uses" in s]
    others = [u for u in uses if u != action_of(kind)]
    assert others, name
    assert [u for u in others if not SHA_PIN.match(u)] == []
    # the comment naming the release is what a reviewer (and Dependabot) reads
    lines = text_of(kind, name).splitlines()
    matches = [m for m in map(USES_LINE.match, lines) if m and m["ref"] != action_of(kind)]
    assert len(matches) == len(others)
    assert [m.group(0) for m in matches if not VERSION_COMMENT.match(m["rest"])] == []


def test_no_expression_is_expanded_inside_scripts(wf: tuple[str, str, dict[str, Any]]) -> None:
    # Everything reaches shell through `env:` or the action's inputs; an expression in a
    # script is pasted into its source before it runs, which is how pull-request text
    # gets executed.
    kind, name, data = wf
    found = runs(data)
    assert [src for src in found if "${{" in src or UNTRUSTED.search(src)] == []
    inputs = [str(v) for _, s in steps(data) for v in (s.get("with") or {}).values()]
    assert [v for v in inputs if UNTRUSTED.search(v)] == []


def test_secrets_only_in_env_and_only_on_same_repository_jobs(
    wf: tuple[str, str, dict[str, Any]],
) -> None:
    kind, name, data = wf
    assert [s for s in env_values(data) if "secrets." in s] == [], f"{name}: secrets outside env:"
    if "pull_request" not in triggers(data):
        return
    for job_id, job in data["jobs"].items():
        if "secrets." in repr(job):
            condition = " ".join(str(job.get("if", "")).split())
            assert condition == FORK_CONDITION, f"{name}/{job_id}: secrets reachable from forks"


def test_the_plan_job_gets_only_the_read_only_credential() -> None:
    """The plan job runs the pull request's manifests (and, here, its code), so anyone
    who can push a branch controls it; it must hold nothing that writes the registry."""
    for kind in KINDS:
        jobs = load("plan", kind)["jobs"]
        assert "if" not in jobs["offline"]  # the offline checks run for forks too
        assert jobs["plan"]["env"] == READ_ONLY_ENV
        assert secrets_of(jobs["plan"]) == {
            v.replace("MLFLOW_", "MLFLOW_PLAN_") for v in MLFLOW_VARIABLES
        }
        assert secrets_of(jobs["offline"]) == set()
        assert "environment" not in jobs["plan"] and "environment" not in jobs["offline"]
        text = text_of(kind, "plan")
        assert [v for v in WRITE_SECRETS if re.search(rf"secrets\.{v}\b", text)] == []


def test_the_drift_job_reads_with_the_read_only_credential() -> None:
    [job] = load("drift")["jobs"].values()
    assert job["env"] == READ_ONLY_ENV
    assert secrets_of(job) & WRITE_SECRETS == set()
    assert "environment" not in job


def test_the_write_credential_lives_only_in_the_apply_environment() -> None:
    for kind in KINDS:
        holders = {
            (name, job_id)
            for name in NAMES
            for job_id, job in load(name, kind)["jobs"].items()
            if secrets_of(job) & WRITE_SECRETS
        }
        assert holders == {("apply", "apply")}
        environments = {
            (name, job_id): job["environment"]
            for name in NAMES
            for job_id, job in load(name, kind)["jobs"].items()
            if "environment" in job
        }
        assert environments == {("apply", "apply"): APPLY_ENVIRONMENT}
        job = load("apply", kind)["jobs"]["apply"]
        assert job["env"] == WRITE_ENV
        assert secrets_of(job) == WRITE_SECRETS


def test_regctl_is_reached_only_through_the_action(wf: tuple[str, str, dict[str, Any]]) -> None:
    """No job installs regctl itself (a team's repository is not regctl's source tree),
    and every regctl command runs through the action, with a timeout on every job."""
    kind, name, data = wf
    text = text_of(kind, name)
    assert "pip install" not in text and "-e ." not in text
    assert not [src for src in runs(data) if re.search(r"\bregctl\b|\bpython", src)]
    for job_id, job in data["jobs"].items():
        assert isinstance(job["timeout-minutes"], int), (name, job_id)
        used = regctl_steps(data, job_id, action_of(kind))
        assert used, (name, job_id)
        assert {s["with"]["command"] for s in used} <= set(COMMANDS)


def test_plan_workflow() -> None:
    data = load("plan")
    action = default_action()
    assert [s["with"]["command"] for s in regctl_steps(data, "offline", action)] == [
        "validate",
        "check",
    ]
    checkout = next(s for j, s in steps(data) if j == "plan" and "checkout" in s.get("uses", ""))
    assert checkout["with"]["fetch-depth"] == 0  # so --base can read origin/<base>
    plan, check = regctl_steps(data, "plan", action)
    assert plan["with"] == {
        "command": "diff",
        "args": "--base origin/${{ github.base_ref }}",
        "comment": True,
    }
    assert check["with"]["command"] == "check"


def test_apply_workflow() -> None:
    data = load("apply")
    checkout = next(s for _, s in steps(data) if "checkout" in s.get("uses", ""))
    assert checkout["with"]["ref"] == "main"  # main's head, not the triggering commit
    names = [s.get("name") for _, s in steps(data)]
    record = names.index("Record the commit being applied")
    source = runs(data)[1]
    assert "git rev-parse HEAD" in source and '>> "$GITHUB_ENV"' in source
    [diff, apply] = regctl_steps(data, "apply", default_action())
    assert diff["with"] == {"command": "diff"}
    assert apply["with"] == {"command": "apply", "args": "--auto-approve"}
    assert record < names.index("Apply")


def test_drift_workflow() -> None:
    [step] = regctl_steps(load("drift"), "drift", default_action())
    assert step["with"] == {"command": "diff", "args": "--exit-code", "drift-issue": True}


# ---- the action ------------------------------------------------------------------------


def action() -> dict[str, Any]:
    return parse(ACTION_FILE.read_text(encoding="utf-8"))


def test_the_action_is_composite_and_installs_from_its_own_ref() -> None:
    data = action()
    assert data["runs"]["using"] == "composite"
    assert set(data["inputs"]) == {
        "command",
        "args",
        "python-version",
        "version",
        "comment",
        "comment-marker",
        "drift-issue",
        "fail",
        "working-directory",
        "github-token",
    }
    assert set(data["outputs"]) == {"exit-code", "markdown"}
    install = next(s for s in data["runs"]["steps"] if s.get("id") == "install")
    assert install["env"]["ACTION_PATH"] == "${{ github.action_path }}"
    assert 'python -m pip install --disable-pip-version-check "$spec"' in install["run"]
    assert "-e " not in install["run"]


def test_the_action_passes_inputs_only_through_env() -> None:
    for step in action()["runs"]["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], step.get("name")
            assert step["shell"] == "bash"
        else:
            assert SHA_PIN.match(step["uses"]), step["uses"]


def test_actionlint(tmp_path: Path) -> None:
    """Both sets: this repository's (which resolves `./` to action.yml and checks the
    inputs each step gives) and a scaffolded repository's."""
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (pip install -e '.[dev]' brings it)")
    team = tmp_path / "team" / ".github" / "workflows"
    team.mkdir(parents=True)
    for name in NAMES:
        (team / f"{name}.yml").write_text(workflow(name, default_action()), encoding="utf-8")
    for root in (REPO, tmp_path / "team"):
        files = sorted(str(p.relative_to(root)) for p in (root / ".github/workflows").glob("*.yml"))
        assert len(files) == len(NAMES)
        proc = subprocess.run(
            [actionlint, "-no-color", *files], cwd=root, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
