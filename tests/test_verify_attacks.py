"""Attacks on issue 16's checks (`resolve --download`, `regctl verify`): hostile artifact
names, locks and folders that must not make a check pass, hang or crash it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_sync import args, make_run_dir
from test_verify import SAMPLE, make_download, sha

from regctl.core.digests import DIGEST_TAG
from regctl.core.lock import LOCK_FILE, LockError, parse_lock
from regctl.engine import content
from regctl.engine.resolved import DownloadError, VerifyFailed

from conftest import REPO, Backend, empty_sqlite, write_manifest

CLI = Callable[..., tuple[int, str, str]]


def sqlite_model(tmp_path: Path, run_cli: CLI, files: dict[str, str]) -> tuple[Backend, str]:
    """A model applied to a private sqlite registry (artifacts in tmp_path/mlruns)."""
    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    d = make_run_dir(
        repo / "runs", "run_hmm_20251009_105640", {"model_type": "hmm"}, {"b": 1.0}, files
    )
    write_manifest(
        repo,
        "m",
        "apiVersion: regctl/v1\nkind: RegisteredModel\nname: m\nexperiment: e\n"
        f"versions:\n  - run: {d.name}\n    run_dir: runs/{d.name}\n",
    )
    b = Backend("sqlite", empty_sqlite(tmp_path / "mlflow.db"), repo)
    code, out, err = run_cli(*args(b, "apply", "--auto-approve"))
    assert code == 0, out + err
    run_id = b.client.get_model_version("m", "1").run_id
    (root,) = (tmp_path / "mlruns").glob(f"*/{run_id}/artifacts")
    return b, str(root)


def test_a_newline_in_a_stored_name_cannot_forge_the_digest(
    tmp_path: Path, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tree digest hashes `<sha> <size> <path>\\n` lines: a stored file renamed to
    `a\\n<sha of b> <size of b> b` (b deleted) gives the very same lines, so the download
    matched the record (and a --digest pin) while a and b were both missing from DIR.

    MLflow's local artifact store mangles control characters on download; object stores
    (S3, GCS, Azure) serve any key, which the patch stands in for."""
    from mlflow.store.artifact import local_artifact_repo

    monkeypatch.setattr(local_artifact_repo, "validate_path_is_safe", lambda p: p)
    b, root = sqlite_model(tmp_path, run_cli, {"model.joblib": "w", "a.txt": "A", "b.txt": "B"})
    recorded = b.client.get_model_version("m", "1").tags[DIGEST_TAG]
    art = Path(root)
    (art / "b.txt").unlink()
    (art / "a.txt").rename(art / f"a.txt\n{sha(b'B')} 1 b.txt")
    dest = tmp_path / "dl"
    code, out, err = run_cli(
        *args(b, "resolve", "m/1", "--download", str(dest), "--digest", recorded)
    )
    assert code == 1, out
    assert "unsafe artifact path" in err and "\n" not in err.rstrip("\n")
    assert not dest.exists()


def test_a_control_character_or_backslash_name_is_refused_before_download() -> None:
    """What the lock refuses (safe_relative) the download refuses too, so a download
    always makes a lock `regctl verify DIR` can read."""
    from regctl.engine.download import _local_name

    for bad in ("a\x1b[2Jb", "a\\b", "a\rb", "a\udcffb"):
        with pytest.raises(DownloadError, match="unsafe artifact path"):
            _local_name("m version 1", bad, "")
    assert _local_name("m version 1", "src/ok é.txt", "src") == "ok é.txt"


def _verify_in_subprocess(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regctl", "verify", str(folder), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "controller")},
        timeout=30,
    )


def test_a_lock_that_is_a_fifo_does_not_hang_verify(tmp_path: Path) -> None:
    make_download(tmp_path, SAMPLE)
    (tmp_path / LOCK_FILE).unlink()
    os.mkfifo(tmp_path / LOCK_FILE)
    done = _verify_in_subprocess(tmp_path)  # was: blocked forever in open()
    assert done.returncode == 1 and "not a regular file" in done.stderr, done.stderr


def test_a_lock_that_is_a_symbolic_link_is_not_followed(tmp_path: Path) -> None:
    """A link to /dev/zero read the device until memory ran out; a link to a lock
    elsewhere was believed."""
    folder = tmp_path / "d"
    folder.mkdir()
    make_download(folder, SAMPLE)
    (folder / LOCK_FILE).rename(tmp_path / "elsewhere.json")
    (folder / LOCK_FILE).symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(VerifyFailed, match="symbolic link"):
        content.verify_directory(folder)
    (folder / LOCK_FILE).unlink()
    (folder / LOCK_FILE).symlink_to("/dev/zero")
    with pytest.raises(VerifyFailed, match="symbolic link"):
        content.verify_directory(folder)


def test_a_deeply_nested_folder_is_reported_not_a_crash(tmp_path: Path) -> None:
    """hash_tree recursed once per folder level: 1,200 levels raised RecursionError,
    which the CLI shows as an internal error."""
    make_download(tmp_path, SAMPLE)
    here = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(1200):
            os.mkdir("d", dir_fd=here)
            nxt = os.open("d", os.O_RDONLY, dir_fd=here)
            os.close(here)
            here = nxt
        fd = os.open("planted", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=here)
        os.close(fd)
    finally:
        os.close(here)
    try:
        with pytest.raises(VerifyFailed) as err:
            content.verify_directory(tmp_path)
        assert any(
            line.endswith("/planted: not in the lock (extra file)") for line in err.value.lines
        )
    finally:  # shutil.rmtree (pytest's cleanup) recurses too: remove it bottom-up here
        subprocess.run(["find", str(tmp_path / "d"), "-depth", "-delete"], check=True)


@pytest.mark.parametrize("field", ["digest", "sha256"])
def test_a_trailing_newline_is_not_a_well_formed_digest(tmp_path: Path, field: str) -> None:
    """`^...$` lets `$` match before a final newline: `sha256:<hex>\\n` passed as
    well-formed (a record then said the files changed instead of "malformed")."""
    digest = make_download(tmp_path, SAMPLE)
    assert content.recorded_digest("m", {DIGEST_TAG: digest}) == digest
    with pytest.raises(DownloadError, match="malformed"):
        content.recorded_digest("m", {DIGEST_TAG: digest + "\n"})
    with pytest.raises(DownloadError, match="not sha256:"):
        content.check_pin("m", digest + "\n", None)
    lock = json.loads((tmp_path / LOCK_FILE).read_text())
    if field == "digest":
        lock["digest"] += "\n"
    else:
        lock["files"][0]["sha256"] += "\n"
    with pytest.raises(LockError, match="digits"):
        parse_lock(json.dumps(lock))


def test_a_huge_lock_with_one_repeated_path_is_refused_quickly() -> None:
    """The repeat was found with `paths.count` per path: quadratic (20,000 entries took
    5 s, 200,000 about 10 minutes)."""
    import time

    entry = {"size": 0, "sha256": "0" * 64}
    files = [{"path": f"f{i:07d}", **entry} for i in range(200_000)]
    files += [{"path": "zz", **entry}] * 2
    started = time.monotonic()
    with pytest.raises(LockError, match="lists 'zz' twice"):
        parse_lock(json.dumps({"files": files}))
    assert time.monotonic() - started < 30


def test_a_lock_model_file_must_be_one_of_its_files(tmp_path: Path) -> None:
    """The lock's `model_file` is what inference loads (docs/inference.md reads it from
    the lock), yet nothing checked it: a pinned verify passed with `model_file` pointing
    outside DIR."""
    digest = make_download(tmp_path, SAMPLE)
    lock = json.loads((tmp_path / LOCK_FILE).read_text())
    for bad in ("../../outside/model.txt", "/etc/passwd", "not-listed.txt", 3):
        lock["model_file"] = bad
        (tmp_path / LOCK_FILE).write_text(json.dumps(lock))
        with pytest.raises(VerifyFailed, match="model_file"):
            content.verify_directory(tmp_path, digest)
    lock["model_file"] = "model.txt"
    (tmp_path / LOCK_FILE).write_text(json.dumps(lock))
    assert content.verify_directory(tmp_path, digest).digest == digest


def test_verify_of_a_target_that_is_also_a_folder_here_is_refused(
    tmp_path: Path, run_cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`regctl verify m/1` in CI meant the registry's version; a folder `m/1` (say,
    added in a pull request) with a self-consistent lock made it exit 0 offline instead,
    without ever reading the registry."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m" / "1").mkdir(parents=True)
    make_download(tmp_path / "m" / "1", {"model.txt": b"evil\n"})
    code, out, err = run_cli("--tracking-uri", "http://127.0.0.1:9", "verify", "m/1")
    assert code == 1 and out == "", out
    assert "both a folder here and a model version" in err
    code, out, err = run_cli("verify", "./m/1")  # a folder, plainly
    assert code == 0 and "match its lock" in out, err


def test_record_can_be_pinned_to_the_digest_that_was_checked(tmp_path: Path, run_cli: CLI) -> None:
    """`verify --record` recorded whatever was stored at that moment, refusing --digest:
    files swapped between the person's check and the record were recorded as checked."""
    from regctl.core.digests import FILES_TAG

    b, root = sqlite_model(tmp_path, run_cli, {"model.joblib": "w"})
    checked = b.client.get_model_version("m", "1").tags[DIGEST_TAG]
    b.client.delete_model_version_tag("m", "1", DIGEST_TAG)
    b.client.delete_model_version_tag("m", "1", FILES_TAG)
    (Path(root) / "model.joblib").write_text("W")  # after the check, before the record
    code, _, err = run_cli(*args(b, "verify", "--record", "m/1", "--digest", checked))
    assert code == 1 and "was required (--digest)" in err, err
    assert DIGEST_TAG not in b.client.get_model_version("m", "1").tags
    (Path(root) / "model.joblib").write_text("w")
    code, out, err = run_cli(*args(b, "verify", "--record", "m/1", "--digest", checked))
    assert code == 0 and out.startswith(f"recorded {checked}"), err


def test_a_lock_larger_than_the_cap_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    from regctl.adapters.localtree import TreeError, read_regular

    lock = tmp_path / "regctl-resolved.json"
    lock.write_bytes(b" " * 2048)
    assert len(read_regular(lock, limit=4096)) == 2048
    with pytest.raises(TreeError, match="larger than"):
        read_regular(lock, limit=1024)
