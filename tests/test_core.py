"""End-to-end core loop against a real MLflow server and the embedded sqlite:/// store."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regctl.adapters.mlflow.registry import MlflowRegistry
from regctl.core.model import is_lease_model
from regctl.engine.lease import acquire

from conftest import REPO, WRITE_METHODS, Backend, Recorder, write_manifest

CLI = Callable[..., tuple[int, str, str]]


class WriteCounter:
    """Wraps the adapter so tests on sqlite:/// count writes too (one call = one write)."""

    WRITES = WRITE_METHODS

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lease: list[str] = []


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> WriteCounter:
    from regctl import config

    counter = WriteCounter()
    original = config.open_registry

    def open_counted(settings: Any) -> Any:
        reg = original(settings)
        for name in WriteCounter.WRITES:
            fn = getattr(reg, name)

            def wrapped(*a: Any, _fn: Any = fn, _name: str = name, **k: Any) -> Any:
                # the apply lease is a registered model too; it is counted apart
                lease = a and isinstance(a[0], str) and is_lease_model(a[0])
                target = counter.lease if lease else counter.calls
                target.append(_name)
                return _fn(*a, **k)

            setattr(reg, name, wrapped)
        return reg

    monkeypatch.setattr(config, "open_registry", open_counted)
    return counter


def scenario(backend: Backend, uniq: str) -> dict[str, dict[str, str]]:
    """5 models, 12 versions, 6 aliases, with tags and descriptions."""
    exp = f"{uniq}-exp"
    runs = backend.make_runs(exp, [f"run{i}" for i in range(12)])
    layout = {0: 3, 1: 3, 2: 2, 3: 2, 4: 2}
    k = 0
    for m, count in layout.items():
        entries = []
        for j in range(count):
            aliases = []
            if j == count - 1:
                aliases.append("Production")
            if m in (0,) and j == 0:
                aliases.append("Staging")
            entries.append(
                f"  - run: run{k}\n    description: version {j} of model {m}\n"
                f"    aliases: [{', '.join(aliases)}]\n"
            )
            k += 1
        write_manifest(
            backend.repo,
            f"{uniq}-m{m}",
            f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {uniq}-m{m}\n"
            f"description: Model {m}.\nexperiment: {exp}\n"
            f"tags: {{owner: team{m}, tier: gold}}\nversions:\n" + "".join(entries),
        )
    return {"runs": runs}


def cli_args(backend: Backend, *args: str) -> list[str]:
    return ["--tracking-uri", backend.uri, "--repo", str(backend.repo), *args]


def test_apply_then_diff_is_empty_and_second_apply_writes_nothing(
    backend: Backend, uniq: str, run_cli: CLI, writes: WriteCounter, http_log: Recorder
) -> None:
    scenario(backend, uniq)
    code, out, err = run_cli(*cli_args(backend, "diff", "--exit-code"))
    assert code == 2, err
    assert "Plan: 23 to add" in out  # 5 models + 12 versions + 6 aliases
    code, out, err = run_cli(*cli_args(backend, "apply", "--auto-approve"))
    assert code == 0, err
    assert "Verified: the registry matches the manifests." in out
    first_writes = len(writes.calls)
    # 5 models, 12 versions, 6 aliases (5 Production + 1 Staging)
    assert writes.calls.count("create_model") == 5
    assert writes.calls.count("create_version") == 12
    assert writes.calls.count("set_alias") == 6
    assert first_writes == 23
    # the lease: its generation created and released; the previous one (if any) deleted
    assert [w for w in writes.lease if w != "delete_model"] == ["create_model", "set_model_tag"]
    assert writes.lease.count("delete_model") <= 1

    code, out, err = run_cli(*cli_args(backend, "diff", "--exit-code"))
    assert (code, err) == (0, "")
    assert "No changes." in out

    writes.calls.clear()
    writes.lease.clear()
    http_log.clear()
    code, out, err = run_cli(*cli_args(backend, "apply", "--auto-approve"))
    assert code == 0, err
    assert writes.calls == writes.lease == []  # nothing to do: not even the lease
    assert http_log.writes() == []
    # nor without --auto-approve: an empty plan asks nothing
    http_log.clear()
    code, out, err = run_cli(*cli_args(backend, "apply"))
    assert code == 0, err
    assert "No changes." in out
    assert writes.calls == writes.lease == []
    assert http_log.writes() == []

    c = backend.client
    for m in range(5):
        rm = c.get_registered_model(f"{uniq}-m{m}")
        assert rm.description == f"Model {m}."
        assert rm.tags["owner"] == f"team{m}"
        assert rm.tags["regctl.managed"] == "true"
    rm0 = c.get_registered_model(f"{uniq}-m0")
    assert {a: int(v) for a, v in rm0.aliases.items()} == {"Production": 3, "Staging": 1}
    mv = c.get_model_version(f"{uniq}-m0", "2")
    assert mv.description == "version 1 of model 0"


def test_server_write_requests_counted_over_http(
    server_backend: Backend, uniq: str, run_cli: CLI, http_log: Recorder
) -> None:
    scenario(server_backend, uniq)
    acquire(MlflowRegistry(server_backend.uri), "a test", "", timeout=60).release()
    http_log.clear()
    code, _, err = run_cli(*cli_args(server_backend, "apply", "--auto-approve"))
    assert code == 0, err
    posts = [p for m, p in http_log.writes()]
    # 5 models + the apply lease: its generation created, the released one before it
    # deleted, and its own marked released at the end
    assert sum(p.endswith("/registered-models/create") for p in posts) == 5 + 1
    assert sum(p.endswith("/registered-models/delete") for p in posts) == 1
    assert sum(p.endswith("/registered-models/set-tag") for p in posts) == 1
    assert sum(p.endswith("/model-versions/create") for p in posts) == 12
    assert sum(p.endswith("/registered-models/alias") for p in posts) == 6
    assert len(posts) == 23 + 3, posts


def test_drift_is_shown_and_repaired(backend: Backend, uniq: str, run_cli: CLI) -> None:
    scenario(backend, uniq)
    assert run_cli(*cli_args(backend, "apply", "--auto-approve"))[0] == 0
    c = backend.client
    m0, m1, m2 = f"{uniq}-m0", f"{uniq}-m1", f"{uniq}-m2"
    c.set_registered_model_alias(m0, "Production", "1")  # alias moved
    c.set_registered_model_alias(m1, "Canary", "1")  # undeclared alias
    c.update_registered_model(m1, description="edited by hand")  # description edited
    c.set_registered_model_tag(m2, "owner", "someone-else")  # declared tag changed
    c.set_registered_model_tag(m2, "extra", "kept")  # undeclared tag: left alone
    c.delete_model_version(f"{uniq}-m3", "1")  # version deleted

    code, out, err = run_cli(*cli_args(backend, "diff", "--exit-code"))
    assert code == 2, err
    assert "~ alias Production: version 1 -> 3" in out
    assert "- alias Canary (on version 1)" in out
    assert '~ description: "edited by hand" -> "Model 1."' in out
    assert '~ tag owner: "someone-else" -> "team2"' in out
    assert "extra" not in out
    assert "+ version 3 from run run8" in out  # registered again under the next number

    code, out, err = run_cli(*cli_args(backend, "apply", "--auto-approve"))
    assert code == 0, err
    assert run_cli(*cli_args(backend, "diff", "--exit-code"))[0] == 0
    assert c.get_registered_model(m2).tags["extra"] == "kept"
    assert {a: int(v) for a, v in c.get_registered_model(m0).aliases.items()} == {
        "Production": 3,
        "Staging": 1,
    }
    assert "Canary" not in c.get_registered_model(m1).aliases
    versions = c.search_model_versions(f"name = '{uniq}-m3'")
    assert sorted(int(v.version) for v in versions) == [2, 3]


def test_deleted_pinned_version_cannot_be_restored(
    backend: Backend, uniq: str, run_cli: CLI
) -> None:
    exp = f"{uniq}-exp"
    backend.make_runs(exp, ["a", "b"])
    body = (
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {uniq}-pin\nexperiment: {exp}\n"
        "versions:\n  - run: a\n    version: 1\n  - run: b\n    version: 2\n"
        "    aliases: [Production]\n"
    )
    path = write_manifest(backend.repo, f"{uniq}-pin", body)
    assert run_cli(*cli_args(backend, "apply", "--auto-approve"))[0] == 0
    backend.client.delete_model_version(f"{uniq}-pin", "1")
    code, out, err = run_cli(*cli_args(backend, "apply", "--auto-approve"))
    assert code == 1
    assert f"manifests/{path.name}:6:5: versions[0].version: version 1 of" in err
    assert "cannot be restored" in err
    assert "Apply complete" not in out


def test_pin_that_does_not_match_next_number_is_refused_before_writing(
    backend: Backend, uniq: str, run_cli: CLI, writes: WriteCounter
) -> None:
    exp = f"{uniq}-exp"
    backend.make_runs(exp, ["a"])
    write_manifest(
        backend.repo,
        "pin",
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {uniq}-p\nexperiment: {exp}\n"
        "versions:\n  - run: a\n    version: 4\n",
    )
    code, _, err = run_cli(*cli_args(backend, "apply", "--auto-approve"))
    assert code == 1
    assert (
        "manifests/pin.yaml:6:5: versions[0].version: pinned to version 4, but MLflow "
        "would assign 1" in err
    )
    assert writes.calls == []


def test_rebinding_a_version_is_an_error(backend: Backend, uniq: str, run_cli: CLI) -> None:
    exp = f"{uniq}-exp"
    backend.make_runs(exp, ["a", "b"])
    head = f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {uniq}-r\nexperiment: {exp}\n"
    write_manifest(backend.repo, "r", head + "versions:\n  - run: a\n    version: 1\n")
    assert run_cli(*cli_args(backend, "apply", "--auto-approve"))[0] == 0
    write_manifest(backend.repo, "r", head + "versions:\n  - run: b\n    version: 1\n")
    code, _, err = run_cli(*cli_args(backend, "diff"))
    assert code == 1
    assert "manifests/r.yaml:6:5: versions[0].version: version 1 of" in err
    assert "immutable" in err


def test_existing_version_of_the_run_is_adopted(
    backend: Backend, uniq: str, run_cli: CLI, writes: WriteCounter
) -> None:
    exp = f"{uniq}-exp"
    runs = backend.make_runs(exp, ["a", "b"])
    c = backend.client
    name = f"{uniq}-adopt"
    c.create_registered_model(name)
    # one registered by hand from the run root, one by a pipeline under a sub-path
    c.create_model_version(name, f"runs:/{runs['a']}", run_id=runs["a"])
    c.create_model_version(name, f"runs:/{runs['b']}/model", run_id=runs["b"])
    write_manifest(
        backend.repo,
        "adopt",
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {name}\nexperiment: {exp}\n"
        "versions:\n  - run: a\n    aliases: [Staging]\n  - run: b\n    aliases: [Production]\n",
    )
    code, out, err = run_cli(*cli_args(backend, "diff"))
    assert code == 0, err
    assert "+ version" not in out
    assert "+ alias Staging -> version 1" in out
    assert "+ alias Production -> version 2" in out
    assert run_cli(*cli_args(backend, "apply", "--auto-approve"))[0] == 0
    assert "create_version" not in writes.calls
    assert len(c.search_model_versions(f"name = '{name}'")) == 2


def test_missing_and_ambiguous_run_names_name_the_manifest_line(
    backend: Backend, uniq: str, run_cli: CLI
) -> None:
    exp = f"{uniq}-exp"
    backend.make_runs(exp, ["dup", "dup", "ok"])
    write_manifest(
        backend.repo,
        "runs",
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {uniq}-x\nexperiment: {exp}\n"
        "versions:\n  - run: ok\n  - run: dup\n  - run: nowhere\n",
    )
    code, _, err = run_cli(*cli_args(backend, "diff"))
    assert code == 1
    assert "manifests/runs.yaml:7:5: versions[1].run: run name 'dup' is ambiguous" in err
    assert "manifests/runs.yaml:8:5: versions[2].run: run 'nowhere' is not logged" in err


def test_json_plan_is_versioned_and_deterministic(
    backend: Backend, uniq: str, run_cli: CLI, tmp_path: Path
) -> None:
    scenario(backend, uniq)
    code, out1, _ = run_cli(*cli_args(backend, "diff", "--format", "json"))
    code2, out2, _ = run_cli(*cli_args(backend, "diff", "--format", "json"))
    assert code == code2 == 0
    assert out1 == out2
    data = json.loads(out1)
    assert data["format_version"] == 2
    assert data["summary"] == {"add": 23, "change": 0, "destroy": 0}
    actions = [c["action"] for c in data["changes"]]
    # SPEC section 6 order: models, then versions, then aliases
    assert actions == sorted(
        actions, key=["create_model", "set_model_tag", "create_version", "set_alias"].index
    )


def test_undeclared_versions_are_reported_and_left_alone(
    backend: Backend, uniq: str, run_cli: CLI
) -> None:
    exp = f"{uniq}-exp"
    runs = backend.make_runs(exp, ["a", "b"])
    name = f"{uniq}-u"
    c = backend.client
    c.create_registered_model(name)
    c.create_model_version(name, f"runs:/{runs['b']}", run_id=runs["b"])
    write_manifest(
        backend.repo,
        "u",
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {name}\nexperiment: {exp}\n"
        "versions:\n  - run: a\n",
    )
    code, out, _ = run_cli(*cli_args(backend, "apply", "--auto-approve"))
    assert code == 0
    code, out, _ = run_cli(*cli_args(backend, "diff"))
    assert "! version 1 (run " in out and "left alone" in out
    assert len(c.search_model_versions(f"name = '{name}'")) == 2


def test_observe_request_count_does_not_grow_per_model(
    server_backend: Backend, uniq: str, http_log: Recorder
) -> None:
    """300 models x 3 versions are read in a fixed number of requests."""
    from regctl.adapters.manifests import load_manifests
    from regctl.engine.observe import observe

    c = server_backend.client
    exp = f"{uniq}-exp"
    runs = server_backend.make_runs(exp, ["r0", "r1", "r2"])
    store = c._get_registry_client().store  # seeding only: the plain client is slow here
    for i in range(300):
        name = f"{uniq}-obs-{i:03d}"
        store.create_registered_model(name)
        for r in ("r0", "r1", "r2"):
            store.create_model_version(name, f"runs:/{runs[r]}", run_id=runs[r])
        write_manifest(
            server_backend.repo,
            name,
            f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {name}\nexperiment: {exp}\n"
            "versions:\n  - run: r0\n  - run: r1\n  - run: r2\n",
        )
    from regctl import config

    settings = config.Settings(server_backend.repo, server_backend.uri)
    registry = config.open_registry(settings)
    desired = load_manifests(server_backend.repo)
    http_log.clear()
    observed = observe(desired, registry, complete=True)
    assert len([m for m in observed.models if m.startswith(f"{uniq}-obs-")]) == 300
    # models: 1 page per 1000 (the shared server holds other tests' models too),
    # versions: 1 page, experiments: 1, runs: 1 per experiment
    reads = [p for _, p in http_log.calls]
    model_pages = sum(p.endswith("/registered-models/search") for p in reads)
    assert model_pages <= 2
    assert sum(p.endswith("/model-versions/search") for p in reads) == 1
    assert sum(p.endswith("/experiments/search") for p in reads) == 1
    assert sum(p.endswith("/runs/search") for p in reads) == 1
    assert len(reads) == model_pages + 3
    # scoped to a few models: name filters, still one request per kind
    http_log.clear()
    from regctl.adapters.manifests import scope

    observe(scope(desired, [f"{uniq}-obs-001", f"{uniq}-obs-002"]), registry, complete=False)
    assert len(http_log.calls) == 4


def test_importing_the_cli_does_not_import_mlflow() -> None:
    code = (
        "import sys; import regctl.cli, regctl.commands.apply, regctl.commands.review, regctl; "
        "bad = [m for m in sys.modules if m == 'mlflow' or m.startswith('mlflow.')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "controller"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


_PROBE = """
import sys
from regctl.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m == "mlflow" or m.startswith("mlflow."))
print("MLFLOW", len(loaded), "APP", any(m.startswith("regctl.commands.") for m in sys.modules))
sys.exit(code)
"""


def _probe_modules(args: list[str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "controller"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_help_validate_and_log_never_import_mlflow(examples_repo: Path) -> None:
    """Issue 7 target 1: start-up commands stay light. `--help` does not even import the
    use-case layer; validate and log run completely without mlflow."""
    assert _probe_modules(["--help"]) == "MLFLOW 0 APP False"
    assert _probe_modules(["--repo", str(examples_repo), "validate"]) == "MLFLOW 0 APP True"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(examples_repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "examples"], check=True)
    from regctl.adapters.manifests import load_manifests

    name = load_manifests(examples_repo).models[0].name
    out = _probe_modules(["--repo", str(examples_repo), "log", name])
    assert out == "MLFLOW 0 APP True"


def test_resolve_formats_match_the_cli() -> None:
    from regctl import cli
    from regctl.render.resolve import FORMATS

    assert cli.RESOLVE_FORMATS == FORMATS


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from regctl.config import Settings, resolve_tracking

    repo = tmp_path
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking(Settings(repo)) == (
        f"sqlite:///{repo / 'mlflow.db'}",
        (repo / "mlruns").as_uri(),
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking(Settings(repo))[0] == "http://127.0.0.1:1"
    assert resolve_tracking(Settings(repo, "http://127.0.0.1:2"))[0] == "http://127.0.0.1:2"


def test_a_manifest_error_is_reported_even_when_the_server_is_unreachable(
    tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    """SPEC: nothing reaches the server before every file has validated, so a manifest
    error is what the user sees, not the transport error of a request."""
    (tmp_path / "manifests").mkdir()
    write_manifest(
        tmp_path,
        "broken",
        "apiVersion: regctl/v1\nkind: RegisteredModel\nname: broken\nversions: 3\n",
    )
    code, out, err = run_cli(
        "--tracking-uri", "http://127.0.0.1:9", "--repo", str(tmp_path), "diff"
    )
    assert code == 1
    assert "manifests/broken.yaml:4" in err
    assert "cannot reach" not in err
