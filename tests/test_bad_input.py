"""Issue 13, cases 10 and 11: prune, import and bad input against a real server.

Pruning deletes every managed model that no manifest declares, so these tests run on a
private `mlflow server` (started once for this module, emptied before each test):
on the shared one they would see, and count, the other tests' models.

- The mass-delete guard counts what a prune deletes (a model's versions and aliases).
- Every entry of manifests/ is read or stops the command before any request: a
  manifest named `m.YAML` keeps its model; a dangling symlink stops `apply --prune`.
- `import` refuses, before any write, two models whose names differ only in case.
- Malformed URIs and plan files are one line naming the input, never "internal error".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from regctl.core.model import MANAGED_TAG, is_internal_model
from regctl.core.plan import (
    CHANGE_TYPES,
    Binding,
    Change,
    CreateModel,
    CreateVersion,
    Note,
    Plan,
    SetAlias,
    plan_from_json,
)

from conftest import Backend, Recorder, Server, _start_server, _stop, write_manifest

CLI = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _start_server(tmp_path_factory.mktemp("mlflow-private"))
    try:
        yield server
    finally:
        _stop(server.proc)


@pytest.fixture
def b(private_server: Server, tmp_path: Path) -> Backend:
    """A repository and the private server, with no registered model left on it."""
    backend = Backend("private", private_server.url, tmp_path / "repo")
    (backend.repo / "manifests").mkdir(parents=True)
    c = backend.client
    for m in c.search_registered_models(max_results=1000):
        c.delete_registered_model(m.name)
    return backend


def cli_args(b: Backend, *rest: str) -> list[str]:
    return ["--tracking-uri", b.uri, "--repo", str(b.repo), *rest]


def model_text(name: str, runs: list[str], exp: str = "exp", **extra: str) -> str:
    head = f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {name}\nexperiment: {exp}\n"
    head += "".join(f"{k}: {v}\n" for k, v in extra.items())
    return head + ("versions:\n" if runs else "") + "".join(f"  - run: {r}\n" for r in runs)


def names(b: Backend) -> list[str]:
    """The registered models, without regctl's own (lease generations, the ledger)."""
    found = b.client.search_registered_models(max_results=1000)
    return sorted(m.name for m in found if not is_internal_model(m.name))


# -- case 10: the mass-delete guard counts versions and aliases ------------------------


def test_pruning_a_model_with_100_versions_is_a_mass_delete(
    b: Backend, private_server: Server, run_cli: CLI, uniq: str
) -> None:
    c = b.client
    runs = b.make_runs(uniq, ["r0", "k0", "k1"])
    c.create_registered_model("big", tags={MANAGED_TAG: "true"})
    # the versions go straight into the server's database: 0.3 s each through the server
    db = MlflowClient(registry_uri=f"sqlite:///{private_server.root / 'mlflow.db'}")
    for _ in range(100):
        db.create_model_version("big", f"runs:/{runs['r0']}", runs["r0"], await_creation_for=0)
    c.set_registered_model_alias("big", "Production", "100")
    write_manifest(b.repo, "keep", model_text("keep", ["k0", "k1"], uniq))
    assert run_cli(*cli_args(b, "apply", "--auto-approve"))[0] == 0

    # one model deletion, counted before as 1 of 104 managed models and versions, deletes
    # 102 of 105 objects: the model, its 100 versions and its alias
    code, out, err = run_cli(*cli_args(b, "apply", "--auto-approve", "--prune"))
    assert code == 1, out + err
    assert err.splitlines() == [
        "error: manifests/: --prune would delete 1 models, 100 versions and 1 aliases: "
        "102 of the 105 managed objects (more than 50%); if that is intended, pass "
        "--allow-mass-delete"
    ]
    assert len(c.search_model_versions("name = 'big'", max_results=1000)) == 100
    # with the flag the same plan is shown: the guard refused, nothing else did
    code, out, _ = run_cli(*cli_args(b, "diff", "--prune", "--allow-mass-delete"))
    assert code == 0 and "- registered model big" in out


# -- case 10: every entry of manifests/ is read or an error ---------------------------


def test_a_manifest_named_upper_case_yaml_is_read_so_prune_keeps_its_model(
    b: Backend, run_cli: CLI, uniq: str
) -> None:
    b.make_runs(uniq, ["a0", "c0", "k0", "k1", "k2"])
    write_manifest(b.repo, "a", model_text("a", ["a0"], uniq))
    write_manifest(b.repo, "c", model_text("c", ["c0"], uniq))
    write_manifest(b.repo, "k", model_text("k", ["k0", "k1", "k2"], uniq))
    code, out, err = run_cli(*cli_args(b, "apply", "--auto-approve"))
    assert code == 0, out + err
    folder = b.repo / "manifests"
    (folder / "a.yaml").rename(folder / "a.YAML")
    (folder / "c.yaml").rename(folder / "c.Yml")
    code, out, err = run_cli(*cli_args(b, "apply", "--auto-approve", "--prune"))
    assert code == 0, out + err
    assert "No changes" in out
    assert names(b) == ["a", "c", "k"]


@pytest.mark.parametrize("command", ["apply", "diff", "check", "validate", "sync"])
def test_a_dangling_symlink_in_manifests_stops_prune_before_any_request(
    b: Backend, run_cli: CLI, http_log: Recorder, command: str, uniq: str
) -> None:
    b.make_runs(uniq, ["g0", "k0", "k1", "k2"])
    write_manifest(b.repo, "gone", model_text("gone", ["g0"], uniq))
    write_manifest(b.repo, "k", model_text("k", ["k0", "k1", "k2"], uniq))
    assert run_cli(*cli_args(b, "apply", "--auto-approve"))[0] == 0
    # the manifest of 'gone' is replaced by a link to nothing: its model must not be pruned
    (b.repo / "manifests" / "gone.yaml").unlink()
    (b.repo / "manifests" / "gone.yaml").symlink_to("elsewhere/gone.yaml")
    http_log.clear()
    extra = {"apply": ["--auto-approve", "--prune"], "diff": ["--prune"]}.get(command, [])
    code, out, err = run_cli(*cli_args(b, command, *extra))
    assert code == 1, out + err
    assert err.splitlines() == [
        "error: manifests/gone.yaml: is a symbolic link; regctl reads only regular files "
        "here (the link's target is not what git reviews): replace it with the file"
    ]
    assert http_log.calls == []  # not a read, let alone a write
    assert names(b) == ["gone", "k"]


def test_entries_the_loader_does_not_read_are_each_an_error(tmp_path: Path, run_cli: CLI) -> None:
    repo = tmp_path / "repo"
    folder = repo / "manifests"
    folder.mkdir(parents=True)
    write_manifest(repo, "m", model_text("m", []))
    (folder / "m.YAML").write_text(model_text("n", []))  # differs only in case from m.yaml
    (folder / "notes.txt").write_text("hello")
    (folder / "m.yaml~").write_text("backup")
    (folder / "sub").mkdir()
    os.mkfifo(folder / "pipe.yaml")
    (folder / "link.yml").symlink_to(folder / "m.yaml")  # a link to a valid manifest
    (folder / ".hidden.yaml").write_text(model_text("h", []))
    (folder / ".gitkeep").write_text("")  # ignored: hidden
    (folder / "README.md").write_text("not a manifest: {")  # ignored: a README
    for command in (["validate"], ["log", "m"]):  # log looks up the model's manifest
        code, out, err = run_cli("--repo", str(repo), *command)
        assert code == 1, out + err
        lines = err.splitlines()
        assert all(line.startswith("error: ") for line in lines), lines
        assert [line.split(": ")[1] for line in lines] == [
            "manifests/.hidden.yaml",
            "manifests/link.yml",
            "manifests/m.yaml",
            "manifests/m.yaml~",
            "manifests/notes.txt",
            "manifests/pipe.yaml",
            "manifests/sub",
        ]
        assert "differs only in case from manifests/m.YAML" in lines[2]
    # policies/ follows the same rules
    for entry in list(folder.iterdir()):
        if entry.name not in ("m.YAML", ".gitkeep", "README.md"):
            entry.rmdir() if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    (repo / "policies").mkdir()
    (repo / "policies" / "p.json").write_text("{}")
    (repo / "policies" / "q.YML").write_text("kind: Nonsense\n")
    code, out, err = run_cli("--repo", str(repo), "validate")
    assert code == 1, out + err
    assert [line.split(": ")[1] for line in err.splitlines()] == ["policies/p.json"]
    (repo / "policies" / "p.json").unlink()
    code, out, err = run_cli("--repo", str(repo), "validate")
    assert code == 1 and err.startswith("error: policies/q.YML:1:"), err  # read, and refused


def test_a_run_dir_json_number_past_python_s_digit_limit_is_one_line(
    examples_repo: Path, run_cli: CLI
) -> None:
    metrics = next((examples_repo / "examples" / "runs").glob("*/run_*lgbm*/metrics.json"))
    metrics.write_text('{"rmse_test": 1' + "0" * 5000 + "}", encoding="utf-8")
    code, out, err = run_cli("--repo", str(examples_repo), "validate")
    assert code == 1, out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: manifests/"), lines
    assert lines[0].endswith("metrics.json: invalid JSON: a number with too many digits")


# -- case 10: import refuses a set validate would refuse -------------------------------


def test_import_of_models_differing_only_in_case_writes_nothing(
    b: Backend, run_cli: CLI, http_log: Recorder, uniq: str
) -> None:
    c = b.client
    run = b.make_runs(uniq, ["r"])["r"]
    for name in ("Churn", "churn", "other"):
        c.create_registered_model(name)
        c.create_model_version(name, f"runs:/{run}", run_id=run)
    http_log.clear()
    code, out, err = run_cli(*cli_args(b, "import"))
    assert code == 1, out + err
    assert err.splitlines() == [
        "error: manifests/churn-2.yaml:4:7: name: model 'churn' differs only in case from "
        "'Churn' in manifests/Churn.yaml:4:7 (in the manifests import would write; "
        "nothing was written)"
    ]
    assert list((b.repo / "manifests").iterdir()) == []
    assert http_log.writes() == []
    assert all(MANAGED_TAG not in c.get_registered_model(n).tags for n in names(b))
    # an existing manifest counts too: it declares 'Churn', the registry also holds 'churn'
    write_manifest(b.repo, "Churn", model_text("Churn", [], uniq))
    before = (b.repo / "manifests" / "Churn.yaml").read_text()
    code, _, err = run_cli(*cli_args(b, "import", "churn"))
    assert code == 1 and "model 'churn' differs only in case from 'Churn'" in err
    assert sorted(p.name for p in (b.repo / "manifests").iterdir()) == ["Churn.yaml"]
    assert (b.repo / "manifests" / "Churn.yaml").read_text() == before
    # one of them alone is a valid set: imported, written, and adopted
    (b.repo / "manifests" / "Churn.yaml").unlink()
    code, out, err = run_cli(*cli_args(b, "import", "churn", "other"))
    assert code == 0, out + err
    assert sorted(p.name for p in (b.repo / "manifests").iterdir()) == ["churn.yaml", "other.yaml"]
    assert c.get_registered_model("churn").tags[MANAGED_TAG] == "true"
    assert run_cli(*cli_args(b, "validate"))[0] == 0


# -- case 11: URIs ----------------------------------------------------------------------

SECRET = "s3cr3t-pw"
BAD_URIS = [
    ("http://[::1", "malformed IPv6 host"),
    (f"http://user:{SECRET}@[::1", "malformed IPv6 host"),
    ("http://h:99999", "port 99999 is out of range 1-65535"),
    (f"https://u:{SECRET}@h:0/", "port 0 is out of range 1-65535"),
    ("http://h:x1", "the port is not a number"),
    ("http://", "no host after http://"),
    ("http:///path", "no host after http://"),
    ("ftp://x", "unsupported scheme 'ftp'"),
    ("sqlite:", "no database path"),
    ("sqlite://", "no database path"),
    ("sqlite:///", "no database path"),
    ("sqlite://host/x.db", "a sqlite URI has no host"),
    ("sqlite:///x.db?mode=ro", "without query string"),
    ("http://a\x00b", "contains a control or unassigned character (U+0000)"),
    ("http://a\nb", "contains a control or unassigned character (U+000A)"),
    ("http://a b", "contains whitespace (U+0020)"),
    (f"http://h/?token={SECRET}", "no query string or fragment"),
    ("mlruns", "not a URI (no scheme)"),
    ("file:///tmp/mlruns", "file store is not supported"),
]
SOURCES = [
    ("--tracking-uri", None),
    ("--registry-uri", None),
    (None, "MLFLOW_TRACKING_URI"),
    (None, "MLFLOW_REGISTRY_URI"),
]


@pytest.mark.parametrize(("uri", "why"), BAD_URIS, ids=[repr(u) for u, _ in BAD_URIS])
@pytest.mark.parametrize(("flag", "env"), SOURCES, ids=[f or e for f, e in SOURCES])
def test_a_malformed_uri_is_one_line_naming_its_source(
    tmp_path: Path,
    run_cli: CLI,
    monkeypatch: pytest.MonkeyPatch,
    uri: str,
    why: str,
    flag: str | None,
    env: str | None,
) -> None:
    (tmp_path / "manifests").mkdir()
    argv = ["--repo", str(tmp_path)]
    if flag:
        argv += [flag, uri]
    else:
        assert env is not None
        if "\x00" in uri:
            pytest.skip("an environment variable cannot hold a NUL byte")
        monkeypatch.setenv(env, uri)
    for command in (["diff"], ["apply", "--auto-approve"], ["resolve", "m@a"], ["import"]):
        code, out, err = run_cli(*argv, *command)
        assert code == 1, out + err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {flag or env}: "), lines
        assert why in lines[0]
        assert SECRET not in out + err
    assert not (tmp_path / "mlflow.db").exists()


def test_an_empty_option_and_an_unwritable_out_are_one_line(
    tmp_path: Path, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--tracking-uri "$UNSET"` must not fall back to a local database unseen; an empty
    variable is unset, as MLflow reads it."""
    (tmp_path / "manifests").mkdir()
    for flag in ("--tracking-uri", "--registry-uri"):
        code, _, err = run_cli(flag, "", "--repo", str(tmp_path), "diff")
        assert code == 1
        assert err.splitlines() == [
            f"error: {flag}: empty (an unset variable?): give a URI, or leave the option out"
        ]
    assert not (tmp_path / "mlflow.db").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "")
    out_file = tmp_path / "missing" / "plan.json"
    code, out, err = run_cli("--repo", str(tmp_path), "diff", "--out", str(out_file))
    assert code == 1 and "No changes" in out
    assert err.splitlines() == [
        f"error: --out {out_file}: cannot write the plan: No such file or directory"
    ]
    assert (tmp_path / "mlflow.db").exists()  # the default store, in the repository


def test_a_uri_with_credentials_works_and_is_never_shown(
    b: Backend, run_cli: CLI, http_log: Recorder, uniq: str
) -> None:
    host = b.uri.removeprefix("http://")
    uri = f"http://regctl:{SECRET}@{host}"
    b.make_runs(uniq, ["r"])
    write_manifest(b.repo, "m", model_text("m", ["r"], uniq))
    for command in (["diff"], ["apply", "--auto-approve"], ["--registry-uri", uri, "diff"]):
        code, out, err = run_cli("--tracking-uri", uri, "--repo", str(b.repo), *command)
        assert code == 0, out + err
        assert SECRET not in out + err
    assert names(b) == ["m"]


# -- case 11: plan files ----------------------------------------------------------------

PLAN_HEAD = {"format_version": 2, "target": "", "models": []}
BAD_PLANS: list[tuple[str | bytes, str]] = [
    ("[]", "not a regctl plan: expected a JSON object at the top level, got a list"),
    ('"plan"', "not a regctl plan: expected a JSON object at the top level, got a string"),
    ("", "plan.json:1:1: not a regctl plan: invalid JSON: Expecting value"),
    (b"\xff", "not a regctl plan: 'utf-8' codec can't decode byte"),
    ("[" * 100_000 + "]" * 100_000, "not a regctl plan: nested too deeply"),
    ('{"format_version": 1, "format_version": 2}', "duplicate key 'format_version'"),
    ('{"format_version": true}', "format_version: unsupported plan format_version True"),
    ('{"format_version": 1e400}', "format_version: unsupported plan format_version a number"),
    (json.dumps({**PLAN_HEAD, "changes": 3}), "changes: expected a list, got an integer"),
    (json.dumps({**PLAN_HEAD, "changes": [[]]}), "changes[0]: expected an object, got a list"),
    (
        json.dumps({**PLAN_HEAD, "changes": [{"action": "drop_table", "model": "m"}]}),
        "changes[0].action: unknown action 'drop_table'",
    ),
    (
        json.dumps({**PLAN_HEAD, "changes": [{"action": {"x": 1}}]}),
        "changes[0].action: unknown action an object",
    ),
    (
        json.dumps({**PLAN_HEAD, "changes": [{"action": "delete_model"}]}),
        "changes[0].model: required field is missing",
    ),
    (
        json.dumps({**PLAN_HEAD, "changes": [{"action": "delete_model", "model": "m", "x": 1}]}),
        "changes[0]: unknown field 'x' for 'delete_model'",
    ),
    (
        json.dumps(
            {**PLAN_HEAD, "changes": [{"action": "delete_version", "model": "m", "version": "1"}]}
        ),
        "changes[0].version: expected a whole number, got a string",
    ),
    (
        json.dumps(
            {**PLAN_HEAD, "changes": [{"action": "delete_version", "model": "m", "version": True}]}
        ),
        "changes[0].version: expected a whole number, got a boolean",
    ),
    (
        json.dumps({**PLAN_HEAD, "changes": [{"action": "set_alias", "model": "m", "new": 2**64}]}),
        "changes[0].new: expected a whole number from 0 to 2**63-1",
    ),
    (
        '{"format_version": 1, "changes": [{"action": "delete_version", "model": "m", '
        '"version": 1' + "0" * 5000 + "}]}",
        "not a regctl plan: a number with too many digits",
    ),
    (
        json.dumps(
            {**PLAN_HEAD, "changes": [{"action": "create_model", "model": "m", "tags": []}]}
        ),
        "changes[0].tags: expected an object of strings, got a list",
    ),
    (
        json.dumps({**PLAN_HEAD, "changes": [], "models": [1]}),
        "models[0]: expected a string, got an integer",
    ),
    (
        json.dumps({**PLAN_HEAD, "changes": [], "bindings": [{"model": "m"}]}),
        "bindings[0].entry: required field is missing",
    ),
    (json.dumps({"format_version": 2, "changes": []}), "target: required field is missing"),
    (json.dumps({"format_version": 1, "changes": []}), "unsupported plan format_version 1"),
    (
        json.dumps({**PLAN_HEAD, "changes": [], "inputs": {}, "options": {"prune": 1}}),
        "options.prune: expected true or false, got an integer",
    ),
    (
        json.dumps({**PLAN_HEAD, "changes": [], "inputs": {"manifests": 3}, "options": {}}),
        "inputs.manifests: expected a string, got an integer",
    ),
]


def test_a_malformed_plan_file_is_one_line_and_nothing_is_written(
    server_backend: Backend, run_cli: CLI, http_log: Recorder
) -> None:
    b = server_backend
    plan = b.repo / "plan.json"
    for text, why in BAD_PLANS:
        plan.write_bytes(text if isinstance(text, bytes) else text.encode())
        http_log.clear()
        # no manifests: the plan made from them is empty, and the saved one is read
        code, out, err = run_cli(*cli_args(b, "apply", str(plan), "--auto-approve"))
        assert code == 1, (text[:80], out, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {plan}:"), lines
        assert why in lines[0], (lines[0], why)
        assert "internal error" not in err
        assert http_log.writes() == []


def test_a_plan_round_trips_through_its_json(tmp_path: Path) -> None:
    """Every change type, every field with a non-default value, survives to_json and
    plan_from_json: the reader checks each field's declared type, so a field added
    with a type it does not know fails here first."""
    changes: list[Change] = []
    for cls in CHANGE_TYPES.values():
        changes.append(cls(model="m"))
    changes += [
        CreateModel(model="m", description="d", tags={"a": "b"}),
        CreateVersion(
            model="m",
            entry=2,
            experiment="e",
            run_name="r",
            run_id="abc",
            artifact_path="model",
            description="x",
            expected_version=3,
            pinned=True,
            location="manifests/m.yaml:4",
        ),
        SetAlias(model="m", alias="Production", old=None, new=2, entry=1, run_name="r"),
    ]
    plan = Plan(
        target="http://h",
        models=("m", "n"),
        changes=tuple(changes),
        notes=(Note("m", "left alone"),),
        bindings=(Binding("m", 0, 1, None, True), Binding("m", 1, 2, "abc", False)),
        fingerprint="sha256:0",
    )
    data: Any = json.loads(json.dumps(plan.to_json()))
    assert plan_from_json(data) == plan
