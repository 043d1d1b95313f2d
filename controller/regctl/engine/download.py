"""The inference side: resolve `NAME@ALIAS` or `NAME/VERSION` to the exact model, config, files.

`resolve_with` and `download_with` talk only to a `ResolveReader` (the MLflow adapter
implements it); opening a registry from the settings is `regctl.commands.resolve`'s
work, and the values they return and the errors they raise are `regctl.engine.resolved`.

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
- Every file is hashed as it arrives and the whole is checked against the version's
  content record (`regctl.digest`, issue 16) before DIR is published: a mismatch is an
  error naming the files and both digests, and DIR is not created. A version without a
  record is downloaded with its sizes checked only, and the caller warns.
- The public entry is `regctl.resolve` (`regctl.commands.resolve.resolve`); the package
  exposes it and `regctl.Resolved` lazily, so `import regctl` stays cheap and the name
  `resolve` is never shadowed by a submodule.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from regctl.adapters.localtree import TreeError, hash_file
from regctl.core.digests import Tree, digest_of
from regctl.core.lock import LOCK_FILE, lock_fields, safe_relative
from regctl.core.model import PROVENANCE_PREFIX, ObservedModel, ObservedVersion, RunRef, frozen_map
from regctl.core.runs import relative_inside
from regctl.engine.content import check_pin, check_record, recorded_digest
from regctl.engine.resolved import (
    DestinationExists,
    Downloaded,
    DownloadError,
    Fetch,
    ModelPathError,
    Progress,
    Resolved,
    ResolveError,
    RunDeleted,
    Target,
    UnknownAlias,
    UnknownModel,
    UnknownVersion,
    _inside_source,
    parse_target,
)
from regctl.errors import NotFound
from regctl.ports import ArtifactInfo, RunData
from regctl.render.resolve import dumps

__all__ = [
    "RESOLVED_FILE",
    "ResolveReader",
    "download_with",
    "model_artifact_path",
    "resolve_with",
]

RESOLVED_FILE = LOCK_FILE
"""Written into a downloaded folder (the lock): what was resolved, and every file with
its size and sha256, and their tree digest (`regctl.core.lock`)."""

_PARTIAL = ".regctl-partial-"


@runtime_checkable
class ResolveReader(Protocol):
    """The registry reads resolve needs (the MLflow adapter implements them)."""

    def describe(self) -> str: ...

    def get_model(self, name: str) -> ObservedModel: ...

    def get_version(self, name: str, version: int) -> ObservedVersion: ...

    def run_info(self, run_id: str) -> tuple[RunData, str, str]: ...

    def list_artifact_tree(self, run: RunRef, path: str) -> list[ArtifactInfo]: ...

    def download_artifact_file(self, run: RunRef, path: str, dest: str) -> None: ...


def resolve_with(
    reader: ResolveReader,
    target: str | Target,
    where: str | None = None,
    fetch: Fetch | None = None,
) -> Resolved:
    """Resolve a target through `reader`: model, alias (read once), version, run, experiment.

    `where` is the registry as shown to users (`reader.describe()` when None); `fetch`
    is what `Resolved.download` will use (None: it refuses).
    """
    want = target if isinstance(target, Target) else parse_target(target)
    where = where if where is not None else reader.describe()
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
        fetch=fetch,
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
    digest: str | None = None,
) -> Downloaded:
    """Download the resolved version's files into `directory`, all or nothing.

    Uses the run and source recorded in `resolved` (never the alias again). Files go to
    `.NAME.regctl-partial-<random>` beside `directory`, each checked against the size
    MLflow lists and hashed before the next one; the whole is checked against the
    content digest the registry records (`regctl.engine.content.check_record`) and
    against `digest`, a pin, when given. Then `regctl-resolved.json` (the lock: every
    file with its size and sha256, and the tree digest) is written and the folder
    renamed into place. On any error or interruption the partial folder is removed and
    `directory` is as it was. `Downloaded.verified` is False when the version has no
    record (only sizes were checked): the caller warns.
    """
    dest = Path(os.path.abspath(directory))
    _check_destination(dest)
    label = f"{resolved.model} version {resolved.version}"
    recorded_digest(label, resolved.version_tags)  # a malformed record stops it here
    check_pin(label, digest, None)  # and so does a malformed pin
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
        tree = _fetch_all(label, reader, data.ref, files, partial, progress)
        extra = sorted(_tree(partial) - names)
        if extra:
            raise DownloadError(f"{label}: unexpected files after download: {', '.join(extra)}")
        verified = check_record(label, resolved.version_tags, tree)
        check_pin(label, digest, digest_of(tree))
        record = {**resolved.to_json(), **lock_fields(tree, verified)}
        (partial / RESOLVED_FILE).write_text(dumps(record), encoding="utf-8")
        _publish(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Downloaded(dest, tree, digest_of(tree), verified)


def _fetch_all(
    label: str,
    reader: ResolveReader,
    run: RunRef,
    files: list[tuple[ArtifactInfo, str]],
    partial: Path,
    progress: Progress | None,
) -> Tree:
    """Download each file into `partial`, check its size, hash it: the version's tree.

    Each file's size is checked as soon as it is written; its sha256 (the same as at
    sync: `regctl.adapters.localtree.hash_file`) is computed by a second thread while the
    next file downloads, from the page cache, so verifying costs little more than the
    hashing of the last file. A hashed size that differs from the listed one (the file
    changed after the check) fails the download as well.
    """
    hashing: list[tuple[ArtifactInfo, str, Future[tuple[int, str]]]] = []
    with ThreadPoolExecutor(1, thread_name_prefix="regctl-hash") as pool:
        for count, (info, rel) in enumerate(files, 1):
            local = partial / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            reader.download_artifact_file(run, info.path, str(local))
            _check_size(label, info, _size(local))
            hashing.append((info, rel, pool.submit(hash_file, local)))
            if progress is not None:
                progress(count, len(files), info.path)
        tree = []
        for info, rel, future in hashing:
            try:
                size, sha = future.result()
            except TreeError as exc:  # the file vanished or changed kind after its check
                raise DownloadError(f"{label}: {info.path}: {exc}; nothing was kept") from None
            _check_size(label, info, size)
            tree.append((rel, size, sha))
    return tuple(sorted(tree))


def _check_size(label: str, info: ArtifactInfo, size: int | None) -> None:
    if size is None:
        raise DownloadError(f"{label}: {info.path} was not downloaded")
    if info.size >= 0 and size != info.size:
        raise DownloadError(
            f"{label}: {info.path} has {size} bytes, MLflow lists {info.size}; nothing was kept"
        )


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


def _local_name(label: str, path: str, artifact_path: str) -> str:
    """Where an artifact goes inside the download, refusing anything that could escape
    and any name sync never logs (`core.lock.safe_relative`): a newline in a name would
    let one file's line in the tree digest pass for several (`a\\n<sha> <size> b` hashes
    like a and b), so a store that serves such a key could drop files unseen."""
    rel = _inside_source(path, artifact_path)
    if not rel or not safe_relative(rel):
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
