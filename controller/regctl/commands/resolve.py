"""`regctl resolve` and the public `regctl.resolve()`: resolve against the configured MLflow.

Both open the registry from `Settings` (through `regctl.config.open_registry`, the MLflow
adapter) and hand it to `regctl.engine.download`; a `Resolved` keeps the settings, inside
its `fetch`, so that `Resolved.download` reaches the same registry again. This module never
imports mlflow itself: the adapter is imported when `resolve` is called, so `import
regctl` stays cheap (`regctl.resolve` is this module's `resolve`, exposed lazily).
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from regctl.config import Settings, find_repo, open_registry, resolve_tracking
from regctl.engine.download import ResolveReader, download_with, resolve_with
from regctl.engine.resolved import (
    Downloaded,
    Progress,
    Resolved,
    ResolveError,
    Target,
    UnverifiedContent,
    parse_target,
)
from regctl.render.resolve import FORMATS, render_json, render_text

__all__ = ["ResolveReport", "resolve", "resolve_command", "unverified_message"]


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
        return _resolve(reader, want, settings)


class ResolveReport(NamedTuple):
    """What `regctl resolve` prints (stdout), warns (stderr, one line each), exits with."""

    text: str
    exit_code: int
    warnings: tuple[str, ...]


def resolve_command(
    settings: Settings,
    target: str,
    fmt: str,
    download: Path | None,
    *,
    digest: str | None = None,
    progress: Progress | None = None,
) -> ResolveReport:
    """`regctl resolve TARGET [--format text|json] [--download DIR [--digest D]]`.

    The output has no trailing newline. Failures raise RegctlError (shown by the CLI's
    error handler), so the code is 0 whenever there is output. A version without a
    content record is a warning (its download was checked against sizes only).
    """
    if fmt not in FORMATS:
        raise ResolveError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if digest is not None and download is None:
        raise ResolveError("--digest checks a download: give --download DIR too")
    want = parse_target(target)
    with _opened(settings) as reader:
        resolved = _resolve(reader, want, settings)
        fetched = None
        if download is not None:
            fetched = download_with(resolved, reader, download, progress=progress, digest=digest)
    warned = () if resolved.content_digest else (unverified_message(resolved, fetched),)
    if fmt == "json":
        return ResolveReport(render_json(resolved, fetched), 0, warned)
    return ResolveReport(render_text(resolved, fetched), 0, warned)


def unverified_message(resolved: Resolved, fetched: Downloaded | None) -> str:
    """The warning for a version that has no content record."""
    checked = (
        "its files were checked against MLflow's sizes only"
        if fetched
        else ("a download cannot be checked against the reviewed bytes")
    )
    return (
        f"{resolved.model} version {resolved.version} has no content record ({checked}); "
        f"after checking it, record one with `regctl verify --record "
        f"{resolved.model}/{resolved.version}`"
    )


def _resolve(reader: ResolveReader, want: Target, settings: Settings) -> Resolved:
    """Resolve through `reader`; the result downloads from the same `settings` again."""
    return resolve_with(reader, want, _where(settings), functools.partial(_fetch, settings))


def _fetch(
    settings: Settings,
    resolved: Resolved,
    directory: str | os.PathLike[str],
    progress: Progress | None,
    digest: str | None,
) -> Path:
    """`Resolved.download`: open the registry it came from again and download; warn
    (`UnverifiedContent`) when the version has no content record."""
    with _opened(settings) as reader:
        fetched = download_with(resolved, reader, directory, progress=progress, digest=digest)
    if not fetched.verified:
        warnings.warn(unverified_message(resolved, fetched), UnverifiedContent, stacklevel=3)
    return fetched.directory


@contextlib.contextmanager
def _opened(settings: Settings) -> Iterator[ResolveReader]:
    registry = open_registry(settings)
    try:
        if not isinstance(registry, ResolveReader):  # pragma: no cover - the adapter has them
            raise ResolveError(f"{registry.describe()}: this registry adapter cannot resolve")
        yield registry
    finally:
        registry.close()


def _where(settings: Settings) -> str | None:
    """The registry as shown to users: a local database by its full path, else None (the
    reader's own description, without secrets)."""
    uri, _ = resolve_tracking(settings)
    if uri.startswith("sqlite:"):  # no credentials in a file path
        return uri
    return None
