"""A run directory's values: its files, its record, its digest, and the findings of a read.

`RunFile`, `Skipped` and `RunRecord` are what `regctl.adapters.rundir` reads out of a run
directory and `regctl sync` logs; `tree_digest` is the content digest that sync, proof and
the registry side compare. `Findings` collects the problems and warnings of one read,
from the adapter's walk and from the derivation of params and metrics in
`regctl.core.runschema`, and `run_record` turns a read into its record. Pure: no file
system access. Paths are handled with `posixpath` on purpose, because
`run_metadata.json` records paths of a POSIX training box, not of this machine.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Final

from regctl.errors import InputError, Location, Problem

PIPELINE_CONFIG: Final = "pipeline_config.json"
METRICS: Final = "metrics.json"
RUN_METADATA: Final = "run_metadata.json"
DIAGNOSTICS: Final = "diagnostics.json"

PATH_PARAMS: frozenset[str] = frozenset(
    {"run_dir", "model_path", "output_dir", "external_model_path"}
)
"""Params whose values depend on where the run directory sits on this machine."""

_LGBM_NAME_RE: Final = re.compile(r"^run_(\d{8})_(\d{6})_lgbm_(.+)$")
_HMM_NAME_RE: Final = re.compile(r"^run_hmm_(\d{8})_(\d{6})$")


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class RunFile:
    """A regular file in a run directory: POSIX path relative to the run dir, size, and the
    sha256 (hex) of its bytes as read (the content that sync uploads and regctl proves)."""

    rel_path: str
    size: int
    sha256: str


TREE_DIGEST_VERSION: Final = "regctl-tree-v1"


def tree_digest(files: Iterable[tuple[str, int, str]]) -> str:
    """The content digest of a file tree: `sha256:` + sha256 over one line per file,
    `<sha256> <size> <path>`, sorted by path, after a version line.

    Paths never hold a newline (the walk skips such names), so the lines are unambiguous.
    The same function digests a run directory, a run's artifacts and (issue 16) a version's
    files, so a digest computed on either side compares with the other.
    """
    h = hashlib.sha256(TREE_DIGEST_VERSION.encode() + b"\n")
    for path, size, sha in sorted(files):
        h.update(f"{sha} {size} {path}\n".encode("utf-8", "surrogateescape"))
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True, slots=True)
class Skipped:
    """An entry that is not logged (link, FIFO, socket, device, unusable name) and why."""

    rel_path: str
    reason: str


@dataclass(frozen=True, slots=True)
class RunRecord:
    """Everything sync logs for one run directory, derived per the metadata schema.

    `params` and `metrics` are read-only mappings sorted by key; `files` holds regular
    files only, sorted by `rel_path`; `skipped` lists what was not followed, sorted;
    `warnings` are findings that do not stop a sync (e.g. a run name that breaks the
    schema's naming, a non-numeric metric).
    """

    run_name: str
    run_dir: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    files: tuple[RunFile, ...]
    skipped: tuple[Skipped, ...]
    warnings: tuple[str, ...]

    @property
    def digest(self) -> str:
        """The content digest of every file (see `tree_digest`)."""
        return tree_digest((f.rel_path, f.size, f.sha256) for f in self.files)


class Findings:
    """One read of one run directory: where it is, and the problems and warnings found.

    The adapter's walk and the derivations of `regctl.core.runschema` add to the same
    lists as they go, so the problems of one read are reported together, in the order
    they were found.
    `shown` is the run directory as the user wrote it, for error locations.
    """

    def __init__(self, run_dir: str, run_name: str, shown: str) -> None:
        self.run_dir = run_dir
        self.run_name = run_name
        self.shown = shown
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    def where(self, name: str, line: int = 0, col: int = 0) -> Location:
        return Location(posixpath.join(self.shown, name), line, col)

    def problem(self, location: Location, field: str, message: str) -> None:
        self.problems.append(Problem(location, field, message))


def run_record(
    found: Findings,
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    files: Iterable[RunFile],
    skipped: Iterable[Skipped],
) -> RunRecord:
    """The RunRecord of a read; raises InputError, carrying every problem, if it found any."""
    if found.problems:
        raise InputError(found.problems)
    if naming := run_name_problem(found.run_name, params):
        found.warnings.append(naming)
    return RunRecord(
        run_name=found.run_name,
        run_dir=found.run_dir,
        params=MappingProxyType(dict(sorted(params.items()))),
        metrics=MappingProxyType(dict(sorted(metrics.items()))),
        files=tuple(sorted(files, key=lambda f: f.rel_path)),
        skipped=tuple(sorted(skipped, key=lambda s: (s.rel_path, s.reason))),
        warnings=tuple(found.warnings),
    )


def run_name_problem(run_name: str, params: Mapping[str, str]) -> str | None:
    """Say how `run_name` breaks the schema's naming for its `model_type`, or None.

    LGBM: `run_YYYYMMDD_HHMMSS_lgbm_{target}_{objective}` with target and objective from
    `params` (when either is missing only the fixed part is checked); HMM:
    `run_hmm_YYYYMMDD_HHMMSS`. The date and time must be real. Other model types have no
    naming rule in the schema, so they get None.
    """
    kind = params.get("model_type", "").lower()
    if kind == "lgbm":
        target, objective = params.get("target"), params.get("objective")
        suffix = f"{target}_{objective}" if target and objective else None
        shape = "run_YYYYMMDD_HHMMSS_lgbm_{target}_{objective}"
        expected = f" (expected suffix _lgbm_{suffix})" if suffix else ""
        match = _LGBM_NAME_RE.match(run_name)
        if match is None or (suffix is not None and match.group(3) != suffix):
            return f"run name {run_name!r} does not follow the LGBM naming {shape}{expected}"
    elif kind == "hmm":
        shape = "run_hmm_YYYYMMDD_HHMMSS"
        match = _HMM_NAME_RE.match(run_name)
        if match is None:
            return f"run name {run_name!r} does not follow the HMM naming {shape}"
    else:
        return None
    date, time = match.group(1), match.group(2)
    try:
        datetime.strptime(date + time, "%Y%m%d%H%M%S")
    except ValueError:
        return f"run name {run_name!r}: {date}_{time} is not a real date and time ({shape})"
    return None


# ------------------------------------------------------------------------------ helpers


def artifact_name_problem(name: str) -> str | None:
    """Why a file name cannot be an artifact path, or None."""
    if "\n" in name or "\r" in name:
        return "name contains a newline"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return "name contains a control character"
    if "\\" in name:
        return "name contains a backslash (a path separator on Windows)"
    try:
        name.encode("utf-8")  # os.fsdecode turned undecodable bytes into lone surrogates
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    return None


def printable(text: str) -> str:
    """Escape control characters and undecodable bytes, for one-line reports."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if ord(char) < 0x20 or ord(char) == 0x7F
        else char
        for char in text
    )


def json_type(value: object) -> str:
    """How a parsed JSON value reads in a message: `null`, `a string`, `an object`..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def relative_inside(path: str, root: str) -> str | None:
    """`path` relative to `root` when strictly inside it (both normalised), else None.

    Shared with `regctl.engine.download`, which maps `model_path` into a version's artifacts."""
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    prefix = root if root.endswith("/") else root + "/"
    if path.startswith(prefix) and len(path) > len(prefix):
        return path[len(prefix) :]
    return None


def file_kind(mode: int) -> str:
    """A file mode in words: "regular file", "symbolic link", "FIFO", ..."""
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "unsupported file type"
