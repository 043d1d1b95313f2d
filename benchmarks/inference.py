"""Verified bytes for inference (issue 16): what the content digests cost.

    python benchmarks/inference.py [--quick] [--repeat N] [--keep]

Prints a table (markdown, pasteable into docs/performance.md) of three rows:

- 5a-h: the share of hashing in the first `regctl sync` of 100 MB (row 5a's shape: 20
  run dirs x 25 files x 200 KB, a default 4-worker `mlflow server` on loopback). sync
  hashes every file as it reads it; the figure is the walk-and-hash of the same dirs
  (`regctl.adapters.rundir.read_run_dir`, in process, page cache warm as for sync)
  divided by the whole sync's wall time. Target: under 5%.
- 16a: `Resolved.download` of a 100 MB version (10 files x 10 MB), verified (every file
  hashed, the tree checked against the registry's record) against the same download with
  the hashing and the check replaced by no-ops. In process, alternated, median of N.
  Target: at most 1.1x.
- 16b: `regctl verify DIR` of 1 GB (8 files x 128 MB), the whole command as a user runs
  it (interpreter start-up included), page cache warm. Target: at least 500 MB/s.
- 16c (info): the same 1 GB as 10,000 files of 100 KB: the per-file cost.

It exits 0 even when a target fails: it is a report.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness import Row, base_env, median, regctl_command, run, spread, start_server, table
from seed import run_dirs, sync_manifests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "controller"))

MB = 1e6


def _fill(folder: Path, files: int, size: int) -> None:
    chunk = os.urandom(1 << 20)
    for i in range(files):
        path = folder / f"shard/{i // 1000:02d}/{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            left = size
            while left > 0:
                out.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
            out.write(i.to_bytes(4, "big"))  # no two files alike


def _lock(folder: Path) -> None:
    from regctl.adapters.localtree import hash_tree
    from regctl.core.lock import LOCK_FILE, lock_fields
    from regctl.render.resolve import dumps

    tree = hash_tree(folder).files
    (folder / LOCK_FILE).write_text(
        dumps({"model": "bench", "version": 1, **lock_fields(tree, True)})
    )


def row_sync_hashing(work: Path, repeat: int, quick: bool) -> Row:
    from regctl.adapters.rundir import read_run_dir

    dirs_n, files_n, size = (4, 5, 200 * 1024) if quick else (20, 25, 200 * 1024)
    server = start_server(work, f"sqlite:///{work / 'sync.db'}", default_workers=True)
    shares, syncs, hashes = [], [], []
    try:
        for rnd in range(repeat):
            repo = work / f"sync-{rnd}"
            dirs = run_dirs(repo / "runs" / "BENCH", dirs_n, files_n, size)
            sync_manifests(repo, f"bench-hash-{rnd}", dirs)
            t0 = time.perf_counter()
            for d in dirs:
                read_run_dir(d)
            hashed = time.perf_counter() - t0
            argv = [*regctl_command(), "--tracking-uri", server.url, "--repo", str(repo), "sync"]
            synced = run(argv, env=base_env()).wall
            shares.append(100 * hashed / synced)
            syncs.append(synced)
            hashes.append(hashed)
    finally:
        server.stop()
    total = dirs_n * files_n * size / MB
    share = median(shares)
    return Row(
        "5a-h",
        f"hashing in the first `regctl sync` of {total:.0f} MB ({dirs_n} dirs x {files_n} files)",
        f"{median(hashes):.2f} s of {median(syncs):.1f} s = {share:.1f}%",
        "",
        "",
        "< 5%",
        share < 5,
        [
            f"{repeat} rounds, fresh dirs and experiments each; hash {spread(hashes)} s, "
            f"sync {spread(syncs)} s; the walk-and-hash includes reading the two JSON files"
        ],
    )


def row_download(work: Path, repeat: int, quick: bool) -> Row:
    import regctl
    from regctl.engine import download as dl

    files_n, size = (4, 5 * 1024 * 1024) if quick else (10, 10 * 1024 * 1024)
    server = start_server(work, f"sqlite:///{work / 'dl.db'}", default_workers=True)
    try:
        repo = work / "dl"
        (run_dir,) = run_dirs(repo / "runs" / "BENCH", 1, files_n + 2, size)
        sync_manifests(repo, "bench-dl", [run_dir])
        argv = [*regctl_command(), "--tracking-uri", server.url, "--repo", str(repo), "apply"]
        run([*argv, "--auto-approve"], env=base_env())
        resolved = regctl.resolve(f"sync-{run_dir.name}/1", server.url, repo=repo)
        assert resolved.content_digest, "apply recorded no digest"
        real_hash, real_check = dl.hash_file, dl.check_record

        def unverified_hash(path: str | os.PathLike[str]) -> tuple[int, str]:
            return os.path.getsize(path), "0" * 64

        def timed(verified: bool) -> Callable[[], float]:
            def go() -> float:
                dl.hash_file = real_hash if verified else unverified_hash  # type: ignore[assignment]
                dl.check_record = real_check if verified else (lambda *a: False)  # type: ignore[assignment]
                dest = Path(tempfile.mkdtemp(dir=work)) / "m"
                try:
                    t0 = time.perf_counter()
                    resolved.download(dest)
                    return time.perf_counter() - t0
                finally:
                    shutil.rmtree(dest.parent)
                    dl.hash_file, dl.check_record = real_hash, real_check  # type: ignore[assignment]

            return go

        import warnings

        warnings.simplefilter("ignore")
        timed(True)()  # not measured: warms the server and the page cache
        ver: list[float] = []
        unv: list[float] = []
        for i in range(repeat):
            for verified in (True, False) if i % 2 == 0 else (False, True):
                (ver if verified else unv).append(timed(verified)())
    finally:
        server.stop()
    ratio = median(ver) / median(unv)
    total = files_n * size / MB + 0.001
    return Row(
        "16a",
        f"`resolve --download` of {total:.0f} MB ({files_n} files), verified vs unverified",
        f"{median(ver):.2f} s",
        f"{median(unv):.2f} s",
        f"{ratio:.2f}x",
        "<= 1.1x",
        ratio <= 1.1,
        [f"{repeat} of each, alternated; verified {spread(ver)} s, unverified {spread(unv)} s"],
    )


def row_verify(work: Path, repeat: int, quick: bool, files_n: int, label: str) -> Row:
    total = (256 if quick else 1024) * 1024 * 1024
    folder = work / f"verify-{files_n}"
    folder.mkdir()
    _fill(folder, files_n, total // files_n)
    _lock(folder)
    argv = [*regctl_command(), "verify", str(folder)]
    run(argv, env=base_env())  # not measured: the page cache
    walls = [run(argv, env=base_env()).wall for _ in range(repeat)]
    size = sum(p.stat().st_size for p in folder.rglob("*.bin"))
    rate = size / MB / median(walls)
    shutil.rmtree(folder)
    return Row(
        label,
        f"`regctl verify DIR` of {size / 1e9:.2f} GB in {files_n} files (whole command)",
        f"{rate:.0f} MB/s",
        "",
        "",
        ">= 500 MB/s" if label == "16b" else "info",
        rate >= 500 if label == "16b" else None,
        [f"{median(walls):.2f} s median of {repeat} ({spread(walls)} s), page cache warm"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--rows", default="16b,16c,16a,5a-h", help="which rows, comma-separated")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="regctl-bench-inference-"))
    many = 10_000 if not args.quick else 1000
    makers: dict[str, Callable[[], Row]] = {
        "16b": lambda: row_verify(work, args.repeat, args.quick, 8, "16b"),
        "16c": lambda: row_verify(work, args.repeat, args.quick, many, "16c"),
        "16a": lambda: row_download(work, args.repeat, args.quick),
        "5a-h": lambda: row_sync_hashing(work, min(args.repeat, 3), args.quick),
    }
    try:
        rows = [makers[name]() for name in args.rows.split(",")]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    print(f"\nmachine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
