"""The inference side: resolve `NAME@ALIAS` or `NAME/VERSION` to the exact model, config, files.

`regctl.resolve("name@Production")` returns a `Resolved`: the version, its run (id and
name), experiment, params (the training config as logged), metrics, source, the model
file's path inside the artifacts, and the provenance tags apply recorded.
`Resolved.download(dir)` fetches exactly that version's files. The CLI's
`regctl resolve` is `resolve_command` below.

This module never imports mlflow itself: the registry is reached through
`regctl.config.open_registry` (the MLflow adapter) when `resolve` is called, so
`import regctl` stays cheap.

Decisions, each repeated where it is made:

- An alias is read once, from the registered model (one request that also brings the
  model's tags); everything after, the download included, uses that version number and
  its run. If the alias moves meanwhile, the result is still entirely the version
  resolved at the start.
- Only `runs:/<run_id>[/<path>]` sources are resolved: the model file's path comes from
  the run's `model_path` and `run_dir` params, which only a run has.
- A version that is not READY, a deleted run, a missing `model_path` or one outside
  `run_dir` (or outside the version's source folder) are errors, not warnings: inference
  must not start from a guess.
- A download goes to a new folder beside DIR (same parent, so the final rename is atomic
  and never crosses file systems), each file is checked against the size MLflow lists as
  it arrives, then the folder is renamed to DIR. Any failure or interruption removes the
  folder, so DIR is either complete or absent. DIR may exist only as an empty directory
  (the rename replaces it atomically); a non-empty DIR, a file or a symbolic link is
  refused, so nothing is ever overwritten. A process killed with SIGKILL can leave a
  `.DIR.regctl-partial-*` folder beside DIR, never a partial DIR.
- The module is `regctl.commands.inference`; the package exposes `regctl.resolve` and
  `regctl.Resolved` lazily, so `import regctl` stays cheap and the name `resolve` is
  never shadowed by a submodule.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import posixpath
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from regctl import escape
from regctl.adapters.rundir import relative_inside
from regctl.config import Settings, find_repo, open_registry, resolve_tracking
from regctl.core.model import PROVENANCE_PREFIX, ObservedModel, ObservedVersion, RunRef, frozen_map
from regctl.errors import NotFound, RegctlError
from regctl.ports import ArtifactInfo, RunData

__all__ = [
    "RESOLVED_FILE",
    "DestinationExists",
    "DownloadError",
    "Downloaded",
    "ModelPathError",
    "ResolveError",
    "ResolveReader",
    "Resolved",
    "RunDeleted",
    "Target",
    "UnknownAlias",
    "UnknownModel",
    "UnknownVersion",
    "download_with",
    "model_artifact_path",
    "parse_target",
    "render_json",
    "render_text",
    "resolve",
    "resolve_command",
    "resolve_with",
]

RESOLVED_FILE = "regctl-resolved.json"
"""Written into a downloaded folder: what was resolved, and the files with their sizes."""

FORMATS = ("text", "json")

Progress = Callable[[int, int, str], None]
"""(files done, files total, artifact path of the file just downloaded and checked)."""

_ALIAS_RE = re.compile(r"^[\w-]+$")
_VERSION_RE = re.compile(r"^[0-9]+$")
_PARTIAL = ".regctl-partial-"


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


# -------------------------------------------------------------------------------- ports


@runtime_checkable
class ResolveReader(Protocol):
    """The registry reads resolve needs (the MLflow adapter implements them)."""

    def describe(self) -> str: ...

    def get_model(self, name: str) -> ObservedModel: ...

    def get_version(self, name: str, version: int) -> ObservedVersion: ...

    def run_info(self, run_id: str) -> tuple[RunData, str, str]: ...

    def list_artifact_tree(self, run: RunRef, path: str) -> list[ArtifactInfo]: ...

    def download_artifact_file(self, run: RunRef, path: str, dest: str) -> None: ...


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
    # where it was resolved from, for download(); may hold credentials, so never shown
    settings: Settings | None = field(default=None, repr=False, compare=False)

    @property
    def target(self) -> str:
        """How it was asked for: `name@alias`, else `name/version`."""
        return str(Target(self.model, self.alias, None if self.alias else self.version))

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
            "provenance": {"model": dict(self.model_tags), "version": dict(self.version_tags)},
        }

    def download(
        self, directory: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> Path:
        """Download this version's files into `directory`; returns its absolute path.

        Exactly this version (by run, not by alias), every file checked against the size
        MLflow lists, plus `regctl-resolved.json`. `directory` must not exist or be an
        empty directory; on any failure it is left as it was.
        """
        if self.settings is None:
            raise DownloadError(f"{self.target}: not resolved from a registry; nothing to download")
        with _opened(self.settings) as reader:
            return download_with(self, reader, directory, progress=progress).directory


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A finished download: the folder and its files (relative paths, sizes)."""

    directory: Path
    files: tuple[ArtifactInfo, ...]

    @property
    def bytes(self) -> int:
        return sum(max(f.size, 0) for f in self.files)


# ---------------------------------------------------------------------------- use cases


def resolve(
    target: str,
    tracking_uri: str | None = None,
    *,
    registry_uri: str | None = None,
    repo: str | os.PathLike[str] | None = None,
) -> Resolved:
    """Resolve `NAME@ALIAS` or `NAME/VERSION` against MLflow (this imports mlflow).

    The tracking URI is found as the CLI finds it: `tracking_uri`, else
    MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the repository (the nearest
    folder upwards from the current directory that holds `manifests/`, or `repo`).
    """
    want = parse_target(target)  # a typo fails before any connection is made
    root = Path(repo).resolve() if repo is not None else find_repo()
    settings = Settings(root, tracking_uri, registry_uri)
    with _opened(settings) as reader:
        return resolve_with(reader, want, settings)


def resolve_with(
    reader: ResolveReader, target: str | Target, settings: Settings | None = None
) -> Resolved:
    """Resolve a target through `reader`: model, alias (read once), version, run, experiment."""
    want = target if isinstance(target, Target) else parse_target(target)
    where = _where(reader, settings)
    try:
        model = reader.get_model(want.model)
    except NotFound:
        raise UnknownModel(f"model {want.model!r} does not exist in {where}") from None
    number = want.version
    if want.alias is not None:
        number = model.aliases.get(want.alias)
        if number is None:
            held = ", ".join(sorted(model.aliases)) or "none"
            raise UnknownAlias(
                f"model {want.model!r} has no alias {want.alias!r} (aliases: {held})"
            )
    assert number is not None
    try:
        version = reader.get_version(want.model, number)
    except NotFound:
        if want.alias is not None:
            raise UnknownVersion(
                f"{want}: version {number} was deleted while resolving; try again"
            ) from None
        raise UnknownVersion(f"model {want.model!r} has no version {number}") from None
    label = f"{want.model} version {number}"
    if version.status != "READY":
        raise ResolveError(f"{label} is not ready (status {version.status})")
    artifact_path = _source_path(label, version)
    data, experiment_name = _live_run(label, reader, version.run_id)
    model_path = model_artifact_path(data.params, label)
    if _inside_source(model_path, artifact_path) is None:
        raise ModelPathError(
            f"{label}: model_path {model_path!r} is not inside the version's source "
            f"{version.source!r}"
        )
    return Resolved(
        model=want.model,
        version=number,
        alias=want.alias,
        aliases=tuple(sorted(a for a, v in model.aliases.items() if v == number)),
        description=version.description,
        status=version.status,
        run_id=data.ref.run_id,
        run_name=data.ref.name,
        experiment_id=data.ref.experiment_id,
        experiment_name=experiment_name,
        params=frozen_map(data.params),
        metrics=MappingProxyType(dict(sorted(data.metrics.items()))),
        source=version.source,
        artifact_path=artifact_path,
        model_path=model_path,
        model_tags=_provenance(model.tags),
        version_tags=_provenance(version.tags),
        registry=where,
        settings=settings,
    )


def model_artifact_path(params: Mapping[str, str], label: str = "run") -> str:
    """The model file's path inside the run's artifacts: `model_path` relative to `run_dir`.

    Both params are absolute paths on the training machine (the schema's rule); a relative
    `model_path` is taken as relative to the run directory. Anything that does not land
    strictly inside the run directory is an error, since the file would not be among the
    artifacts (the schema's `external_model_path` case).
    """
    given = params.get("model_path", "")
    run_dir = params.get("run_dir", "")
    if not given:
        raise ModelPathError(f"{label}: the run has no model_path param")
    if posixpath.isabs(given):
        if not run_dir:
            raise ModelPathError(
                f"{label}: the run has no run_dir param to place model_path {given!r} in"
            )
        rel = relative_inside(given, run_dir)
    else:
        rel = relative_inside(posixpath.join("/r", given), "/r")
    if rel is None:
        external = " (see external_model_path)" if params.get("external_model_path") else ""
        raise ModelPathError(
            f"{label}: model_path {given!r} is outside run_dir {run_dir!r}{external}; "
            "the model file is not among the artifacts"
        )
    return rel


def download_with(
    resolved: Resolved,
    reader: ResolveReader,
    directory: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> Downloaded:
    """Download the resolved version's files into `directory`, all or nothing.

    Uses the run and source recorded in `resolved` (never the alias again). Files go to
    `.NAME.regctl-partial-<random>` beside `directory`, each checked against the size
    MLflow lists before the next one; then `regctl-resolved.json` is written and the
    folder renamed into place. On any error or interruption the partial folder is
    removed and `directory` is as it was.
    """
    dest = Path(os.path.abspath(directory))
    _check_destination(dest)
    label = f"{resolved.model} version {resolved.version}"
    data, _ = _live_run(label, reader, resolved.run_id)
    listing = reader.list_artifact_tree(data.ref, resolved.artifact_path)
    if not listing:
        raise DownloadError(f"{label}: its source {resolved.source!r} holds no files")
    files = [(info, _local_name(label, info.path, resolved.artifact_path)) for info in listing]
    names = {rel for _, rel in files}
    if RESOLVED_FILE in names:
        raise DownloadError(f"{label}: the artifacts already hold a {RESOLVED_FILE}")
    if resolved.model_file not in names:
        raise ModelPathError(
            f"{label}: model file {resolved.model_path!r} is not among the artifacts"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}{_PARTIAL}{uuid.uuid4().hex[:12]}"
    partial.mkdir()  # fails if it exists; mode from the umask like any new folder
    try:
        done: list[ArtifactInfo] = []
        for count, (info, rel) in enumerate(files, 1):
            local = partial / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            reader.download_artifact_file(data.ref, info.path, str(local))
            size = _size(local)
            if size is None:
                raise DownloadError(f"{label}: {info.path} was not downloaded")
            if info.size >= 0 and size != info.size:
                raise DownloadError(
                    f"{label}: {info.path} has {size} bytes, MLflow lists {info.size}; "
                    "nothing was kept"
                )
            done.append(ArtifactInfo(rel, size))
            if progress is not None:
                progress(count, len(files), info.path)
        extra = sorted(_tree(partial) - names)
        if extra:
            raise DownloadError(f"{label}: unexpected files after download: {', '.join(extra)}")
        record = {**resolved.to_json(), "files": [{"path": f.path, "size": f.size} for f in done]}
        (partial / RESOLVED_FILE).write_text(_dumps(record), encoding="utf-8")
        _publish(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Downloaded(dest, tuple(done))


def resolve_command(
    settings: Settings, target: str, fmt: str, download: Path | None
) -> tuple[str, int]:
    """`regctl resolve TARGET [--format text|json] [--download DIR]`: (output, exit code).

    The output has no trailing newline. Failures raise RegctlError (shown by the CLI's
    error handler), so the code is 0 whenever there is output.
    """
    if fmt not in FORMATS:
        raise ResolveError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    want = parse_target(target)
    with _opened(settings) as reader:
        resolved = resolve_with(reader, want, settings)
        fetched = download_with(resolved, reader, download) if download is not None else None
    if fmt == "json":
        return render_json(resolved, fetched), 0
    return render_text(resolved, fetched), 0


# ---------------------------------------------------------------------------- rendering


def render_text(resolved: Resolved, downloaded: Downloaded | None = None) -> str:
    """Human-readable, deterministic: keys sorted, one line per param, metric and tag.

    Every value is the registry's or the run's: each line goes through `escape.text`.
    """
    r = resolved
    lines = [
        f"{r.target}: {r.model} version {r.version}",
        f"  registry:     {r.registry}",
        f"  aliases:      {', '.join(r.aliases) or '-'}",
        f"  description:  {_one_line(r.description) or '-'}",
        f"  run:          {r.run_name or '-'} ({r.run_id})",
        f"  experiment:   {r.experiment_name} ({r.experiment_id})",
        f"  source:       {r.source}",
        f"  model file:   {r.model_path}",
    ]
    tags = [(f"model {k}", v) for k, v in r.model_tags.items()]
    tags += [(f"version {k}", v) for k, v in r.version_tags.items()]
    lines.append(f"  provenance:   {'' if tags else '-'}".rstrip())
    lines += [f"    {k} = {_one_line(v)}" for k, v in tags]
    lines.append(f"  params ({len(r.params)}):")
    lines += [f"    {k} = {_one_line(v)}" for k, v in r.params.items()]
    lines.append(f"  metrics ({len(r.metrics)}):")
    lines += [f"    {k} = {v!r}" for k, v in r.metrics.items()]
    if downloaded is not None:
        lines.append(
            f"downloaded {len(downloaded.files)} files ({downloaded.bytes} bytes) "
            f"to {downloaded.directory}"
        )
        lines.append(f"model file: {downloaded.directory / r.model_file}")
    return "\n".join(escape.text(line) for line in lines)


def render_json(resolved: Resolved, downloaded: Downloaded | None = None) -> str:
    """`Resolved.to_json()`, plus `download` (folder and files) after a download."""
    data = resolved.to_json()
    if downloaded is not None:
        data["download"] = {
            "directory": str(downloaded.directory),
            "files": [{"path": f.path, "size": f.size} for f in downloaded.files],
        }
    return escape.json_text(_dumps(data)).rstrip("\n")


# ------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def _opened(settings: Settings) -> Iterator[ResolveReader]:
    registry = open_registry(settings)
    try:
        if not isinstance(registry, ResolveReader):  # pragma: no cover - the adapter has them
            raise ResolveError(f"{registry.describe()}: this registry adapter cannot resolve")
        yield registry
    finally:
        registry.close()


def _where(reader: ResolveReader, settings: Settings | None) -> str:
    """The registry as shown to users: a local database by its full path, else no secrets."""
    if settings is not None:
        uri, _ = resolve_tracking(settings)
        if uri.startswith("sqlite:"):  # no credentials in a file path
            return uri
    return reader.describe()


def _live_run(label: str, reader: ResolveReader, run_id: str) -> tuple[RunData, str]:
    """The run and its experiment's name; RunDeleted when it is deleted or gone."""
    try:
        data, experiment, stage = reader.run_info(run_id)
    except NotFound:
        raise RunDeleted(f"{label}: its run {run_id} no longer exists (deleted)") from None
    if stage != "active":
        raise RunDeleted(f"{label}: its run {run_id} was deleted")
    return data, experiment


def _source_path(label: str, version: ObservedVersion) -> str:
    """The artifact path a `runs:/<run_id>[/<path>]` source names ("" for the root)."""
    source = version.source
    if not source.startswith("runs:/"):
        raise ResolveError(
            f"{label}: source {source!r} is not a runs:/ URI; only versions registered from "
            "runs can be resolved"
        )
    run_id, _, path = source[len("runs:/") :].partition("/")
    if not version.run_id or run_id != version.run_id:
        raise ResolveError(
            f"{label}: source {source!r} does not name its run {version.run_id or '(none)'}"
        )
    path = path.strip("/")
    if path and any(part in ("", ".", "..") for part in path.split("/")):
        raise ResolveError(f"{label}: source {source!r} has an unsafe path")
    return path


def _provenance(tags: Mapping[str, str]) -> Mapping[str, str]:
    return frozen_map({k: v for k, v in tags.items() if k.startswith(PROVENANCE_PREFIX)})


def _inside_source(path: str, artifact_path: str) -> str | None:
    """`path` (in the run's artifacts) relative to the source's folder or file, or None."""
    if not artifact_path:
        return path
    if path == artifact_path:
        return posixpath.basename(path)
    return relative_inside(path, artifact_path)


def _local_name(label: str, path: str, artifact_path: str) -> str:
    """Where an artifact goes inside the download, refusing anything that could escape."""
    rel = _inside_source(path, artifact_path)
    parts = (rel or "").split("/")
    if not rel or posixpath.isabs(rel) or any(p in ("", ".", "..") for p in parts) or "\x00" in rel:
        raise DownloadError(f"{label}: MLflow listed an unsafe artifact path {path!r}")
    return rel


def _check_destination(dest: Path) -> None:
    """DIR may be absent or an empty directory (replaced atomically); nothing else."""
    if dest.is_symlink():
        raise DestinationExists(f"{dest} is a symbolic link; refusing to download into it")
    if not dest.exists():
        return
    if not dest.is_dir():
        raise DestinationExists(f"{dest} exists and is not a directory; nothing was downloaded")
    if any(dest.iterdir()):
        raise DestinationExists(
            f"{dest} exists and is not empty; refusing to overwrite it (remove it or pick a "
            "new folder)"
        )


def _publish(partial: Path, dest: Path) -> None:
    """Rename the finished folder to DIR: atomic; replaces only an empty directory."""
    try:
        os.rename(partial, dest)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise DestinationExists(
                f"{dest} appeared during the download; refusing to overwrite it"
            ) from None
        if exc.errno in (errno.EBUSY, errno.EXDEV):
            raise DownloadError(
                f"{dest} cannot be replaced atomically (a mount point?); download into a "
                "new folder inside it instead"
            ) from None
        raise DownloadError(f"cannot move the download into {dest}: {exc.strerror}") from None


def _size(path: Path) -> int | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return st.st_size if not path.is_symlink() and path.is_file() else None


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())
