"""`regctl import`: manifests from a registry made by hand, then an empty diff.

The main case builds 20 models through the MLflow client on the real server (versions,
tags, aliases, legacy stages, a deleted version, two runs of one name, artifact
sub-paths, empty descriptions), imports them and checks that `diff` plans nothing and
`apply` writes nothing. A golden case shows what import changes in a file that people
edited: only the lines that differ.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regctl.adapters.yamledit import Editor
from regctl.cli import main
from regctl.commands.import_models import import_command, import_models
from regctl.config import Settings
from regctl.core.importplan import ImportReport
from regctl.errors import RegctlError

from conftest import Backend, Recorder, empty_sqlite

GOLDEN = Path(__file__).parent / "golden" / "import"
CLI = Callable[..., tuple[int, str, str]]


def args(b: Backend, *rest: str) -> list[str]:
    return ["--tracking-uri", b.uri, "--repo", str(b.repo), *rest]


def _version(c: Any, model: str, run_id: str, path: str = "", **kw: Any) -> int:
    source = f"runs:/{run_id}/{path}" if path else f"runs:/{run_id}"
    return int(c.create_model_version(model, source, run_id=run_id, **kw).version)


def build_registry(b: Backend, uniq: str) -> list[str]:
    """20 registered models made by hand, covering what a manifest can declare."""
    c = b.client
    exp, other = f"{uniq}-exp", f"{uniq}-other"
    runs = b.make_runs(exp, [f"r{i:02d}" for i in range(45)])
    twins = [b.make_runs(exp, ["twin"])["twin"] for _ in range(2)]  # one name, two runs
    elsewhere = b.make_runs(other, ["far"])["far"]
    r = iter(runs.values())
    names = [f"{uniq}-m{i:02d}" for i in range(20)]
    m = iter(names)

    # 00: no versions, an empty description, no tags
    c.create_registered_model(next(m), description="")
    # 01: one version with tags and an alias
    name = next(m)
    c.create_registered_model(name, tags={"owner": "research", "task": "regression"})
    _version(c, name, next(r), description="Huber LGBM.")
    c.set_registered_model_alias(name, "Production", "1")
    # 02: legacy stages next to aliases
    name = next(m)
    c.create_registered_model(name, description="Staged the old way.")
    for _ in range(3):
        _version(c, name, next(r))
    c.transition_model_version_stage(name, "1", "Archived")
    c.transition_model_version_stage(name, "2", "Production")
    c.transition_model_version_stage(name, "3", "Staging")
    c.set_registered_model_alias(name, "Production", "2")
    # 03: a deleted version in the middle
    name = next(m)
    c.create_registered_model(name)
    for _ in range(3):
        _version(c, name, next(r), description="")
    c.delete_model_version(name, "2")
    c.set_registered_model_alias(name, "Staging", "3")
    # 04: two runs with the same name: both versions need run_id
    name = next(m)
    c.create_registered_model(name)
    for rid in twins:
        _version(c, name, rid)
    _version(c, name, next(r))
    # 05: artifact sub-paths, and two versions of one run with different paths
    name = next(m)
    c.create_registered_model(name)
    rid = next(r)
    _version(c, name, rid, "model")
    _version(c, name, rid, "scaler/")
    _version(c, name, rid)
    # 06: runs in two experiments: no `experiment`, run_id everywhere
    name = next(m)
    c.create_registered_model(name)
    _version(c, name, next(r))
    _version(c, name, elsewhere)
    # 07: descriptions YAML would misread if written plainly
    name = next(m)
    c.create_registered_model(name, description="yes")
    for text in ("multi\nline\n", "key: value # not a comment", "'quoted' \"twice\"", "007"):
        _version(c, name, next(r), description=text)
    # 08: tags with awkward keys and values
    name = next(m)
    c.create_registered_model(
        name,
        tags={"n": "1", "flag": "true", "empty": "", "a key: odd": "v, w", "date": "2025-10-09"},
    )
    _version(c, name, next(r))
    # 09: several aliases on one version, one on another
    name = next(m)
    c.create_registered_model(name)
    _version(c, name, next(r))
    _version(c, name, next(r))
    for alias in ("Production", "champion_1", "blue-green"):
        c.set_registered_model_alias(name, alias, "1")
    c.set_registered_model_alias(name, "Staging", "2")
    # 10: a source given as the run's artifact URI, not runs:/
    name = next(m)
    c.create_registered_model(name)
    rid = next(r)
    uri = c.get_run(rid).info.artifact_uri
    c.create_model_version(name, f"{uri}/model", run_id=rid)
    # 11: aliases that moved; 12: a long history with deletions
    name = next(m)
    c.create_registered_model(name, description="Moves.")
    for _ in range(3):
        _version(c, name, next(r))
    c.set_registered_model_alias(name, "Production", "1")
    c.set_registered_model_alias(name, "Production", "3")
    name = next(m)
    c.create_registered_model(name)
    for _ in range(5):
        _version(c, name, next(r))
    c.delete_model_version(name, "1")
    c.delete_model_version(name, "4")
    # 13-19: plain models, each a little different
    for i, name in enumerate(m, start=13):
        c.create_registered_model(name, description=f"Model {i}.", tags={"index": str(i)})
        for _ in range(1 + i % 3):
            _version(c, name, next(r), description=f"v of {i}")
        c.set_registered_model_alias(name, "Staging", "1")
    return names


@pytest.mark.server
def test_import_then_diff_is_empty_and_apply_writes_nothing(
    server_backend: Backend, uniq: str, http_log: Recorder
) -> None:
    b = server_backend
    names = build_registry(b, uniq)
    out, code = import_command(Settings(b.repo, b.uri), names, None)
    assert code == 0, out
    assert "warning:" not in out and "error:" not in out, out
    assert "Imported 20 model(s): 20 created." in out
    # legacy stages are reported with the alias that replaces them, never added
    assert f"stage: {uniq}-m02: version 2 is in the deprecated stage Production and already " in out
    assert f"stage: {uniq}-m02: version 3 is in the deprecated stage Staging: add Staging" in out
    assert "version 1 is in the deprecated stage Archived; no alias replaces it" in out
    assert "Marked 20 model(s) as managed by regctl" in out

    files = sorted((b.repo / "manifests").iterdir())
    assert [f.name for f in files] == [f"{n}.yaml" for n in names]
    text = {n: (b.repo / "manifests" / f"{n}.yaml").read_text() for n in names}
    assert all(
        t.startswith("# yaml-language-server: $schema=../schema/regctl.schema.json\n")
        for t in text.values()
    )
    assert "description: ''\n" in text[f"{uniq}-m00"] and "versions" not in text[f"{uniq}-m00"]
    assert (
        "  # MLflow stage Staging (deprecated): add Staging to aliases to migrate\n"
        in text[f"{uniq}-m02"]
    )
    assert "aliases: [Staging]" not in text[f"{uniq}-m02"]
    assert "version: 2" not in text[f"{uniq}-m03"]  # the deleted version is simply not there
    assert text[f"{uniq}-m04"].count("run_id:") == 2 and "run: r" in text[f"{uniq}-m04"]
    assert "artifact_path: model\n" in text[f"{uniq}-m05"]
    assert "artifact_path: scaler\n" in text[f"{uniq}-m05"]
    assert "experiment:" not in text[f"{uniq}-m06"] and "run:" not in text[f"{uniq}-m06"]
    assert "description: 'yes'\n" in text[f"{uniq}-m07"]
    assert "artifact_path: model\n" in text[f"{uniq}-m10"]

    assert main(args(b, "validate", *names)) == 0
    assert main(args(b, "diff", "--exit-code", *names)) == 0
    http_log.clear()
    assert main(args(b, "apply", "--auto-approve", *names)) == 0
    assert http_log.writes() == []

    # a second import changes nothing, not a byte
    again, code = import_command(Settings(b.repo, b.uri), names, None)
    assert code == 0 and "Imported 20 model(s): 20 unchanged." in again
    assert "Marked" not in again
    assert {n: (b.repo / "manifests" / f"{n}.yaml").read_text() for n in names} == text


def _golden_registry(b: Backend) -> None:
    """The registry after people worked in the MLflow UI since the manifest was written."""
    c = b.client
    runs = b.make_runs("exp", ["a", "b", "c", "d"])
    c.create_registered_model(
        "forecaster",
        description="Forecaster, 1h bars.",
        tags={"owner": "research", "team": "quant", "tier": "gold", "mlflow.note": "x"},
    )
    _version(c, "forecaster", runs["a"], description="Baseline.")
    _version(c, "forecaster", runs["b"], description="Abandoned.")
    _version(c, "forecaster", runs["c"], description="Candidate, retrained.")
    _version(c, "forecaster", runs["d"], "model", description="Huber LGBM.")
    c.delete_model_version("forecaster", "2")
    c.transition_model_version_stage("forecaster", "4", "Staging")
    c.set_registered_model_alias("forecaster", "Canary", "1")
    c.set_registered_model_alias("forecaster", "Staging", "3")
    c.set_registered_model_alias("forecaster", "Production", "4")


def test_import_into_an_edited_manifest_changes_only_what_differs(tmp_path: Path) -> None:
    b = Backend("sqlite", empty_sqlite(tmp_path / "golden.db"), tmp_path / "repo")
    (b.repo / "manifests").mkdir(parents=True)
    _golden_registry(b)
    target = b.repo / "manifests" / "forecaster.yaml"
    shutil.copyfile(GOLDEN / "forecaster.before.yaml", target)
    out, code = import_command(Settings(b.repo, b.uri), [], None)
    assert code == 0, out
    assert out.splitlines()[0] == (
        "updated    manifests/forecaster.yaml: forecaster (3 versions): description; tags; "
        "- versions[1] (b): its version is not in the registry; + version 4; "
        "versions[0]: aliases; versions[2]: description"
    )
    after = target.read_text()
    golden = GOLDEN / "forecaster.after.yaml"
    if os.environ.get("REGCTL_UPDATE_GOLDEN"):  # regenerate, then review the diff in git
        golden.write_text(after)
    assert after == golden.read_text()
    assert main(args(b, "diff", "--exit-code")) == 0


def test_import_names_must_exist_and_nothing_is_written(tmp_path: Path) -> None:
    b = Backend("sqlite", empty_sqlite(tmp_path / "n.db"), tmp_path / "repo")
    (b.repo / "manifests").mkdir(parents=True)
    b.client.create_registered_model("here")
    with pytest.raises(RegctlError, match="no registered model named 'gone'"):
        import_command(Settings(b.repo, b.uri), ["here", "gone"], None)
    assert list((b.repo / "manifests").iterdir()) == []


def test_lease_and_prompts_are_skipped_and_a_draft_folder_claims_nothing(
    tmp_path: Path,
) -> None:
    b = Backend("sqlite", empty_sqlite(tmp_path / "s.db"), tmp_path / "repo")
    (b.repo / "manifests").mkdir(parents=True)
    c = b.client
    c.create_registered_model("regctl-lease", tags={"regctl.lease.id": "x"})
    c.create_registered_model("model")
    draft = tmp_path / "draft"
    out, code = import_command(Settings(b.repo, b.uri), [], draft)
    assert code == 0, out
    assert "skipped: regctl-lease: regctl's apply lock, not a model" in out
    assert sorted(p.name for p in draft.iterdir()) == ["model.yaml"]
    # manifests outside the repository's manifests/ are a draft: the registry is untouched
    assert "Not marked as managed" in out
    assert "regctl.managed" not in c.get_registered_model("model").tags
    header = (draft / "model.yaml").read_text().splitlines()[0]
    schema = Path(os.path.relpath(b.repo / "schema" / "regctl.schema.json", draft)).as_posix()
    assert header == f"# yaml-language-server: $schema={schema}"


def test_unrepresentable_versions_are_reported(tmp_path: Path) -> None:
    b = Backend("sqlite", empty_sqlite(tmp_path / "u.db"), tmp_path / "repo")
    (b.repo / "manifests").mkdir(parents=True)
    c = b.client
    runs = b.make_runs("exp", ["a", "gone"])
    c.create_registered_model("m")
    _version(c, "m", runs["a"])
    _version(c, "m", runs["a"])  # the same run and path again
    _version(c, "m", runs["gone"])
    c.set_registered_model_alias("m", "Production", "2")
    c.delete_run(runs["gone"])
    report = import_models(_reader(b), None, b.repo / "manifests", b.repo)
    assert isinstance(report, ImportReport)
    assert report.warnings == (
        f"m: version 3: its run {runs['gone']} is deleted or missing; a manifest cannot declare it",
        f"m: version 1 has the same run ({runs['a']}) and artifact path (root) as version 2; "
        "a manifest declares a run and path once, so it is left undeclared",
    )
    text = (b.repo / "manifests" / "m.yaml").read_text()
    assert "version: 2\n" in text and "aliases: [Production]" in text


def _reader(b: Backend) -> Any:
    from regctl.config import open_registry

    return open_registry(Settings(b.repo, b.uri))


# ------------------------------------------------------------------------ the editor


@pytest.mark.parametrize(
    ("before", "edit", "after"),
    [
        # a removed first key of a list item: the next key moves up to the dash
        (
            "v:\n  - a: 1   # one\n    b: 2\n",
            lambda ed: ed.delete_pair(ed.get(ed.root, "v").value[0], "a"),
            "v:\n  - b: 2\n",
        ),
        # CRLF files stay CRLF, an explicit document start stays
        (
            "---\r\nk: old\r\nz: 1\r\n",
            lambda ed: ed.insert_pair(ed.root, "n: new\n", before="z"),
            "---\r\nk: old\r\nn: new\r\nz: 1\r\n",
        ),
        # a block scalar replaced by a plain one keeps the lines after it
        (
            "d: |\n  two\n  lines\n\nnext: 1\n",
            lambda ed: ed.set_scalar(ed.get(ed.root, "d"), "one"),
            "d: one\n\nnext: 1\n",
        ),
        # quotes are kept; a value that needs other quoting gets it
        (
            "a: \"x\"\nb: 'y'\nc: z\n",
            lambda ed: [
                ed.set_scalar(ed.get(ed.root, "a"), "x2"),
                ed.set_scalar(ed.get(ed.root, "b"), "it's"),
                ed.set_scalar(ed.get(ed.root, "c"), "k: v"),
            ],
            "a: \"x2\"\nb: 'it''s'\nc: 'k: v'\n",
        ),
    ],
)
def test_editor_changes_only_the_span(before: str, edit: Any, after: str) -> None:
    ed = Editor(before)
    edit(ed)
    assert ed.result() == after


HEAD = "apiVersion: regctl/v1\nkind: RegisteredModel\nname: m\nexperiment: exp\n"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # no versions key: the entries are appended; an absent description stays absent
        (
            HEAD,
            HEAD + "versions:\n  - run: a\n    version: 1\n    description: ''\n"
            "    aliases: [Production]\n  - run: b\n    version: 2\n    description: two\n",
        ),
        # an empty flow list becomes a block list
        (
            HEAD + "versions: []\n",
            HEAD + "versions:\n  - run: a\n    version: 1\n    description: ''\n"
            "    aliases: [Production]\n  - run: b\n    version: 2\n    description: two\n",
        ),
        # block aliases lose an item; the new entry takes the file's indentation
        (
            HEAD + "versions:\n- run: a   # first\n  aliases:\n  - Staging\n  - Production\n",
            HEAD + "versions:\n- run: a   # first\n  aliases:\n  - Production\n"
            "- run: b\n  version: 2\n  description: two\n",
        ),
        # a pin names its version outright: the entry is rewritten to that version's run
        (
            HEAD + "versions:\n  - run: b\n    version: 1\n",
            HEAD + "versions:\n  - run: a\n    version: 1\n    aliases: [Production]\n"
            "  - run: b\n    version: 2\n    description: two\n",
        ),
    ],
)
def test_import_updates_structure(tmp_path: Path, before: str, after: str) -> None:
    b = Backend("sqlite", empty_sqlite(tmp_path / "x.db"), tmp_path / "repo")
    (b.repo / "manifests").mkdir(parents=True)
    runs = b.make_runs("exp", ["a", "b"])
    b.client.create_registered_model("m")
    _version(b.client, "m", runs["a"])
    _version(b.client, "m", runs["b"], description="two")
    b.client.set_registered_model_alias("m", "Production", "1")
    path = b.repo / "manifests" / "m.yaml"
    path.write_text(before)
    (b.repo / "manifests" / "ghost.yaml").write_text(HEAD.replace("name: m", "name: ghost"))
    out, code = import_command(Settings(b.repo, b.uri), [], None)
    assert code == 0, out
    assert path.read_text() == after
    assert "warning: ghost: manifests/ghost.yaml declares it, but the registry does not hold" in out
    assert main(args(b, "diff", "--exit-code", "m")) == 0
