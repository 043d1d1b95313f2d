"""Inference side: `regctl resolve` / `regctl.resolve()` against the real server and sqlite.

The shipped examples are applied once per backend (module fixture) under unique model
and experiment names; tests that change the registry make models of their own.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regctl.commands import resolve as cmd
from regctl.config import Settings
from regctl.engine import download as dl
from regctl.engine import resolved as rv
from regctl.errors import RegctlError, RegistryError

from conftest import REPO, empty_sqlite

LGBM = "btcusdt-1h-inference-7d-logret"
HMM = "btcusdt-1h-regimes-hmm"
LGBM_RUN = "run_20251008_145809_lgbm_y_logret_168h_huber"
HMM_RUN = "run_hmm_20251009_105640"
RUNS = Path("examples") / "runs" / "BINANCE_BTCUSDT.P, 60"
EXAMPLES = [  # model, alias, run, model_type, model file
    (LGBM, "Staging", LGBM_RUN, "lgbm", "model.txt"),
    (HMM, "Production", HMM_RUN, "hmm", "model.joblib"),
]


# ------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("text", "model", "alias", "version"),
    [
        ("m@Production", "m", "Production", None),
        ("m/3", "m", None, 3),
        ("models:/m@Staging", "m", "Staging", None),
        ("models:/m/12", "m", None, 12),
        ("a@b@c-1", "a@b", "c-1", None),  # aliases have no '@': the last one splits
        (" m@x ", "m", "x", None),
    ],
)
def test_parse_target(text: str, model: str, alias: str | None, version: int | None) -> None:
    assert rv.parse_target(text) == rv.Target(model, alias, version)


@pytest.mark.parametrize("text", ["m", "", "@x", "m@", "m/", "m/0", "m/x", "m/-1", "/3", "m@a b"])
def test_parse_target_rejects(text: str) -> None:
    with pytest.raises(rv.ResolveError, match="expected NAME@ALIAS or NAME/VERSION"):
        rv.parse_target(text)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"run_dir": "/m/run_1", "model_path": "/m/run_1/model.txt"}, "model.txt"),
        ({"run_dir": "/m/run_1/", "model_path": "/m/run_1/sub/./model.txt"}, "sub/model.txt"),
        ({"run_dir": "/m/a, b/run", "model_path": "/m/a, b/run/model.joblib"}, "model.joblib"),
        ({"model_path": "model.txt"}, "model.txt"),  # relative: relative to the run dir
        ({"run_dir": "/m/r", "model_path": "sub/model.txt"}, "sub/model.txt"),
    ],
)
def test_model_artifact_path(params: dict[str, str], expected: str) -> None:
    assert dl.model_artifact_path(params) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"run_dir": "/m/r"}, "no model_path param"),
        ({"run_dir": "/m/r", "model_path": ""}, "no model_path param"),
        ({"model_path": "/m/r/model.txt"}, "no run_dir param"),
        ({"run_dir": "/m/r", "model_path": "/elsewhere/model.txt"}, "outside run_dir"),
        ({"run_dir": "/m/r", "model_path": "/m/r2/model.txt"}, "outside run_dir"),
        ({"run_dir": "/m/r", "model_path": "/m/r"}, "outside run_dir"),
        ({"run_dir": "/m/r", "model_path": "/m/r/../x/model.txt"}, "outside run_dir"),
        ({"run_dir": "/m/r", "model_path": "../model.txt"}, "outside run_dir"),
        (
            {"run_dir": "/m/r", "model_path": "/x/m.txt", "external_model_path": "/x/m.txt"},
            "see external_model_path",
        ),
    ],
)
def test_model_artifact_path_errors(params: dict[str, str], message: str) -> None:
    with pytest.raises(rv.ModelPathError, match=re.escape(message)) as err:
        dl.model_artifact_path(params, "m version 1")
    assert "\n" not in str(err.value) and str(err.value).startswith("m version 1: ")


def test_import_regctl_does_not_import_mlflow() -> None:
    code = (
        "import sys, regctl\n"
        "assert 'mlflow' not in sys.modules, 'import regctl imported mlflow'\n"
        "assert callable(regctl.resolve) and regctl.Resolved.__name__ == 'Resolved'\n"
        "assert 'mlflow' not in sys.modules, 'regctl.resolve imported mlflow'\n"
        "from regctl import resolve\nimport regctl.commands.resolve as command\n"
        "import regctl.engine.download, regctl.engine.resolved, regctl.render.resolve\n"
        "assert resolve is regctl.resolve is command.resolve\n"
        "assert regctl.Resolved is regctl.engine.resolved.Resolved\n"
        "assert 'mlflow' not in sys.modules, 'regctl.commands.resolve imported mlflow'\n"
        "print('ok')\n"
    )
    env = {"PYTHONPATH": str(REPO / "controller"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_regctl_resolve_is_the_function_whatever_was_imported_first(tmp_path: Path) -> None:
    """The CLI imports regctl.commands.resolve; inference code calls the package attribute."""
    import regctl

    assert regctl.resolve is cmd.resolve  # a function, not a module
    assert callable(regctl.resolve)
    assert regctl.Resolved is rv.Resolved
    with pytest.raises(AttributeError):
        _ = regctl.no_such_thing  # type: ignore[attr-defined]
    with pytest.raises(rv.ResolveError, match="expected NAME@ALIAS"):
        regctl.resolve("no-alias-given", f"sqlite:///{tmp_path / 'never.db'}")
    assert list(tmp_path.iterdir()) == []  # a bad target fails before connecting


# ----------------------------------------------------------------- the real registry


@dataclass
class Published:
    """The shipped examples applied to one backend under unique names."""

    kind: str
    uri: str
    repo: Path
    prefix: str

    def name(self, base: str) -> str:
        return f"{self.prefix}-{base}"

    @property
    def settings(self) -> Settings:
        return Settings(self.repo, self.uri)

    def run_dir(self, run: str) -> Path:
        return self.repo / RUNS / run

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(self.uri, self.uri)


@pytest.fixture(scope="module", params=["server", "sqlite"])
def published(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Published:
    from regctl.cli import main

    root = tmp_path_factory.mktemp(f"resolve-{request.param}")
    repo = root / "repo"
    for part in ("manifests", "policies", "examples"):
        if (REPO / part).exists():
            shutil.copytree(REPO / part, repo / part, symlinks=True)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    for path in (repo / "manifests").glob("*.yaml"):
        text = re.sub(
            r"^(name|experiment): (.+)$", rf"\1: {prefix}-\2", path.read_text(), flags=re.M
        )
        path.write_text(text)
    if request.param == "server":
        uri = request.getfixturevalue("mlflow_server").url
    else:
        uri = empty_sqlite(root / "mlflow.db")
    code = main(["--tracking-uri", uri, "--repo", str(repo), "apply", "--auto-approve"])
    assert code == 0
    return Published(request.param, uri, repo, prefix)


def files_of(folder: Path) -> dict[str, int]:
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".regctl-partial-" in p.name)


@pytest.mark.parametrize(("base", "alias", "run", "kind", "model_file"), EXAMPLES)
def test_resolve_by_alias_and_version(
    published: Published, base: str, alias: str, run: str, kind: str, model_file: str
) -> None:
    name = published.name(base)
    out, code, warned = cmd.resolve_command(published.settings, f"{name}@{alias}", "json", None)
    assert code == 0 and warned == ()  # apply recorded the content digest
    data = json.loads(out)
    assert data["kind"] == "Resolved" and data["target"] == f"{name}@{alias}"
    assert (data["model"], data["alias"], data["version"]) == (name, alias, 1)
    assert data["aliases"] == [alias]
    assert data["run"]["name"] == run and len(data["run"]["id"]) == 32
    assert data["experiment"]["name"].startswith(published.prefix + "-")
    assert data["experiment"]["id"]
    assert data["source"] == f"runs:/{data['run']['id']}"
    assert data["artifact_path"] == "" and data["model_path"] == model_file
    assert data["model_file"] == model_file
    run_dir = str(published.run_dir(run).resolve())
    assert data["params"]["model_type"] == kind
    assert data["params"]["run_dir"] == run_dir
    assert data["params"]["model_path"] == f"{run_dir}/{model_file}"
    assert data["params"]["dataset_slug"] == "BINANCE_BTCUSDT.P__60"
    assert data["metrics"] and all(isinstance(v, float) for v in data["metrics"].values())
    assert data["provenance"]["model"]["regctl.managed"] == "true"
    assert all(k.startswith("regctl.") for k in data["provenance"]["model"])
    assert all(k.startswith("regctl.") for k in data["provenance"]["version"])
    assert "owner" not in data["provenance"]["model"]  # the manifest's own tags are not provenance
    assert data["description"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", data["content_digest"])
    assert data["provenance"]["version"]["regctl.digest"] == data["content_digest"]
    assert "regctl.files" not in data["provenance"]["version"]  # the download lists files

    by_version = json.loads(cmd.resolve_command(published.settings, f"{name}/1", "json", None)[0])
    assert by_version["alias"] is None and by_version["target"] == f"{name}/1"
    assert {k: v for k, v in by_version.items() if k not in ("alias", "target")} == {
        k: v for k, v in data.items() if k not in ("alias", "target")
    }

    text, code, _ = cmd.resolve_command(published.settings, f"{name}@{alias}", "text", None)
    assert code == 0
    lines = text.splitlines()
    assert f"  content:      {data['content_digest']}" in lines
    assert not any("regctl.files" in line or "regctl.digest" in line for line in lines)
    assert lines[0] == f"{name}@{alias}: {name} version 1"
    assert f"  run:          {run} ({data['run']['id']})" in lines
    assert f"  model file:   {model_file}" in lines
    assert f"    model_type = {kind}" in lines
    assert "    model regctl.managed = true" in lines
    assert not text.endswith("\n")


@pytest.mark.parametrize(("base", "alias", "run", "kind", "model_file"), EXAMPLES)
def test_download_matches_the_run_directory(
    published: Published,
    tmp_path: Path,
    base: str,
    alias: str,
    run: str,
    kind: str,
    model_file: str,
) -> None:
    name = published.name(base)
    expected = files_of(published.run_dir(run))
    dest = tmp_path / "model"
    out, code, warned = cmd.resolve_command(published.settings, f"{name}@{alias}", "text", dest)
    assert code == 0 and warned == ()
    assert f"downloaded {len(expected)} files ({sum(expected.values())} bytes) to {dest}" in out
    assert out.endswith(f"model file: {dest / model_file}")
    got = files_of(dest)
    record = json.loads((dest / dl.RESOLVED_FILE).read_text())
    del got[dl.RESOLVED_FILE]
    assert got == expected
    for rel in expected:  # same bytes, not only the same sizes
        assert (dest / rel).read_bytes() == (published.run_dir(run) / rel).read_bytes()
    assert record["version"] == 1 and record["run"]["name"] == run
    root = published.run_dir(run)
    assert record["files"] == [
        {"path": p, "size": s, "sha256": hashlib.sha256((root / p).read_bytes()).hexdigest()}
        for p, s in expected.items()
    ]
    assert record["verified"] is True
    assert record["digest"] == record["content_digest"]  # what the registry records
    assert f"content: {record['digest']} (matches the registry's record)" in out.splitlines()
    assert leftovers(tmp_path) == []

    # the Python API, by version, into an existing empty folder (replaced atomically)
    import regctl

    resolved = regctl.resolve(f"{name}/1", published.uri, repo=published.repo)
    assert isinstance(resolved, rv.Resolved)
    assert (resolved.version, resolved.run_name, resolved.model_path) == (1, run, model_file)
    assert resolved.params["model_type"] == kind
    empty = tmp_path / "again"
    empty.mkdir()
    seen: list[tuple[int, int, str]] = []
    assert resolved.download(empty, progress=lambda *a: seen.append(a)) == empty
    again = files_of(empty)
    assert again.pop(dl.RESOLVED_FILE) > 0 and again == expected
    assert json.loads((empty / dl.RESOLVED_FILE).read_text())["target"] == f"{name}/1"
    assert [s[0] for s in seen] == list(range(1, len(expected) + 1))
    assert {s[2] for s in seen} == set(expected)

    as_json = json.loads(
        cmd.resolve_command(published.settings, f"{name}/1", "json", tmp_path / "j")[0]
    )
    assert as_json["download"]["directory"] == str(tmp_path / "j")
    assert as_json["download"]["files"] == record["files"]
    assert as_json["download"]["digest"] == record["digest"]
    assert as_json["download"]["verified"] is True


def test_download_never_overwrites(published: Published, tmp_path: Path) -> None:
    target = published.name(LGBM) + "@Staging"
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(rv.DestinationExists, match="exists and is not empty"):
        cmd.resolve_command(published.settings, target, "text", full)
    assert files_of(full) == {"keep.txt": 4}
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(rv.DestinationExists, match="not a directory"):
        cmd.resolve_command(published.settings, target, "text", a_file)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(rv.DestinationExists, match="symbolic link"):
        cmd.resolve_command(published.settings, target, "text", link)
    assert leftovers(tmp_path) == []
    # a missing parent is created; the folder itself appears only when complete
    deep = tmp_path / "a" / "b" / "model"
    cmd.resolve_command(published.settings, target, "text", deep)
    assert (deep / "model.txt").is_file()


@pytest.fixture
def interrupt_after(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, BaseException], None]:
    """Make the adapter fail (raise `exc`) when asked for file k+1, after k good files."""
    from regctl.adapters.mlflow.registry import MlflowRegistry

    original = MlflowRegistry.download_artifact_file

    def arm(k: int, exc: BaseException) -> None:
        calls = {"n": 0}

        def download(self: Any, run: Any, path: str, dest: str) -> None:
            calls["n"] += 1
            if calls["n"] > k:
                Path(dest).write_bytes(b"half a fi")  # as if cut off mid-file
                raise exc
            original(self, run, path, dest)

        monkeypatch.setattr(MlflowRegistry, "download_artifact_file", download)

    return arm


@pytest.mark.parametrize(
    ("k", "exc"),
    [
        (0, KeyboardInterrupt()),
        (3, KeyboardInterrupt()),
        (5, RegistryError("download artifact failed: boom")),
    ],
)
def test_interrupted_download_leaves_no_dir(
    published: Published,
    tmp_path: Path,
    interrupt_after: Callable[[int, BaseException], None],
    k: int,
    exc: BaseException,
) -> None:
    interrupt_after(k, exc)
    target = published.name(LGBM) + "@Staging"
    dest = tmp_path / "model"
    with pytest.raises(type(exc)):
        cmd.resolve_command(published.settings, target, "text", dest)
    assert not dest.exists()
    assert leftovers(tmp_path) == []
    dest.mkdir()  # an existing empty folder stays exactly that
    with pytest.raises(type(exc)):
        cmd.resolve_command(published.settings, target, "json", dest)
    assert dest.is_dir() and list(dest.iterdir()) == []
    assert leftovers(tmp_path) == []


def test_size_mismatch_keeps_nothing(
    published: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regctl.adapters.mlflow.registry import MlflowRegistry

    original = MlflowRegistry.download_artifact_file

    def short(self: Any, run: Any, path: str, dest: str) -> None:
        original(self, run, path, dest)
        if path.endswith("model.txt"):
            with open(dest, "r+b") as f:
                f.truncate(100)

    monkeypatch.setattr(MlflowRegistry, "download_artifact_file", short)
    dest = tmp_path / "model"
    with pytest.raises(rv.DownloadError, match=r"model\.txt has 100 bytes, MLflow lists 18661"):
        cmd.resolve_command(published.settings, published.name(LGBM) + "@Staging", "text", dest)
    assert not dest.exists() and leftovers(tmp_path) == []


def test_alias_moved_during_download_keeps_the_resolved_version(
    published: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolved once: moving the alias after file 1 changes nothing in the result."""
    from regctl.adapters.mlflow.registry import MlflowRegistry

    c = published.client()
    runs = {}
    for base in (LGBM, HMM):
        mv = c.get_model_version(published.name(base), "1")
        runs[base] = mv.run_id
    model = f"{published.prefix}-race-{uuid.uuid4().hex[:6]}"
    c.create_registered_model(model)
    for base in (LGBM, HMM):
        c.create_model_version(model, f"runs:/{runs[base]}", run_id=runs[base])
    c.set_registered_model_alias(model, "Staging", "1")

    original = MlflowRegistry.download_artifact_file
    calls: list[str] = []

    def download(self: Any, run: Any, path: str, dest: str) -> None:
        original(self, run, path, dest)
        calls.append(path)
        if len(calls) == 1:
            c.set_registered_model_alias(model, "Staging", "2")

    monkeypatch.setattr(MlflowRegistry, "download_artifact_file", download)
    dest = tmp_path / "model"
    cmd.resolve_command(published.settings, f"{model}@Staging", "text", dest)
    assert len(calls) > 1
    assert int(c.get_model_version_by_alias(model, "Staging").version) == 2  # it did move
    got = files_of(dest)
    del got[dl.RESOLVED_FILE]
    assert got == files_of(published.run_dir(LGBM_RUN))  # entirely version 1
    record = json.loads((dest / dl.RESOLVED_FILE).read_text())
    assert (record["version"], record["run"]["id"]) == (1, runs[LGBM])
    assert record["params"]["model_type"] == "lgbm"
    monkeypatch.undo()

    # the API: resolved now (version 2), moved back from the progress hook after file 1
    resolved = cmd.resolve(f"{model}@Staging", published.uri, repo=published.repo)
    assert (resolved.version, resolved.run_id) == (2, runs[HMM])

    def move_back(done: int, total: int, path: str) -> None:
        if done == 1:
            c.set_registered_model_alias(model, "Staging", "1")

    dest2 = tmp_path / "model2"
    resolved.download(dest2, progress=move_back)
    got = files_of(dest2)
    del got[dl.RESOLVED_FILE]
    assert got == files_of(published.run_dir(HMM_RUN))
    assert json.loads((dest2 / dl.RESOLVED_FILE).read_text())["version"] == 2


@pytest.fixture
def broken(published: Published) -> Iterator[tuple[str, Any]]:
    """A model whose versions come from runs with bad params, and one from a deleted run."""
    c = published.client()
    exp = c.get_experiment_by_name(published.name("binance-btcusdt-perp-1h-7d-logret"))
    model = f"{published.prefix}-broken-{uuid.uuid4().hex[:6]}"
    c.create_registered_model(model)
    cases = [
        {"run_dir": "/train/run_a", "model_path": "/train/elsewhere/model.txt"},
        {"run_dir": "/train/run_b"},
        {"run_dir": "/train/run_c", "model_path": "/train/run_c/model.txt"},
    ]
    ids = []
    for i, params in enumerate(cases):
        run = c.create_run(exp.experiment_id, run_name=f"broken_{i}")
        rid = run.info.run_id
        for key, value in params.items():
            c.log_param(rid, key, value)
        c.set_terminated(rid)
        c.create_model_version(model, f"runs:/{rid}", run_id=rid)
        ids.append(rid)
    c.delete_run(ids[2])
    yield model, ids


def test_clear_errors(published: Published, broken: tuple[str, Any]) -> None:
    model, ids = broken
    lgbm = published.name(LGBM)

    def error(target: str) -> RegctlError:
        with pytest.raises(RegctlError) as err:
            cmd.resolve_command(published.settings, target, "text", None)
        assert "\n" not in str(err.value)
        return err.value

    e = error(f"{published.prefix}-nope@Staging")
    assert isinstance(e, rv.UnknownModel)
    assert str(e).startswith(f"model '{published.prefix}-nope' does not exist in ")
    e = error(f"{lgbm}@Production")  # MLflow answers 400, not 404, for a missing alias
    assert isinstance(e, rv.UnknownAlias)
    assert str(e) == f"model '{lgbm}' has no alias 'Production' (aliases: Staging)"
    e = error(f"{model}@Staging")
    assert str(e) == f"model '{model}' has no alias 'Staging' (aliases: none)"
    e = error(f"{lgbm}/9")
    assert isinstance(e, rv.UnknownVersion)
    assert str(e) == f"model '{lgbm}' has no version 9"
    e = error(f"{model}/1")
    assert isinstance(e, rv.ModelPathError)
    assert str(e) == (
        f"{model} version 1: model_path '/train/elsewhere/model.txt' is outside run_dir "
        "'/train/run_a'; the model file is not among the artifacts"
    )
    e = error(f"{model}/2")
    assert isinstance(e, rv.ModelPathError)
    assert str(e) == f"{model} version 2: the run has no model_path param"
    e = error(f"{model}/3")
    assert isinstance(e, rv.RunDeleted)
    assert str(e) == f"{model} version 3: its run {ids[2]} was deleted"
    with pytest.raises(rv.ResolveError, match="unknown format 'yaml'"):
        cmd.resolve_command(published.settings, f"{lgbm}@Staging", "yaml", None)


def test_run_deleted_after_resolve_stops_the_download(published: Published, tmp_path: Path) -> None:
    c = published.client()
    lgbm = c.get_model_version(published.name(LGBM), "1")
    model = f"{published.prefix}-gone-{uuid.uuid4().hex[:6]}"
    exp = c.get_experiment_by_name(published.name("binance-btcusdt-perp-1h-7d-logret"))
    run = c.create_run(exp.experiment_id, run_name="soon_deleted")
    rid = run.info.run_id
    for key in ("run_dir", "model_path"):
        c.log_param(rid, key, c.get_run(lgbm.run_id).data.params[key])
    c.create_registered_model(model)
    c.create_model_version(model, f"runs:/{rid}", run_id=rid)
    resolved = cmd.resolve(f"{model}/1", published.uri, repo=published.repo)
    c.delete_run(rid)
    with pytest.raises(rv.RunDeleted):
        resolved.download(tmp_path / "model")
    assert not (tmp_path / "model").exists() and leftovers(tmp_path) == []


def test_cli_resolve(
    published: Published, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:

    base = ("--tracking-uri", published.uri, "--repo", str(published.repo), "resolve")
    name = published.name(LGBM)
    code, out, err = run_cli(*base, f"{name}@Staging", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["version"] == 1
    code, out, err = run_cli(*base, f"{name}@Staging", "--download", str(tmp_path / "m"))
    assert code == 0, err
    assert (tmp_path / "m" / "model.txt").is_file()
    code, out, err = run_cli(*base, f"{name}@Nope")
    assert code == 1
    assert err == f"error: model '{name}' has no alias 'Nope' (aliases: Staging)\n"
