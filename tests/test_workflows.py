"""The GitHub Actions workflows (SPEC section 7), read as data.

They cannot run here, so these tests pin down what makes them safe and correct: triggers,
least-privilege permissions, the apply concurrency group, actions pinned to commit SHAs,
no expression expanded into shell or JavaScript source, secrets only on jobs that forks
cannot reach, and regctl driven only through its commands. actionlint runs when present.
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


@pytest.mark.parametrize("name", ["apply", "drift"])
def test_secrets_reach_the_server_jobs_through_env(name: str) -> None:
    wf = load(name)
    assert [s for s in env_values(wf) if "secrets." in s] == []
    for job in wf["jobs"].values():
        assert job["env"]["MLFLOW_TRACKING_URI"] == "${{ secrets.MLFLOW_TRACKING_URI }}"
        assert job["env"]["MLFLOW_TRACKING_TOKEN"] == "${{ secrets.MLFLOW_TRACKING_TOKEN }}"


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
