"""Content digests recorded registry side, against a real server (issue 16).

apply records, on every version it registers from a run directory, the tree digest of
the version's files (`regctl.digest`) and the per-file list (`regctl.files`); a version
registered by hand from the same run is adopted and gets its record; a manifest pin that
differs, or a record the run directory contradicts, is refused by diff before any write,
naming the manifest line and field; `regctl import` writes the pin.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from test_sync import args, logged_run, make_run_dir

from regctl.core.digests import DIGEST_TAG, FILES_TAG, parse_files_record
from regctl.core.runs import tree_digest

from conftest import Backend, write_manifest

CLI = Callable[..., tuple[int, str, str]]
FILES = {"model.joblib": "weights", "scaler.joblib": "scale", "notes/readme.txt": "hi"}


def run_dir(b: Backend) -> Path:
    return make_run_dir(
        b.repo / "runs",
        "run_hmm_20251009_105640",
        {"model_type": "hmm", "dataset": "d"},
        {"bic_final": 1.0},
        FILES,
    )


def dir_digest(d: Path) -> str:
    files = []
    for p in sorted(d.rglob("*")):
        if p.is_file():
            body = p.read_bytes()
            files.append((p.relative_to(d).as_posix(), len(body), hashlib.sha256(body).hexdigest()))
    return tree_digest(files)


def manifest(b: Backend, model: str, exp: str, d: Path, extra: str = "") -> Path:
    return write_manifest(
        b.repo,
        model,
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {model}\nexperiment: {exp}\n"
        f"versions:\n  - run: {d.name}\n    run_dir: {d.relative_to(b.repo).as_posix()}\n{extra}",
    )


def test_apply_records_the_run_directory_digest(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    d = run_dir(b)
    manifest(b, f"{uniq}-m", f"{uniq}-exp", d)
    code, out, err = run_cli(*args(b, "diff"))
    assert code == 0, err
    assert f"content: {dir_digest(d)}" in out
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 0, out + err
    mv = b.client.get_model_version(f"{uniq}-m", "1")
    assert mv.tags[DIGEST_TAG] == dir_digest(d)
    tree = parse_files_record(mv.tags[FILES_TAG], mv.tags[DIGEST_TAG])
    assert tree is not None
    assert {p for p, _, _ in tree} == {
        "model.joblib",
        "scaler.joblib",
        "notes/readme.txt",
        "pipeline_config.json",
        "metrics.json",
    }
    assert run_cli(*args(b, "diff", "--exit-code"))[0] == 0


def test_an_adopted_version_gets_its_record(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    d = run_dir(b)
    model, exp = f"{uniq}-m", f"{uniq}-exp"
    manifest(b, f"{uniq}-other", exp, d)  # only to sync the run
    assert run_cli(*args(b, "sync"))[0] == 0
    (b.repo / "manifests" / f"{uniq}-other.yaml").unlink()
    run = logged_run(b, exp, d.name)
    b.client.create_registered_model(model)
    b.client.create_model_version(model, f"runs:/{run.info.run_id}", run.info.run_id)
    manifest(b, model, exp, d)
    code, out, err = run_cli(*args(b, "diff"))
    assert code == 0, err
    assert f"+ version 1 content digest: {dir_digest(d)}" in out
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 0, out + err
    assert b.client.get_model_version(model, "1").tags[DIGEST_TAG] == dir_digest(d)
    assert run_cli(*args(b, "diff", "--exit-code"))[0] == 0


def test_a_pin_that_differs_is_refused_before_any_write(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    d = run_dir(b)
    model = f"{uniq}-m"
    wrong = "sha256:" + "0" * 64
    path = manifest(b, model, f"{uniq}-exp", d, f"    digest: {wrong}\n")
    for command in (["diff"], ["apply", "--auto-approve"]):
        code, out, err = run_cli(*args(b, *command))
        assert code == 1, out + err
        assert f"manifests/{path.name}:" in err and "versions[0].digest" in err
        assert wrong in err and dir_digest(d) in err
    assert b.client.search_registered_models(f"name = '{model}'") == []
    assert b.client.get_experiment_by_name(f"{uniq}-exp") is None  # not even synced

    path.write_text(path.read_text().replace(wrong, dir_digest(d)))
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0


def test_a_record_the_run_directory_contradicts_is_refused(
    server_backend: Backend, uniq: str, run_cli: CLI
) -> None:
    b = server_backend
    d = run_dir(b)
    model = f"{uniq}-m"
    manifest(b, model, f"{uniq}-exp", d)
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0
    forged = "sha256:" + "1" * 64
    b.client.set_model_version_tag(model, "1", DIGEST_TAG, forged)
    code, out, err = run_cli(*args(b, "diff"))
    assert code == 1
    assert "versions[0].run_dir" in err and forged in err and "changed after it was made" in err


def test_import_writes_the_pin(server_backend: Backend, uniq: str, run_cli: CLI) -> None:
    b = server_backend
    d = run_dir(b)
    model = f"{uniq}-m"
    manifest(b, model, f"{uniq}-exp", d)
    assert run_cli(*args(b, "apply", "--auto-approve"))[0] == 0
    out_dir = b.repo / "imported"
    code, out, err = run_cli(*args(b, "import", model, "--out", str(out_dir)))
    assert code == 0, out + err
    assert f"digest: {dir_digest(d)}" in (out_dir / f"{model}.yaml").read_text()
