"""Apply's promises: pins under races, lost responses, confirmation, saved plans."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Backend, Recorder, empty_sqlite, write_manifest

CLI = Callable[..., tuple[int, str, str]]


def args(b: Backend, *rest: str) -> list[str]:
    return ["--tracking-uri", b.uri, "--repo", str(b.repo), *rest]


def simple(
    b: Backend, uniq: str, *, pin: int | None = None, aliases: str = "[Production]"
) -> tuple[str, dict[str, str]]:
    exp = f"{uniq}-exp"
    runs = b.make_runs(exp, ["a", "b"])
    name = f"{uniq}-m"
    pin_line = f"    version: {pin}\n" if pin else ""
    write_manifest(
        b.repo,
        "m",
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {name}\nexperiment: {exp}\n"
        f"versions:\n  - run: a\n{pin_line}    aliases: {aliases}\n",
    )
    return name, runs


def test_pin_race_undoes_the_version_and_stops(
    backend: Backend, uniq: str, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regctl.adapters.mlflow import registry as mlflow_store

    name, runs = simple(backend, uniq, pin=1)
    original = mlflow_store.MlflowRegistry.create_version

    def racing(self: Any, model: str, source: str, run_id: str, *a: Any) -> int:
        # another writer registers a version of the model just before we do
        original(self, model, f"runs:/{runs['b']}", runs["b"], None, {})
        return original(self, model, source, run_id, *a)

    monkeypatch.setattr(mlflow_store.MlflowRegistry, "create_version", racing)
    code, out, err = run_cli(*args(backend, "apply", "--auto-approve"))
    assert code == 1
    assert "MLflow assigned version 2" in err and "pinned to 1" in err
    assert "version 2 was deleted again" in err
    assert "Apply complete" not in out
    versions = backend.client.search_model_versions(f"name = '{name}'")
    assert [(int(v.version), v.run_id) for v in versions] == [(1, runs["b"])]
    assert "Production" not in backend.client.get_registered_model(name).aliases


def test_lost_create_response_is_adopted_not_repeated(
    backend: Backend, uniq: str, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regctl.adapters.mlflow import registry as mlflow_store
    from regctl.errors import Unreachable

    name, _runs = simple(backend, uniq)
    original = mlflow_store.MlflowRegistry.create_version

    def lost(self: Any, *a: Any) -> int:
        original(self, *a)  # the server commits...
        raise Unreachable("connection reset")  # ...and the response never arrives

    monkeypatch.setattr(mlflow_store.MlflowRegistry, "create_version", lost)
    code, _out, err = run_cli(*args(backend, "apply", "--auto-approve"))
    assert code == 0, err
    versions = backend.client.search_model_versions(f"name = '{name}'")
    assert [int(v.version) for v in versions] == [1]
    aliases = backend.client.get_registered_model(name).aliases
    assert {k: int(v) for k, v in aliases.items()} == {"Production": 1}


def test_failed_create_that_did_not_commit_is_reported(
    backend: Backend, uniq: str, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regctl.adapters.mlflow import registry as mlflow_store
    from regctl.errors import RegistryError

    name, _ = simple(backend, uniq)

    def refused(self: Any, *a: Any) -> int:
        raise RegistryError("create model version failed: INVALID_PARAMETER_VALUE", status=400)

    monkeypatch.setattr(mlflow_store.MlflowRegistry, "create_version", refused)
    code, out, err = run_cli(*args(backend, "apply", "--auto-approve"))
    assert code == 1
    assert "create model version failed" in err
    assert "applied 1 of 3 changes" in err  # the model was written, the version not
    assert "Apply complete" not in out
    assert backend.client.search_model_versions(f"name = '{name}'") == []


def test_apply_without_terminal_needs_auto_approve(
    backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    simple(backend, uniq)
    http_log.clear()
    code, _, err = run_cli(*args(backend, "apply"))
    assert code == 1
    assert "--auto-approve" in err
    assert http_log.writes() == []


def test_saved_plan_applies_and_refuses_when_the_registry_changed(
    backend: Backend, uniq: str, run_cli: CLI, tmp_path: Path, http_log: Recorder
) -> None:
    name, _ = simple(backend, uniq)
    plan = tmp_path / "plan.json"
    assert run_cli(*args(backend, "diff", "--out", str(plan)))[0] == 0
    code, out, err = run_cli(*args(backend, "apply", "--auto-approve", str(plan)))
    assert code == 0, err
    # the registry changed since: the same plan is refused with no write
    backend.client.set_registered_model_alias(name, "Hand", "1")
    http_log.clear()
    code, _out, err = run_cli(*args(backend, "apply", "--auto-approve", str(plan)))
    assert code == 1
    assert "re-planning now does not give this plan's changes" in err
    assert http_log.writes() == []


def test_prune_deletes_undeclared_versions_only_when_allowed(tmp_path: Path, run_cli: CLI) -> None:
    b = Backend("sqlite", empty_sqlite(tmp_path / "p.db"), tmp_path / "repo")
    (b.repo / "manifests").mkdir(parents=True)
    exp = "exp"
    runs = b.make_runs(exp, ["a", "b"])
    c = b.client
    c.create_registered_model("m")
    c.create_model_version("m", f"runs:/{runs['b']}", run_id=runs["b"])
    c.set_registered_model_alias("m", "Old", "1")
    head = "apiVersion: regctl/v1\nkind: RegisteredModel\nname: m\nexperiment: exp\n"
    write_manifest(b.repo, "m", head + "versions:\n  - run: a\n")
    assert run_cli(*args(b, "apply", "--auto-approve", "--prune"))[0] == 0
    assert len(c.search_model_versions("name = 'm'")) == 2  # prune: true not set
    write_manifest(b.repo, "m", head + "prune: true\nversions:\n  - run: a\n")
    _code, out, _err = run_cli(*args(b, "diff", "--prune"))
    assert "- version 1 (run" in out
    assert run_cli(*args(b, "apply", "--auto-approve", "--prune"))[0] == 0
    assert [int(v.version) for v in c.search_model_versions("name = 'm'")] == [2]


def test_prune_with_no_manifests_is_refused(tmp_path: Path, run_cli: CLI) -> None:
    b = Backend("sqlite", empty_sqlite(tmp_path / "p.db"), tmp_path / "repo")
    (b.repo / "manifests").mkdir(parents=True)
    code, _, err = run_cli(*args(b, "apply", "--auto-approve", "--prune"))
    assert code == 1
    assert "empty manifest set" in err
