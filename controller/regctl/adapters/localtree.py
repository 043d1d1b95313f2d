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

from regctl.core.runs import file_kind

__all__ = ["Hashed", "TreeError", "hash_file", "hash_tree", "read_regular"]

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


def _open_regular(path: str | os.PathLike[str]) -> int:
    """A descriptor on a regular file that did not follow a link (and did not block on a
    FIFO); TreeError otherwise."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        why = "a symbolic link (not followed)" if exc.errno == errno.ELOOP else exc.strerror
        raise TreeError(exc.errno, f"{os.fspath(path)}: {why}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise TreeError(0, f"{os.fspath(path)}: {_kind(mode)}, not a regular file")
    return fd


def read_regular(path: str | os.PathLike[str], limit: int = 1 << 28) -> bytes:
    """The bytes of a regular file (a lock), never through a link, a FIFO or a device,
    at most `limit` bytes (256 MiB: the lock of some 1.5 million files): FileNotFoundError
    when it is absent, TreeError when it is not a regular file or is larger."""
    try:
        fd = _open_regular(path)
    except TreeError as exc:
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(exc.errno, str(exc)) from None
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TreeError(0, f"{os.fspath(path)}: larger than {limit >> 20} MiB")
    return data


def hash_file(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size, sha256 hex) of a regular file, read now through a descriptor that did not
    follow a link; TreeError otherwise."""
    fd = _open_regular(path)
    try:
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
    _walk(base, skip, found, others)
    with ThreadPoolExecutor(_WORKERS) as pool:
        hashed = list(pool.map(lambda rel: hash_file(base / rel), found))
    files = tuple(sorted((rel, size, sha) for rel, (size, sha) in zip(found, hashed, strict=True)))
    return Hashed(files, tuple(sorted(others)))


def _walk(base: Path, skip: set[str], found: list[str], others: list[tuple[str, str]]) -> None:
    """Folder by folder with a stack, not recursion: a folder nested deeper than Python's
    recursion limit is walked like any other."""
    pending = [""]
    while pending:
        prefix = pending.pop()
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
                pending.append(rel + "/")
            else:
                others.append((rel, _kind(mode)))


def _kind(mode: int) -> str:
    return "not a regular file" if stat.S_ISREG(mode) else f"a {file_kind(mode)}"
