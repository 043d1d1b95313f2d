"""Run directory -> RunRecord: the walk and the file reads behind it.

This is the reader behind `regctl sync` and behind policy checks of runs that are not
logged yet (SPEC section 3). It is server-free: it reads files, never imports mlflow and
never touches the network. It lists and hashes the files and parses the JSON ones; the
params and metrics are derived from the parsed values by `regctl.core.runschema`, per
the metadata schema, and the problems of both are reported together.

It never follows a symbolic link and never opens anything but a regular file: the walk
opens each directory with `O_NOFOLLOW | O_DIRECTORY` relative to its parent's descriptor
and lists it with `os.scandir(fd)`, so a link swapped in mid-walk cannot lead outside the
run directory. That makes the module POSIX-only (Linux and macOS), which is where
training output and CI live; paths are handled with `posixpath` on purpose, because
`run_metadata.json` records paths of a POSIX training box, not of this machine.

Decisions taken where SPEC section 3 is silent (each is repeated where it is made; the
derivation's own are listed in `regctl.core.runschema`):

- `run_metadata.json` and `diagnostics.json` are optional but, when present, must be
  regular files holding JSON objects, like the two required files.
- Duplicate keys in a JSON file are an error: params are write-once and a duplicate key
  makes the value depend on the parser.
- Names that cannot travel as artifact paths are skipped and reported: newlines and other
  control characters, backslashes (a separator on Windows), bytes that are not UTF-8.
  `Skipped.rel_path` is escaped for display, so it may differ from the bytes on disk.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, Final

from regctl.core.runs import (
    DIAGNOSTICS,
    METRICS,
    PIPELINE_CONFIG,
    RUN_METADATA,
    Findings,
    RunFile,
    RunRecord,
    Skipped,
    artifact_name_problem,
    file_kind,
    json_type,
    printable,
    run_record,
)
from regctl.core.runschema import derive_metrics, derive_params, reads_diagnostics
from regctl.errors import InputError, Location, Problem

__all__ = ["open_run_file", "read_run_dir"]

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO that slipped past the lstat check must not wait for a writer.
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_HASH_CHUNK: Final = 1 << 20


class _Refused(Exception):
    """An entry that is not opened: the reason reads after its name."""


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


# --------------------------------------------------------------------------- public API


def read_run_dir(path: str | os.PathLike[str], *, display: str | None = None) -> RunRecord:
    """Read one run directory into a RunRecord, without following any symbolic link.

    `display` is the path as the user wrote it (e.g. a manifest's `run_dir`) and is used
    in error locations; it defaults to `path`. Raises InputError, carrying every problem
    found, when the directory is missing, not a directory or itself a symbolic link, or
    when `pipeline_config.json` or `metrics.json` is missing, not a regular file, not
    valid JSON (with line and column) or not a JSON object, or when a param is invalid.
    """
    given = os.fspath(path)
    shown = display if display is not None else given
    # abspath + normpath first: lstat("link/") would follow the link because of the slash.
    absolute = posixpath.normpath(posixpath.abspath(given))
    try:
        st = os.lstat(absolute)
    except FileNotFoundError:
        raise _error(Location(shown), "run directory does not exist") from None
    except OSError as exc:
        raise _error(Location(shown), f"cannot read run directory: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise _error(Location(shown), "run directory is a symbolic link (not followed)")
    if not stat.S_ISDIR(st.st_mode):
        raise _error(
            Location(shown), f"run directory is a {file_kind(st.st_mode)}, not a directory"
        )
    run_dir = posixpath.realpath(absolute)
    run_name = posixpath.basename(run_dir)
    name_problem = artifact_name_problem(run_name)
    if name_problem is not None:
        raise _error(Location(shown), f"run directory {name_problem}")
    try:
        root_fd = os.open(run_dir, _DIR_FLAGS)
    except OSError as exc:
        raise _error(Location(shown), f"cannot read run directory: {exc.strerror}") from None
    try:
        return _Reader(root_fd, run_dir, run_name, shown).read()
    finally:
        os.close(root_fd)


def open_run_file(record: RunRecord, rel_path: str) -> BinaryIO:
    """Open a regular file of the run directory for reading, in binary mode.

    No component is followed if it is a symbolic link; each one is opened relative to
    its parent's descriptor. Refuses (InputError) paths that leave the run directory
    (absolute, `..`, empty components) and anything that is not a regular file. A FIFO
    is never waited on: the file is opened non-blocking and checked with fstat.
    """
    where = Location(f"{record.run_dir}/{rel_path}")  # not join: rel_path may be absolute
    parts = rel_path.split("/")
    if (
        not rel_path
        or "\x00" in rel_path
        or posixpath.isabs(rel_path)
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise _error(where, "not a relative path inside the run directory")
    try:
        with _open_dir_path(record.run_dir, parts[:-1]) as dir_fd:
            fd = _open_regular_at(dir_fd, parts[-1])
    except _Refused as exc:
        raise _error(where, str(exc)) from None
    except OSError as exc:
        raise _error(where, f"cannot open: {exc.strerror}") from None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


# ----------------------------------------------------------------------------- reading


class _Reader(Findings):
    """One read of one run directory: its I/O (walk, hashes, JSON files) on top of the
    findings that the derivation in `regctl.core.runschema` adds to as well."""

    def __init__(self, root_fd: int, run_dir: str, run_name: str, shown: str) -> None:
        super().__init__(run_dir, run_name, shown)
        self.root_fd = root_fd

    def read(self) -> RunRecord:
        files: list[RunFile] = []
        skipped: list[Skipped] = []
        self.walk(self.root_fd, "", files, skipped)
        config = self.read_json(PIPELINE_CONFIG, required=True)
        raw_metrics = self.read_json(METRICS, required=True)
        run_meta = self.read_json(RUN_METADATA, required=False)
        present = {f.rel_path for f in files}
        params: dict[str, str] = {}
        if config is not None:
            params = derive_params(self, config, run_meta or {}, present)
        metrics: dict[str, float] = {}
        if raw_metrics is not None:
            diagnostics = None
            if reads_diagnostics(params):
                diagnostics = self.read_json(DIAGNOSTICS, required=False)
            metrics = derive_metrics(self, raw_metrics, diagnostics or {})
        return run_record(self, params, metrics, files, skipped)

    def walk(self, dir_fd: int, prefix: str, files: list[RunFile], skipped: list[Skipped]) -> None:
        with os.scandir(dir_fd) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
        for entry in ordered:
            rel = prefix + entry.name
            reason = artifact_name_problem(entry.name)
            if reason is not None:
                skipped.append(Skipped(printable(rel), reason))
                continue
            try:
                # follow_symlinks=False: fstatat(AT_SYMLINK_NOFOLLOW), the link itself.
                info = entry.stat(follow_symlinks=False)
            except OSError as exc:
                self.problem(self.where(rel), "", f"cannot read: {exc.strerror}")
                continue
            mode = info.st_mode
            if stat.S_ISREG(mode):
                hashed = self.hash_file(dir_fd, entry.name, rel)
                if hashed is not None:
                    files.append(RunFile(rel, *hashed))
            elif stat.S_ISDIR(mode):
                try:
                    sub_fd = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError as exc:
                    self.problem(self.where(rel), "", f"cannot read directory: {exc.strerror}")
                    continue
                try:
                    self.walk(sub_fd, rel + "/", files, skipped)
                finally:
                    os.close(sub_fd)
            elif stat.S_ISLNK(mode):
                skipped.append(Skipped(rel, "symbolic link (not followed)"))
            else:
                skipped.append(Skipped(rel, file_kind(mode)))

    def hash_file(self, dir_fd: int, name: str, rel: str) -> tuple[int, str] | None:
        """(size, sha256) of the bytes read now, through a descriptor opened without
        following links; the size is that of the bytes hashed, not of an earlier stat."""
        try:
            fd = _open_regular_at(dir_fd, name)
        except _Refused as exc:
            self.problem(self.where(rel), "", f"{exc}; it changed while being read")
            return None
        except OSError as exc:
            self.problem(self.where(rel), "", f"cannot read: {exc.strerror}")
            return None
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "rb", buffering=0) as handle:
            while chunk := handle.read(_HASH_CHUNK):
                h.update(chunk)
                size += len(chunk)
        return size, h.hexdigest()

    def read_json(self, name: str, *, required: bool) -> dict[str, object] | None:
        """Parse a top-level JSON object file, or record why not; None if absent/broken."""
        try:
            fd = _open_regular_at(self.root_fd, name)
        except FileNotFoundError:
            if required:
                self.problem(self.where(name), "", "missing (required in a run directory)")
            return None
        except _Refused as exc:
            self.problem(self.where(name), "", f"{exc} (must be a regular file)")
            return None
        except OSError as exc:
            self.problem(self.where(name), "", f"cannot read: {exc.strerror}")
            return None
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            self.problem(self.where(name, line, col), "", "not valid UTF-8")
            return None
        try:
            value: object = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:
            self.problem(self.where(name, exc.lineno, exc.colno), "", f"invalid JSON: {exc.msg}")
            return None
        except _DuplicateKey as exc:
            self.problem(self.where(name), exc.key, "duplicate key")
            return None
        except RecursionError:
            self.problem(self.where(name), "", "invalid JSON: nested too deeply")
            return None
        except ValueError:  # json's int() past 4,300 digits
            self.problem(self.where(name), "", "invalid JSON: a number with too many digits")
            return None
        if not isinstance(value, dict):
            self.problem(self.where(name), "", f"must be a JSON object, not {json_type(value)}")
            return None
        return value


# ------------------------------------------------------------------------------ helpers


def _error(location: Location, message: str, field: str = "") -> InputError:
    return InputError([Problem(location, field, message)])


def _open_regular_at(dir_fd: int, name: str) -> int:
    """Open `name` in `dir_fd` read-only if it is a regular file; else raise _Refused.

    The lstat first keeps FIFOs and devices from ever being opened; O_NOFOLLOW,
    O_NONBLOCK and the fstat after close the window in which the entry could be swapped.
    """
    mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    if stat.S_ISLNK(mode):
        raise _Refused("is a symbolic link (not followed)")
    if not stat.S_ISREG(mode):
        raise _Refused(f"is a {file_kind(mode)}, not a regular file")
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a link after the lstat
            raise _Refused("is a symbolic link (not followed)") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _Refused(f"is a {file_kind(mode)}, not a regular file")
    return fd


@contextmanager
def _open_dir_path(root: str, parts: list[str]) -> Iterator[int]:
    """Yield a descriptor of root/parts..., refusing any component that is not a real dir."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
            if not stat.S_ISDIR(mode):
                raise _Refused(f"component {part!r} is a {file_kind(mode)}, not a directory")
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result
