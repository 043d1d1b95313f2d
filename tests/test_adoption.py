"""A team adopts regctl from a non-editable install (issue 15, acceptance 1).

The package is built as a wheel and installed into a folder of its own (`pip install
--target`, which puts it ahead of this checkout's editable install on PYTHONPATH, and
its `regctl` script in `bin/`), then used in an empty folder outside the checkout:
`regctl init team`, `git init`, `regctl validate`; `init` again exits 1 and changes
nothing; the scaffolded workflows pass actionlint, use the action and install nothing
themselves. The action's own install step runs for real too: it builds regctl from the
action's folder (this checkout), non-editable. `REGCTL_WHEEL` names a wheel built
beforehand (`python -m pip wheel --no-deps -w dist .`); without it the test builds one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import REPO

PACKAGE_DATA = (
    "regctl/scaffold/policies/lgbm.yaml",
    "regctl/scaffold/policies/hmm.yaml",
    "regctl/scaffold/policies/registry.yaml",
    "regctl/scaffold/workflows/plan.yml",
    "regctl/scaffold/workflows/apply.yml",
    "regctl/scaffold/workflows/drift.yml",
    "regctl/scaffold/README.md.txt",
    "regctl/scaffold/gitignore.txt",
    "regctl/py.typed",
)


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("REGCTL_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    pip("wheel", "--no-deps", "-w", str(out), str(REPO))
    [built] = out.glob("regctl-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip("install", "--no-deps", "--target", str(target), str(wheel))
    return target


def env_for(target: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GITHUB_"))}
    path = os.pathsep.join([str(target / "bin"), clean.get("PATH", "")])
    return {**clean, "PYTHONPATH": str(target), "PATH": path}


def run(target: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=cwd, env=env_for(target), capture_output=True, text=True, timeout=300
    )


def files_under(root: Path) -> Iterator[tuple[str, bytes]]:
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".git" not in p.relative_to(root).parts:
            yield p.relative_to(root).as_posix(), p.read_bytes()


def test_the_wheel_carries_the_scaffold_and_no_source_tree(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [n for n in PACKAGE_DATA if n not in names] == []
    assert not [n for n in names if n.startswith(("tests/", "controller/", "benchmarks/"))]


def test_a_team_adopts_regctl_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    where = run(
        installed, sys.executable, "-c", "import regctl; print(regctl.__file__)", cwd=tmp_path
    )
    assert where.stdout.strip().startswith(str(installed)), where.stdout + where.stderr
    exe = installed / "bin" / "regctl"
    assert exe.exists()

    first = run(installed, str(exe), "init", "team", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    team = tmp_path / "team"
    assert subprocess.run(["git", "init", "-q"], cwd=team, check=False).returncode == 0
    valid = run(installed, str(exe), "validate", cwd=team)
    assert valid.returncode == 0, valid.stderr

    before = list(files_under(team))
    again = run(installed, str(exe), "init", "team", cwd=tmp_path)
    assert again.returncode == 1 and "nothing was written" in again.stderr
    assert list(files_under(team)) == before

    workflows = sorted((team / ".github" / "workflows").glob("*.yml"))
    assert [p.name for p in workflows] == ["apply.yml", "drift.yml", "plan.yml"]
    for path in workflows:
        text = path.read_text(encoding="utf-8")
        assert "pip install" not in text, path.name
        data = YAML(typ="safe", pure=True).load(text)
        uses = [s.get("uses", "") for job in data["jobs"].values() for s in job["steps"]]
        assert any(u.startswith("regctl/regctl@v") for u in uses), path.name
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (pip install -e '.[dev]' brings it)")
    lint = subprocess.run(
        [actionlint, "-no-color", *(str(p.relative_to(team)) for p in workflows)],
        cwd=team,
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_action_installs_regctl_from_its_own_folder(tmp_path: Path) -> None:
    """The action's install step, executed: with no `version` it builds and installs the
    action's folder (a non-editable install), writes REGCTL_ACTION_INSTALLED to
    GITHUB_ENV and prints the version, and a second use in the same job installs nothing.
    It runs in a virtual environment of its own (setup-python's role), so the test's
    Python keeps its own regctl; `--no-deps` there, with click (which `regctl --version`
    needs) installed first, keeps it to the one package under test."""
    action = YAML(typ="safe", pure=True).load((REPO / "action.yml").read_text())
    [step] = [s for s in action["runs"]["steps"] if s.get("id") == "install"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "-q", "--disable-pip-version-check", "install", "click>=8.1.7"],
        check=True,
        timeout=300,
    )
    script = tmp_path / "install.sh"
    script.write_text(step["run"])
    github_env = tmp_path / "github_env"
    github_env.write_text("")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GITHUB_"))}
    clean.pop("PYTHONPATH", None)
    env = {
        **clean,
        "PATH": os.pathsep.join([str(venv / "bin"), clean.get("PATH", "")]),
        "VIRTUAL_ENV": str(venv),
        "REGCTL_VERSION": "",
        "ACTION_PATH": str(REPO),
        "GITHUB_ENV": str(github_env),
        "PIP_NO_DEPS": "1",
    }

    def install(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    proc = install({})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "regctl, version" in proc.stdout
    assert github_env.read_text() == f"REGCTL_ACTION_INSTALLED={REPO}\n"
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "regctl" / "scaffold" / "policies" / "lgbm.yaml").exists()
    assert not list(site.glob("__editable__*"))
    second = install({"REGCTL_ACTION_INSTALLED": str(REPO)})
    assert second.returncode == 0 and "already installed" in second.stdout
