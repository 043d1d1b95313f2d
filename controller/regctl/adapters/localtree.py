"""Hash the files of a local folder: a download being checked, or one `regctl verify DIR`
re-hashes. Server-free and mlflow-free, so `regctl verify DIR` works offline.

Like the run-directory walk (`regctl.adapters.rundir`), it never follows a symbolic link
and opens nothing but regular files (`O_NOFOLLOW`, checked again with `fstat` on the
open descriptor): a link or FIFO planted in a downloaded folder is reported as such, not
hashed through. The size reported is that of the bytes hashed. Files are hashed by a
few threads (hashlib releases the GIL on large buffers), so a folder of many files uses
both cores of a small machine.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["Hashed", "TreeError", "hash_file", "hash_tree"]

_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK: Final = 1 << 22
_WORKERS: Final = max(1, min(4, os.cpu_count() or 1))


class TreeError(OSError):
    """A file that cannot be hashed (gone, unreadable, not a regular file)."""


@dataclass(frozen=True, slots=True)
class Hashed:
    """A folder's regular files as (relative POSIX path, size, sha256 hex), sorted, and
    every other entry (link, FIFO, socket, device) as (path, what it is)."""

    files: tuple[tuple[str, int, str], ...]
    others: tuple[tuple[str, str], ...]

    @property
    def bytes(self) -> int:
        return sum(size for _, size, _ in self.files)


def hash_file(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size, sha256 hex) of a regular file, read now through a descriptor that did not
    follow a link; TreeError otherwise."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        why = "a symbolic link (not followed)" if exc.errno == errno.ELOOP else exc.strerror
        raise TreeError(exc.errno, f"{os.fspath(path)}: {why}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise TreeError(0, f"{os.fspath(path)}: {_kind(mode)}, not a regular file")
        h = hashlib.sha256()
        size = 0
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := os.readv(fd, [buf]):
            h.update(view[:n])
            size += n
        return size, h.hexdigest()
    finally:
        os.close(fd)


def hash_tree(root: str | os.PathLike[str], *, exclude: Iterable[str] = ()) -> Hashed:
    """Every entry under `root` (relative paths in `exclude` left out)."""
    skip = set(exclude)
    found: list[str] = []
    others: list[tuple[str, str]] = []
    base = Path(root)
    _walk(base, "", skip, found, others)
    with ThreadPoolExecutor(_WORKERS) as pool:
        hashed = list(pool.map(lambda rel: hash_file(base / rel), found))
    files = tuple(sorted((rel, size, sha) for rel, (size, sha) in zip(found, hashed, strict=True)))
    return Hashed(files, tuple(sorted(others)))


def _walk(
    base: Path, prefix: str, skip: set[str], found: list[str], others: list[tuple[str, str]]
) -> None:
    with os.scandir(base / prefix if prefix else base) as entries:
        listed = sorted(entries, key=lambda e: e.name)
    for entry in listed:
        rel = prefix + entry.name
        if rel in skip:
            continue
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISREG(mode):
            found.append(rel)
        elif stat.S_ISDIR(mode):
            _walk(base, rel + "/", skip, found, others)
        else:
            others.append((rel, _kind(mode)))


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"
