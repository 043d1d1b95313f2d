"""Verified bytes for inference (issue 16): `resolve --download` checks the registry's
content record, `regctl verify DIR` re-hashes a download against its lock (offline),
`regctl verify NAME/VERSION` checks the stored artifacts, `--record` records a digest.

The offline half builds folders and locks by hand; the server half applies a run
directory to the real test server, then changes a stored artifact on the server's disk
(`<server root>/mlartifacts/.../<run id>/artifacts/...`), as anyone with access to the
artifact store could.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_sync import args, make_run_dir

from regctl.core.digests import DIGEST_TAG, FILES_TAG, digest_of, files_record
from regctl.core.lock import LOCK_FILE, LockError, lock_fields, parse_lock
from regctl.engine import content
from regctl.engine.resolved import ContentMismatch, VerifyFailed

from conftest import REPO, Backend, Server, write_manifest

CLI = Callable[..., tuple[int, str, str]]
FILES = {"model.joblib": "weights", "scaler.joblib": "scale", "notes/readme.txt": "hi"}


# ------------------------------------------------------------------------- offline: DIR


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def make_download(folder: Path, files: dict[str, bytes], verified: bool = True) -> str:
    """A folder as `resolve --download` leaves it: the files and a lock; its digest."""
    for rel, body in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(body)
    tree = tuple(sorted((rel, len(b), sha(b)) for rel, b in files.items()))
    lock = {"kind": "Resolved", "model": "m", "version": 3, **lock_fields(tree, verified)}
    (folder / LOCK_FILE).write_text(json.dumps(lock, indent=2))
    return digest_of(tree)


SAMPLE = {"model.txt": b"tree 1\n", "sub/scaler.joblib": b"\x00\x01" * 100, "empty": b""}


def test_verify_dir_unchanged(tmp_path: Path) -> None:
    digest = make_download(tmp_path, SAMPLE)
    got = content.verify_directory(tmp_path)
    assert (got.digest, got.files, got.bytes) == (digest, 3, 207)
    assert "match its lock" in str(got) and "matched the registry's record" in str(got)
    assert content.verify_directory(tmp_path, digest).digest == digest  # pinned


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: (d / "model.txt").write_bytes(b"tree 2\n"), "model.txt: sha256 "),
        (lambda d: (d / "sub" / "scaler.joblib").unlink(), "sub/scaler.joblib: missing"),
        (lambda d: (d / "new.py").write_text("x"), "new.py: not in the lock (extra file)"),
        (lambda d: (d / "empty").write_bytes(b"1"), "empty: sha256 "),
        (
            lambda d: ((d / "model.txt").unlink(), (d / "model.txt").symlink_to("/etc/hostname")),
            "model.txt: a symbolic link, not a regular file",
        ),
    ],
)
def test_verify_dir_names_each_changed_missing_or_extra_file(
    tmp_path: Path, change: Callable[[Path], object], named: str
) -> None:
    make_download(tmp_path, SAMPLE)
    change(tmp_path)
    with pytest.raises(VerifyFailed) as err:
        content.verify_directory(tmp_path)
    count = "2 files differ" if "symbolic" in named else "1 file differs"  # gone + link
    assert err.value.lines[0] == f"{tmp_path}: {count} from its lock"
    assert any(line.startswith(named) for line in err.value.lines[1:]), err.value.lines


def test_verify_dir_lists_every_file_and_counts(tmp_path: Path) -> None:
    make_download(tmp_path, SAMPLE)
    (tmp_path / "model.txt").write_bytes(b"x")
    (tmp_path / "empty").unlink()
    (tmp_path / "extra").write_text("y")
    with pytest.raises(VerifyFailed) as err:
        content.verify_directory(tmp_path)
    assert err.value.lines[0] == f"{tmp_path}: 3 files differ from its lock"
    assert [line.split(":")[0] for line in err.value.lines[1:]] == ["empty", "extra", "model.txt"]


def test_a_pin_holds_against_a_rewritten_lock(tmp_path: Path) -> None:
    pinned = make_download(tmp_path, SAMPLE)
    make_download(tmp_path, {**SAMPLE, "model.txt": b"evil\n"})  # files and lock rewritten
    assert content.verify_directory(tmp_path).files == 3  # the lock alone is fooled
    with pytest.raises(VerifyFailed, match=r"but sha256:.* was required"):
        content.verify_directory(tmp_path, pinned)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda lock: lock.update(digest="sha256:" + "0" * 64), "digest"),
        (lambda lock: lock.update(digest="md5:1"), "digest"),
        (lambda lock: lock["files"][0].update(path="../../etc/passwd"), "files[0].path"),
        (lambda lock: lock["files"][0].update(path="/etc/passwd"), "files[0].path"),
        (lambda lock: lock["files"][0].update(path=LOCK_FILE), "files[0].path"),
        (lambda lock: lock["files"][0].update(size=-1), "files[0].size"),
        (lambda lock: lock["files"][0].update(size=True), "files[0].size"),
        (lambda lock: lock["files"][1].update(sha256="A" * 64), "files[1].sha256"),
        (lambda lock: lock["files"].append(dict(lock["files"][0])), "files"),
        (lambda lock: lock.update(files="x"), "files"),
        (lambda lock: lock.pop("verified"), "verified"),
    ],
)
def test_a_lock_is_hostile_input(
    tmp_path: Path, edit: Callable[[dict], object], field: str
) -> None:
    make_download(tmp_path, SAMPLE)
    lock = json.loads((tmp_path / LOCK_FILE).read_text())
    edit(lock)
    text = json.dumps(lock)
    with pytest.raises(LockError) as err:
        parse_lock(text)
    assert err.value.field == field
    (tmp_path / LOCK_FILE).write_text(text)
    with pytest.raises(VerifyFailed, match=re.escape(f"{LOCK_FILE}: {field}: ")):
        content.verify_directory(tmp_path)


def test_a_lock_from_before_digests_and_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(VerifyFailed, match=f"no {LOCK_FILE}"):
        content.verify_directory(tmp_path)
    old = {"files": [{"path": "model.txt", "size": 1}], "model": "m", "version": 1}
    (tmp_path / LOCK_FILE).write_text(json.dumps(old))
    with pytest.raises(VerifyFailed, match="before content digests; download again"):
        content.verify_directory(tmp_path)
    (tmp_path / LOCK_FILE).write_text("{not json")
    with pytest.raises(VerifyFailed, match="not valid JSON"):
        content.verify_directory(tmp_path)


def test_cli_verify_dir_is_offline_and_imports_no_mlflow(tmp_path: Path) -> None:
    """`regctl verify DIR` in a fresh interpreter, with an unreachable tracking URI."""
    folder = tmp_path / "model"
    folder.mkdir()
    make_download(folder, SAMPLE)
    probe = (
        "import sys; from regctl.cli import main; code = main(sys.argv[1:]); "
        "assert 'mlflow' not in sys.modules and 'git' not in sys.modules, 'imported'; "
        "sys.exit(code)"
    )
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "PYTHONPATH": str(REPO / "controller"),
    }

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", probe, *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    done = run("verify", str(folder))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{folder}: 3 files, 207 bytes match its lock (sha256:")
    (folder / "sub" / "scaler.joblib").write_bytes(b"changed")
    done = run("verify", str(folder))
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"error: {folder}: 1 file differs from its lock"
    assert lines[1].startswith("error: sub/scaler.joblib: sha256 ")
    assert len(lines) == 2


def test_regctl_verify_api(tmp_path: Path) -> None:
    import regctl

    digest = make_download(tmp_path, SAMPLE, verified=False)
    got = regctl.verify(tmp_path)
    assert got.digest == digest and "no content record at download" in str(got)
    with pytest.raises(VerifyFailed):
        regctl.verify(tmp_path, digest="sha256:" + "1" * 64)


def test_ten_thousand_files_keep_the_digest_only() -> None:
    """A version of 10,000 files: the list does not fit one tag, the digest does; a
    mismatch then names the digests (the record keeps no per-file list)."""
    tree = tuple((f"shard/{i:05d}.bin", i, sha(str(i).encode())) for i in range(10_000))
    assert files_record(tree) is None
    tags = {DIGEST_TAG: digest_of(tree)}
    assert content.check_record("m version 1", tags, tree) is True
    changed = ((tree[0][0], 0, sha(b"evil")), *tree[1:])
    with pytest.raises(ContentMismatch) as err:
        content.check_record("m version 1", tags, changed)
    assert len(err.value.lines) == 1 and "keeps no per-file list" in err.value.lines[0]
    assert digest_of(changed) in err.value.lines[0] and tags[DIGEST_TAG] in err.value.lines[0]


def test_an_edited_files_list_is_not_believed() -> None:
    tree = (("a", 1, sha(b"a")), ("b", 1, sha(b"b")))
    listed = files_record((("a", 1, sha(b"a")), ("b", 1, sha(b"x"))))
    assert listed is not None
    tags = {DIGEST_TAG: digest_of(tree), FILES_TAG: listed}
    changed = (("a", 1, sha(b"A")), tree[1])
    with pytest.raises(ContentMismatch, match="does not match the digest, so it is not believed"):
        content.check_record("m version 1", tags, changed)


# ------------------------------------------------------------------- against the server


def applied_model(b: Backend, uniq: str, run_cli: CLI) -> tuple[str, Path]:
    d = make_run_dir(
        b.repo / "runs",
        "run_hmm_20251009_105640",
        {"model_type": "hmm", "dataset": "d"},
        {"bic_final": 1.0},
        FILES,
    )
    model = f"{uniq}-m"
    write_manifest(
        b.repo,
        model,
        f"apiVersion: regctl/v1\nkind: RegisteredModel\nname: {model}\nexperiment: {uniq}-e\n"
        f"versions:\n  - run: {d.name}\n    run_dir: {d.relative_to(b.repo).as_posix()}\n"
        "    aliases: [Staging]\n",
    )
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 0, out + err
    return model, d


def stored(server: Server, b: Backend, model: str, rel: str) -> Path:
    run_id = b.client.get_model_version(model, "1").run_id
    found = list((server.root / "mlartifacts").glob(f"*/{run_id}/artifacts/{rel}"))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.server
def test_a_changed_stored_artifact_stops_the_download(
    mlflow_server: Server, server_backend: Backend, uniq: str, run_cli: CLI, tmp_path: Path
) -> None:
    """Acceptance 1: a stored artifact changed on disk makes `resolve --download` exit 1
    with no DIR; a changed downloaded file makes `verify DIR` exit 1 naming it; when
    nothing changed, both exit 0."""
    b = server_backend
    model, d = applied_model(b, uniq, run_cli)
    recorded = b.client.get_model_version(model, "1").tags[DIGEST_TAG]

    dest = tmp_path / "ok"
    code, out, err = run_cli(*args(b, "resolve", f"{model}@Staging", "--download", str(dest)))
    assert code == 0 and err == "", err
    assert f"content: {recorded} (matches the registry's record)" in out
    lock = json.loads((dest / LOCK_FILE).read_text())
    assert lock["digest"] == recorded and lock["verified"] is True
    want = {rel: sha(p.read_bytes()) for rel, p in _files(d).items()}
    assert {f["path"]: f["sha256"] for f in lock["files"]} == want
    code, out, err = run_cli("verify", str(dest))
    assert code == 0 and out.startswith(f"{dest}: 5 files, ") and recorded in out, err
    code, out, err = run_cli(*args(b, "verify", f"{model}@Staging"))
    assert code == 0 and "match the registry's record" in out, err

    (dest / "model.joblib").write_bytes(b"swapped")
    code, out, err = run_cli("verify", str(dest))
    assert code == 1 and out == ""
    assert (
        f"error: model.joblib: sha256 {sha(b'swapped')} found, {want['model.joblib']} recorded"
        in err
    )

    artifact = stored(mlflow_server, b, model, "model.joblib")
    artifact.write_bytes(b"weightz")  # same size: only the digest can tell
    bad = tmp_path / "bad"
    code, out, err = run_cli(*args(b, "resolve", f"{model}@Staging", "--download", str(bad)))
    assert code == 1 and out == ""
    assert not bad.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "ok",
        "repo",
    ]  # no partial
    lines = err.splitlines()
    assert lines[0].startswith(f"error: {model} version 1: the files are not the ones the registry")
    assert recorded in lines[0] and "downloaded sha256:" in lines[0]
    assert lines[1] == (
        f"error: model.joblib: sha256 {sha(b'weightz')} found, {want['model.joblib']} recorded"
    )
    code, _, err = run_cli(*args(b, "verify", f"{model}/1"))
    assert code == 1 and "model.joblib: sha256" in err
    # the pin: --digest of another digest fails even when the record matches
    artifact.write_bytes(b"weights")
    code, _, err = run_cli(
        *args(b, "resolve", f"{model}/1", "--download", str(bad), "--digest", "sha256:" + "0" * 64)
    )
    assert code == 1 and "was required (--digest)" in err and not bad.exists()
    code, _, err = run_cli(
        *args(b, "resolve", f"{model}/1", "--download", str(bad), "--digest", recorded)
    )
    assert code == 0, err


def _files(d: Path) -> dict[str, Path]:
    return {p.relative_to(d).as_posix(): p for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.server
def test_record_a_version_registered_before_digests(
    server_backend: Backend, uniq: str, run_cli: CLI, tmp_path: Path
) -> None:
    b = server_backend
    model, _ = applied_model(b, uniq, run_cli)
    recorded = b.client.get_model_version(model, "1").tags[DIGEST_TAG]
    b.client.delete_model_version_tag(model, "1", DIGEST_TAG)  # as before issue 16
    b.client.delete_model_version_tag(model, "1", FILES_TAG)

    dest = tmp_path / "d"
    code, out, err = run_cli(*args(b, "resolve", f"{model}/1", "--download", str(dest)))
    assert code == 0 and "(no record)" in out
    assert err.startswith(f"warning: {model} version 1 has no content record")
    assert f"`regctl verify --record {model}/1`" in err
    assert json.loads((dest / LOCK_FILE).read_text())["verified"] is False
    import regctl
    from regctl.engine.resolved import UnverifiedContent

    resolved = regctl.resolve(f"{model}/1", b.uri, repo=b.repo)
    with pytest.warns(UnverifiedContent, match="has no content record"):
        resolved.download(tmp_path / "api")

    code, _, err = run_cli(*args(b, "verify", f"{model}@Staging"))
    assert code == 1 and "has no content record: its stored files (5 files" in err
    code, _, err = run_cli(*args(b, "verify", "--record", f"{model}@Staging"))
    assert code == 1 and "takes NAME/VERSION" in err
    assert DIGEST_TAG not in b.client.get_model_version(model, "1").tags

    code, out, err = run_cli(*args(b, "verify", "--record", f"{model}/1"))
    assert code == 0, err
    assert out.startswith(f"recorded {recorded} for {model} version 1 (5 files")
    tags = b.client.get_model_version(model, "1").tags
    assert tags[DIGEST_TAG] == recorded and FILES_TAG in tags
    code, _, err = run_cli(*args(b, "verify", "--record", f"{model}/1"))  # lease released
    assert code == 1 and "already records" in err
    code, out, _ = run_cli(*args(b, "verify", f"{model}/1"))
    assert code == 0 and recorded in out
    assert run_cli(*args(b, "diff", "--exit-code"))[0] == 0  # apply's record is the same


@pytest.mark.server
def test_a_malformed_record_stops_before_any_file(
    server_backend: Backend, uniq: str, run_cli: CLI, tmp_path: Path
) -> None:
    b = server_backend
    model, _ = applied_model(b, uniq, run_cli)
    b.client.set_model_version_tag(model, "1", DIGEST_TAG, "sha256:\x1b[2Jnot-hex")
    dest = tmp_path / "d"
    code, _, err = run_cli(*args(b, "resolve", f"{model}/1", "--download", str(dest)))
    assert code == 1 and "regctl.digest tag is malformed" in err and "\x1b" not in err
    assert not dest.exists() and [p.name for p in tmp_path.iterdir()] == ["repo"]


def test_a_version_of_ten_thousand_files(tmp_path: Path, run_cli: CLI) -> None:
    """Registered, recorded (the digest alone: the list does not fit a tag), downloaded
    and verified; a changed stored file is then caught by the digest."""
    from conftest import empty_sqlite

    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    d = make_run_dir(
        repo / "runs",
        "run_hmm_20251009_105640",
        {"model_type": "hmm"},
        {"bic_final": 1.0},
        {"model.joblib": "w"},
    )
    for i in range(10_000):
        shard = d / f"shard/{i // 1000:02d}/{i:05d}.bin"
        shard.parent.mkdir(parents=True, exist_ok=True)
        shard.write_bytes(str(i).encode())
    write_manifest(
        repo,
        "big",
        "apiVersion: regctl/v1\nkind: RegisteredModel\nname: big\nexperiment: big-e\n"
        f"versions:\n  - run: {d.name}\n    run_dir: runs/{d.name}\n",
    )
    b = Backend("sqlite", empty_sqlite(tmp_path / "mlflow.db"), repo)
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 0, out + err
    tags = b.client.get_model_version("big", "1").tags
    assert DIGEST_TAG in tags and FILES_TAG not in tags
    dest = tmp_path / "dl"
    code, out, err = run_cli(*args(b, "resolve", "big/1", "--download", str(dest)))
    assert code == 0 and f"content: {tags[DIGEST_TAG]} (matches" in out, err
    assert len(json.loads((dest / LOCK_FILE).read_text())["files"]) == 10_003
    assert run_cli("verify", str(dest))[0] == 0

    run_id = b.client.get_model_version("big", "1").run_id
    (shard,) = (tmp_path / "mlruns").glob(f"*/{run_id}/artifacts/shard/07/07777.bin")
    shard.write_bytes(b"7776")
    code, _, err = run_cli(*args(b, "verify", "big/1"))
    assert code == 1 and "the record keeps no per-file list" in err and tags[DIGEST_TAG] in err
