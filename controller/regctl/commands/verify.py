"""`regctl verify` and the public `regctl.verify()`: check bytes against a content record.

- `regctl verify DIR` (and `regctl.verify(DIR)`): re-hash a downloaded folder against its
  lock, offline: this path imports neither mlflow nor the registry adapter.
- `regctl verify NAME@ALIAS|NAME/VERSION`: download the stored artifacts to a temporary
  folder (removed after) and check them against the version's `regctl.digest`.
- `regctl verify --record NAME/VERSION`: for a version registered before content digests,
  compute the digest of its stored files and record it, once, under the apply lease. A
  person checks the files first (that is the point of the command: the record then says
  "these bytes were checked", and from then on every download is held to them).

Decisions:

- An argument that is an existing directory is a DIR; anything else is a target. A
  folder whose name also reads as a target (`m/1`, `m@prod`) is refused as ambiguous:
  `./m/1` is the folder, `models:/m/1` the version.
- `--record` takes a version number, never an alias: what a person checked is one
  version, and an alias can move between the check and the record.
- `--record --digest D` records only when the stored files still give D, the digest the
  person saw when checking them (`regctl verify NAME/VERSION` prints it): the files can
  change between the check and the record, and the record would then vouch for bytes
  nobody checked.
- `--record` refuses a version that already has a record (a record is written once; to
  replace one, a person deletes the tags in MLflow first, which leaves a trace). The
  per-file list is written before the digest, so an interrupted record leaves no digest
  (nothing is believed) and can simply be run again.
- A version with no record makes `regctl verify NAME/N` exit 1: unverified is not OK.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from regctl.commands.printed import Printed
from regctl.config import Settings, open_registry
from regctl.core.digests import DIGEST_TAG, FILES_TAG, files_record
from regctl.engine.content import Verified, verify_directory
from regctl.engine.download import ResolveReader, download_with, resolve_with
from regctl.engine.resolved import Progress, Resolved, ResolveError, VerifyFailed, parse_target

__all__ = ["verify", "verify_command"]


def verify(directory: str | os.PathLike[str], *, digest: str | None = None) -> Verified:
    """Re-hash a folder `Resolved.download` wrote against its lock; offline.

    Returns what was checked; raises `VerifyFailed` (its `lines` name each changed,
    missing or extra file) otherwise. `digest` (`sha256:...`, e.g. the manifest's pin)
    also requires the lock's digest to be that one.
    """
    return verify_directory(directory, digest)


def verify_command(
    settings: Settings,
    target: str,
    *,
    digest: str | None = None,
    record: bool = False,
    progress: Progress | None = None,
    lock_timeout: float = 60.0,
) -> Printed:
    """`regctl verify DIR | TARGET [--digest D] | --record NAME/VERSION`: what to print, 0.

    Failures raise RegctlError (VerifyFailed, ContentMismatch: exit 1).
    """
    if record:
        return _record(settings, target, digest, progress, lock_timeout)
    if not target.startswith("models:/") and Path(target).is_dir():
        _unambiguous_folder(target)
        return Printed(str(verify_directory(target, digest)), 0)
    want = parse_target(target)
    registry = open_registry(settings)
    try:
        reader = _reader(registry)
        resolved = resolve_with(reader, want)
        checked = _check_stored(reader, resolved, digest, progress)
    finally:
        registry.close()
    return Printed(str(checked), 0)


def _unambiguous_folder(target: str) -> None:
    """A folder whose name also reads as NAME/VERSION or NAME@ALIAS is refused: `regctl
    verify m/1` in CI means the registry's version, and a folder `m/1` (a checkout may
    bring one) must not turn it into an offline check of a lock anyone could write."""
    try:
        want = parse_target(target)
    except ResolveError:
        return
    raise ResolveError(
        f"{target!r} is both a folder here and a model version: write ./{target} for the "
        f"folder or models:/{want} for the version"
    )


def _check_stored(
    reader: ResolveReader, resolved: Resolved, digest: str | None, progress: Progress | None
) -> Verified:
    label = f"{resolved.model} version {resolved.version}"
    with tempfile.TemporaryDirectory(prefix="regctl-verify-") as tmp:
        fetched = download_with(
            resolved, reader, Path(tmp) / "files", progress=progress, digest=digest
        )
    n, size = len(fetched.files), fetched.bytes
    if not fetched.verified:
        raise VerifyFailed(
            [
                f"{label} has no content record: its stored files ({n} files, {size} bytes) give "
                f"{fetched.digest}; after checking them, record it with `regctl verify "
                f"--record {resolved.model}/{resolved.version}`"
            ]
        )
    against = f"the registry's record ({fetched.digest}{', pinned' if digest else ''})"
    return Verified(f"{label} (stored artifacts)", fetched.digest, n, size, against)


def _record(
    settings: Settings,
    target: str,
    digest: str | None,
    progress: Progress | None,
    lock_timeout: float,
) -> Printed:
    want = parse_target(target)
    if want.version is None:
        raise ResolveError(
            f"--record takes NAME/VERSION, the version a person checked, not an alias "
            f"({target!r}): an alias can move between the check and the record"
        )
    from regctl.commands.lease import take_lease  # gitpython: not on the offline path

    registry = open_registry(settings)
    try:
        reader = _reader(registry)
        resolve_with(reader, want)  # a typo or a deleted run fails before the lease
        lease = take_lease(settings, registry, lock_timeout)
        try:
            resolved = resolve_with(reader, want)  # read again under the lease
            label = f"{resolved.model} version {resolved.version}"
            if DIGEST_TAG in resolved.version_tags:
                raise ResolveError(
                    f"{label} already records {resolved.version_tags[DIGEST_TAG]}; check it "
                    f"with `regctl verify {resolved.model}/{resolved.version}` (a record is "
                    "written once: to replace it, delete its regctl.digest tag in MLflow first)"
                )
            with tempfile.TemporaryDirectory(prefix="regctl-record-") as tmp:
                fetched = download_with(
                    resolved, reader, Path(tmp) / "files", progress=progress, digest=digest
                )
            listed = files_record(fetched.files)
            lease.check()
            if listed is not None:
                registry.set_version_tag(resolved.model, resolved.version, FILES_TAG, listed)
            registry.set_version_tag(resolved.model, resolved.version, DIGEST_TAG, fetched.digest)
        finally:
            lease.release()
    finally:
        registry.close()
    kept = (
        "with its per-file list" if listed is not None else "digest only (too many files to list)"
    )
    return Printed(
        f"recorded {fetched.digest} for {label} ({len(fetched.files)} files, "
        f"{fetched.bytes} bytes; {kept}); a manifest may pin it: digest: {fetched.digest}",
        0,
    )


def _reader(registry: object) -> ResolveReader:
    if not isinstance(registry, ResolveReader):  # pragma: no cover - the adapter has them
        raise ResolveError("this registry adapter cannot resolve")
    return registry
