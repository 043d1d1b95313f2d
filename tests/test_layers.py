"""The import contracts check modules nobody named (issue 14, acceptance 2).

Each test copies the package and the import-linter configuration into a temporary folder,
adds one new module, and runs `lint-imports` on the copy: a module that imports mlflow
(or git) outside its adapter breaks a contract without anyone listing it; a new module
that imports neither keeps every contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def lint_copy(tmp_path: Path, name: str, body: str) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on a copy of the package with module `regctl.<name>` added."""
    dest = tmp_path / "controller"
    shutil.copytree(
        REPO / "controller" / "regctl",
        dest / "regctl",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (dest / "regctl" / f"{name.replace('.', '/')}.py").write_text(body, encoding="utf-8")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(dest)}
    linter = Path(sys.executable).with_name("lint-imports")
    command = [str(linter)] if linter.exists() else ["lint-imports"]
    return subprocess.run(
        [*command, "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("body", "contract"),
    [
        ("import mlflow\n", "Only adapters.mlflow imports mlflow BROKEN"),
        ("from mlflow.entities import Param\n", "Only adapters.mlflow imports mlflow BROKEN"),
        (
            "def f() -> None:\n    import requests  # noqa: F401\n",
            "Only adapters.mlflow imports mlflow BROKEN",
        ),
        ("import git\n", "Only adapters.git imports git BROKEN"),
    ],
)
def test_a_new_module_importing_an_adapter_library_breaks_a_contract(
    tmp_path: Path, body: str, contract: str
) -> None:
    done = lint_copy(tmp_path, "newcomer", body)
    assert done.returncode != 0, done.stdout + done.stderr
    assert contract in done.stdout, done.stdout + done.stderr
    assert "regctl.newcomer" in done.stdout  # the report names the new module


def test_a_new_module_importing_neither_keeps_every_contract(tmp_path: Path) -> None:
    done = lint_copy(tmp_path, "newcomer", "from regctl.errors import RegctlError\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout


@pytest.mark.parametrize(
    ("name", "body", "contract"),
    [
        ("core.newcomer", "from regctl.engine import apply\n", "core and policy are pure"),
        ("policy.newcomer", "from regctl.config import Settings\n", "core and policy are pure"),
        ("core.newcomer", "from regctl.adapters import manifests\n", "Layers"),
        ("engine.newcomer", "from regctl.adapters.mlflow import registry\n", "Layers"),
    ],
)
def test_a_new_module_in_a_folder_is_held_to_its_layer(
    tmp_path: Path, name: str, body: str, contract: str
) -> None:
    done = lint_copy(tmp_path, name, body)
    assert done.returncode != 0, done.stdout + done.stderr
    broken = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), done.stdout
    assert f"regctl.{name}" in done.stdout
