"""What resolve returns and raises: targets, the resolved version, a finished download.

`regctl.resolve("name@Production")` returns a `Resolved`: the version, its run (id and
name), experiment, params (the training config as logged), metrics, source, the model
file's path inside the artifacts, and the provenance tags apply recorded.
`Resolved.download(dir)` fetches exactly that version's files. These values and errors
sit in the engine so that the use case (`regctl.engine.download`), the command
(`regctl.commands.resolve`) and inference code all import them from one place; the
renderers (`regctl.render.resolve`) name them only in annotations.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regctl.core.digests import DIGEST_TAG, FILES_TAG
from regctl.core.runs import relative_inside
from regctl.errors import RegctlError

__all__ = [
    "ContentMismatch",
    "DestinationExists",
    "DownloadError",
    "Downloaded",
    "Fetch",
    "ModelPathError",
    "Progress",
    "ResolveError",
    "Resolved",
    "RunDeleted",
    "Target",
    "UnknownAlias",
    "UnknownModel",
    "UnknownVersion",
    "UnverifiedContent",
    "VerifyFailed",
    "parse_target",
]

Progress = Callable[[int, int, str], None]
"""(files done, files total, artifact path of the file just downloaded and checked)."""

_ALIAS_RE = re.compile(r"^[\w-]+$")
_VERSION_RE = re.compile(r"^[0-9]+$")

Fetch = Callable[["Resolved", "str | os.PathLike[str]", "Progress | None", "str | None"], Path]
"""Downloads a `Resolved` into a folder (optionally pinned to a digest) and returns the
folder (`Resolved.download`)."""


# ------------------------------------------------------------------------------- errors


class ResolveError(RegctlError):
    """A target cannot be resolved or downloaded. `str(err)` is one line."""


class UnknownModel(ResolveError):
    """No registered model of that name."""


class UnknownAlias(ResolveError):
    """The model has no such alias."""


class UnknownVersion(ResolveError):
    """The model has no such version (or it was deleted)."""


class RunDeleted(ResolveError):
    """The version's run was deleted: its params and files are gone or going."""


class ModelPathError(ResolveError):
    """`model_path` is missing, or does not lie inside the run directory / the source."""


class DownloadError(ResolveError):
    """A download failed; DIR was left as it was."""


class DestinationExists(DownloadError):
    """DIR exists and is not an empty directory: nothing is overwritten."""


class ContentMismatch(DownloadError):
    """The downloaded files are not the ones the registry's content record (or a pinned
    digest) names; nothing was kept. `lines` says which files and both digests."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines: tuple[str, ...] = tuple(lines)
        super().__init__("; ".join(self.lines))


class VerifyFailed(RegctlError):
    """`regctl verify` found files that differ from the lock or the record: `lines` names
    each changed, missing or extra file (the first line says what was checked)."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines: tuple[str, ...] = tuple(lines)
        super().__init__("; ".join(self.lines))


class UnverifiedContent(UserWarning):
    """A download of a version that has no content record: only the sizes MLflow lists
    were checked (`regctl verify --record` records the digest after a person checked)."""


# ------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Target:
    """What to resolve: a model and either an alias or a version number."""

    model: str
    alias: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        return (
            f"{self.model}@{self.alias}"
            if self.alias is not None
            else f"{self.model}/{self.version}"
        )


def parse_target(text: str) -> Target:
    """`NAME@ALIAS` or `NAME/VERSION`, optionally written as a `models:/` URI.

    MLflow model names cannot contain `/` and aliases are `[\\w-]`, so the first `/` or
    the last `@` splits unambiguously.
    """
    raw = text.strip()
    if raw.startswith("models:/"):
        raw = raw[len("models:/") :]
    usage = f"expected NAME@ALIAS or NAME/VERSION, not {text!r}"
    if "/" in raw:
        name, _, number = raw.partition("/")
        if not name or not _VERSION_RE.match(number) or int(number) < 1:
            raise ResolveError(f"{usage} (a version is a number from 1)")
        return Target(name, version=int(number))
    if "@" in raw:
        name, _, alias = raw.rpartition("@")
        if not name or not _ALIAS_RE.match(alias):
            raise ResolveError(f"{usage} (an alias is letters, digits, '_' and '-')")
        return Target(name, alias=alias)
    raise ResolveError(usage)


@dataclass(frozen=True, slots=True)
class Resolved:
    """One model version, resolved once, with everything inference needs to trust it.

    `params` are the run's params (the training config as logged) and `metrics` its
    metrics. `artifact_path` is the folder (or file) of the run's artifacts that the
    version's `source` names, "" for the whole artifact root; `model_path` is the model
    file's path inside the run's artifacts (the `model_path` param relative to the
    `run_dir` param), and `model_file` the same file's path inside a downloaded folder.
    `model_tags` and `version_tags` are the registry-side provenance tags (keys starting
    with `regctl.`). `registry` is the tracking URI without credentials.
    """

    model: str
    version: int
    alias: str | None
    aliases: tuple[str, ...]
    description: str
    status: str
    run_id: str
    run_name: str
    experiment_id: str
    experiment_name: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    source: str
    artifact_path: str
    model_path: str
    model_tags: Mapping[str, str]
    version_tags: Mapping[str, str]
    registry: str
    # downloads from where it was resolved (bound to a registry that may hold
    # credentials, so never shown); None when it was not resolved from a registry
    fetch: Fetch | None = field(default=None, repr=False, compare=False)

    @property
    def target(self) -> str:
        """How it was asked for: `name@alias`, else `name/version`."""
        return str(Target(self.model, self.alias, None if self.alias else self.version))

    @property
    def content_digest(self) -> str | None:
        """The content digest the registry records for this version (`regctl.digest`),
        None when it has none; a download is checked against it."""
        return self.version_tags.get(DIGEST_TAG)

    @property
    def model_file(self) -> str:
        """The model file's path relative to a downloaded folder."""
        return _inside_source(self.model_path, self.artifact_path) or self.model_path

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; non-finite metrics become the strings nan, inf, -inf."""
        return {
            "apiVersion": "regctl/v1",
            "kind": "Resolved",
            "target": self.target,
            "model": self.model,
            "alias": self.alias,
            "version": self.version,
            "aliases": list(self.aliases),
            "description": self.description,
            "status": self.status,
            "registry": self.registry,
            "run": {"id": self.run_id, "name": self.run_name},
            "experiment": {"id": self.experiment_id, "name": self.experiment_name},
            "source": self.source,
            "artifact_path": self.artifact_path,
            "model_path": self.model_path,
            "model_file": self.model_file,
            "params": dict(self.params),
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "content_digest": self.content_digest,
            "provenance": {
                "model": dict(self.model_tags),
                # the per-file list is the download's `files`; the record is checked
                "version": {k: v for k, v in self.version_tags.items() if k != FILES_TAG},
            },
        }

    def download(
        self,
        directory: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        digest: str | None = None,
    ) -> Path:
        """Download this version's files into `directory`; returns its absolute path.

        Exactly this version (by run, not by alias), every file checked against the size
        MLflow lists and hashed, the whole checked against the content digest the
        registry records (ContentMismatch, naming the files, when it differs) and against
        `digest` when given (a pin: `sha256:...`). The lock `regctl-resolved.json` lists
        every file with its size and sha256. `directory` must not exist or be an empty
        directory; on any failure it is left as it was. A version without a record is
        downloaded with an `UnverifiedContent` warning.
        """
        if self.fetch is None:
            raise DownloadError(f"{self.target}: not resolved from a registry; nothing to download")
        return self.fetch(self, directory, progress, digest)


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A finished download: the folder, its files (relative path, size, sha256 hex;
    sorted by path), their tree digest, and whether it matched the registry's content
    record (False: the version has none)."""

    directory: Path
    files: tuple[tuple[str, int, str], ...]
    digest: str
    verified: bool

    @property
    def bytes(self) -> int:
        return sum(size for _, size, _ in self.files)


def _inside_source(path: str, artifact_path: str) -> str | None:
    """`path` (in the run's artifacts) relative to the source's folder or file, or None."""
    if not artifact_path:
        return path
    if path == artifact_path:
        return posixpath.basename(path)
    return relative_inside(path, artifact_path)


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)
