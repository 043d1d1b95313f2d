"""Golden cases for the pure planning core and the policy engine: no server, no git.

Each folder under tests/cases/diff/ is one diff case (resolvelib's `inputs/` cases are
the model):

- `manifests/`: the desired state, as a repository holds it;
- `observed.json`: the registry as regctl observes it (models with their versions,
  aliases, tags; experiments; runs by experiment and name);
- `options.json` (optional): `prune`, `max_delete_share`;
- `plan.txt` and `plan.json`: the plan `regctl diff` prints, as text and JSON; or
  `error.txt`: the problems when the desired state cannot be reached.

Each folder under tests/cases/policy/ is one policy case: `policies/` as a repository
holds them, `subjects.json` (`today`, the `subjects` to judge, the `incumbents` that
`compare_to` judges against), and the expected `report.txt` and `report.json` (every
result, verbose), or `error.txt` when the policies are refused.

`REGCTL_UPDATE_GOLDEN=1 python -m pytest tests/test_core_cases.py` writes the expected
files from the current code; review the diff of the golden files before committing them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest

from regctl.adapters.manifests import load_manifests
from regctl.core.diff import diff
from regctl.core.model import ObservedModel, ObservedState, ObservedVersion, RunRef
from regctl.errors import InputError, PlanError
from regctl.policy.evaluation import evaluate
from regctl.policy.loading import load_policies
from regctl.policy.values import Subject
from regctl.render.plan import render_json, render_text
from regctl.render.policy import render_report

CASES = Path(__file__).parent / "cases" / "diff"
POLICY_CASES = Path(__file__).parent / "cases" / "policy"
UPDATE = os.environ.get("REGCTL_UPDATE_GOLDEN") == "1"
TARGET = "golden://registry"


def observed_from_json(data: dict[str, Any]) -> ObservedState:
    """The observation a case describes; absent fields take the registry's empty values."""
    models = {}
    for name, m in data.get("models", {}).items():
        versions = {
            int(n): ObservedVersion(
                version=int(n),
                run_id=v.get("run_id", ""),
                source=v.get("source", ""),
                description=v.get("description", ""),
                tags=v.get("tags", {}),
                status=v.get("status", "READY"),
            )
            for n, v in m.get("versions", {}).items()
        }
        models[name] = ObservedModel(
            name=name,
            description=m.get("description", ""),
            tags=m.get("tags", {}),
            aliases={a: int(n) for a, n in m.get("aliases", {}).items()},
            versions=versions,
        )
    runs: dict[tuple[str, str], tuple[RunRef, ...]] = {}
    by_id: dict[str, RunRef] = {}
    for r in data.get("runs", []):
        ref = RunRef(
            run_id=r["run_id"],
            name=r["name"],
            experiment_id=r["experiment_id"],
            status=r.get("status", "FINISHED"),
            artifact_uri=r.get("artifact_uri", ""),
        )
        runs[(r["experiment"], r["name"])] = (*runs.get((r["experiment"], r["name"]), ()), ref)
        by_id[ref.run_id] = ref
    return ObservedState(
        models=models,
        experiments=data.get("experiments", {}),
        runs=runs,
        runs_by_id=by_id,
        ledger=data.get("ledger", {}),
    )


def outcome(case: Path) -> dict[str, str]:
    """What the core makes of a case: file name -> expected content."""
    desired = load_manifests(case, check_paths=False)
    observed = observed_from_json(json.loads((case / "observed.json").read_text("utf-8")))
    options_file = case / "options.json"
    options = json.loads(options_file.read_text("utf-8")) if options_file.exists() else {}
    try:
        plan = diff(desired, observed, target=TARGET, **options)
    except PlanError as exc:
        return {"error.txt": "\n".join(str(p) for p in exc.problems) + "\n"}
    return {"plan.txt": render_text(plan), "plan.json": render_json(plan)}


def subject_from_json(s: dict[str, Any]) -> Subject:
    return Subject(
        model=s["model"],
        run=s["run"],
        run_id=s.get("run_id"),
        version=s.get("version"),
        aliases=tuple(s.get("aliases", ())),
        description=s.get("description"),
        params=s.get("params"),
        metrics=s.get("metrics"),
        source=s.get("source", "mlflow"),
        location=s.get("location", f"manifests/{s['model']}.yaml:5"),
        digest=s.get("digest"),
        in_experiment=s.get("in_experiment", True),
    )


def policy_outcome(case: Path) -> dict[str, str]:
    """What the policy engine makes of a case: file name -> expected content."""
    data = json.loads((case / "subjects.json").read_text("utf-8"))
    try:
        policies = load_policies(case)
    except InputError as exc:
        return {"error.txt": "\n".join(str(p) for p in exc.problems) + "\n"}
    incumbents = {
        (i["model"], i["alias"]): subject_from_json(i) for i in data.get("incumbents", [])
    }
    report = evaluate(
        policies,
        [subject_from_json(s) for s in data["subjects"]],
        incumbents,
        dt.date.fromisoformat(data["today"]),
    )
    return {
        "report.txt": render_report(report, "text", verbose=True),
        "report.json": render_report(report, "json"),
    }


def check_golden(folder: Path, got: dict[str, str], expected_names: set[str]) -> None:
    case = folder.name
    if UPDATE:
        for name in expected_names - set(got):
            (folder / name).unlink(missing_ok=True)
        for name, text in got.items():
            (folder / name).write_text(text, encoding="utf-8")
    present = {n for n in expected_names if (folder / n).exists()}
    assert present == set(got), f"{case}: expected files {sorted(present)}, got {sorted(got)}"
    for name, text in got.items():
        assert text == (folder / name).read_text("utf-8"), f"{case}/{name} differs"


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_golden_case(case: str) -> None:
    folder = CASES / case
    check_golden(folder, outcome(folder), {"plan.txt", "plan.json", "error.txt"})


@pytest.mark.parametrize("case", sorted(p.name for p in POLICY_CASES.iterdir() if p.is_dir()))
def test_golden_policy_case(case: str) -> None:
    folder = POLICY_CASES / case
    check_golden(folder, policy_outcome(folder), {"report.txt", "report.json", "error.txt"})


def test_every_case_folder_is_complete() -> None:
    """A case without its observation or its manifests would test nothing."""
    for folder in CASES.iterdir():
        assert (folder / "observed.json").is_file(), folder
        assert list((folder / "manifests").glob("*.yaml")), folder
    for folder in POLICY_CASES.iterdir():
        assert (folder / "subjects.json").is_file(), folder
        assert list((folder / "policies").glob("*.yaml")), folder
