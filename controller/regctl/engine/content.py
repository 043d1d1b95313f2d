"""Checking bytes against a content record: a download against the registry's, a folder
against its lock. The record's format is `regctl.core.digests`, the lock's
`regctl.core.lock`; the hashing is `regctl.adapters.localtree`. Nothing here imports
mlflow, so `regctl verify DIR` (`verify_directory`) works offline.

Decisions, each repeated where it is made:

- A malformed `regctl.digest` tag stops a download before any file is fetched: a record
  that cannot be read proves nothing, and guessing would make the check optional.
- The per-file list (`regctl.files`) names the differing files only when it hashes to
  the recorded digest; otherwise (too large to keep, or edited) a mismatch gives both
  digests only.
- A lock is believed only when its listed files hash to its digest; a pin (`--digest`)
  is compared with the lock's digest, which is what makes the check mean anything
  against someone who can also rewrite the lock.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from regctl.adapters.localtree import Hashed, TreeError, hash_tree, read_regular
from regctl.core.digests import (
    DIGEST_PATTERN,
    DIGEST_TAG,
    FILES_TAG,
    Tree,
    differences,
    digest_of,
    parse_files_record,
)
from regctl.core.lock import LOCK_FILE, LockError, parse_lock
from regctl.engine.resolved import ContentMismatch, DownloadError, VerifyFailed

__all__ = [
    "SHOWN",
    "Verified",
    "check_pin",
    "check_record",
    "recorded_digest",
    "verify_directory",
]

SHOWN = 20
"""At most this many differing files are named in one error; the count says the rest."""


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verify checked: where, the tree digest, the files, and against what."""

    where: str
    digest: str
    files: int
    bytes: int
    against: str

    def __str__(self) -> str:
        return f"{self.where}: {self.files} files, {self.bytes} bytes match {self.against}"


def recorded_digest(label: str, tags: Mapping[str, str]) -> str | None:
    """The version's recorded digest, None when it has none; DownloadError when the tag
    is malformed (it stops the download before any file is fetched)."""
    recorded = tags.get(DIGEST_TAG)
    if recorded is None:
        return None
    if not DIGEST_PATTERN.match(recorded):
        raise DownloadError(
            f"{label}: its {DIGEST_TAG} tag is malformed (not sha256:<64 hex digits>), so "
            "the files cannot be checked; nothing was downloaded"
        )
    return recorded


def check_record(label: str, tags: Mapping[str, str], tree: Tree) -> bool:
    """True when `tree` is the content the registry records, False when there is no
    record; ContentMismatch naming the files and both digests when it differs."""
    recorded = recorded_digest(label, tags)
    if recorded is None:
        return False
    found = digest_of(tree)
    if found == recorded:
        return True
    listed = parse_files_record(tags.get(FILES_TAG, ""), recorded)
    head = (
        f"{label}: the files are not the ones the registry records "
        f"(downloaded {found}, recorded {recorded}); nothing was kept"
    )
    if listed is None:
        why = (
            "the record keeps no per-file list"
            if FILES_TAG not in tags
            else (f"its {FILES_TAG} list does not match the digest, so it is not believed")
        )
        raise ContentMismatch([f"{head} ({why}; `regctl verify` shows the digests)"])
    raise ContentMismatch([head, *_named(differences(listed, tree))])


def check_pin(label: str, pinned: str | None, found: str | None) -> None:
    """ContentMismatch when a pinned digest (`--digest`) is not `found`; DownloadError
    when the pin is malformed (`found` None: only that is checked)."""
    if pinned is None:
        return
    if not DIGEST_PATTERN.match(pinned):
        raise DownloadError(f"--digest {pinned!r} is not sha256:<64 hex digits>")
    if found is not None and pinned != found:
        raise ContentMismatch(
            [f"{label}: the files give {found}, but {pinned} was required (--digest)"]
        )


def verify_directory(directory: str | os.PathLike[str], digest: str | None = None) -> Verified:
    """Re-hash a downloaded folder against its lock (and `digest`, a pin, when given).

    Returns what was checked; VerifyFailed naming each changed, missing or extra file
    (and any link or other non-file planted in it) otherwise. Offline: no server.
    """
    root = Path(directory)
    shown = str(root)
    lock_path = root / LOCK_FILE
    if not root.is_dir() or root.is_symlink():
        raise VerifyFailed([f"{shown}: not a directory"])
    try:
        text = read_regular(lock_path).decode("utf-8")  # no link, FIFO or device
    except FileNotFoundError:
        raise VerifyFailed(
            [f"{shown}: no {LOCK_FILE} (not a folder `regctl resolve --download` wrote)"]
        ) from None
    except TreeError as exc:  # its message names the lock and what it is
        raise VerifyFailed([f"cannot read the lock: {exc.strerror}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VerifyFailed([f"{lock_path}: cannot read: {exc}"]) from None
    try:
        lock = parse_lock(text)
    except LockError as exc:
        raise VerifyFailed([f"{lock_path}: {exc}"]) from None
    if digest is not None and not DIGEST_PATTERN.match(digest):
        raise VerifyFailed([f"--digest {digest!r} is not sha256:<64 hex digits>"])
    if digest is not None and lock.digest != digest:
        raise VerifyFailed(
            [f"{shown}: its lock records {lock.digest}, but {digest} was required (--digest)"]
        )
    try:
        found = hash_tree(root, exclude=[LOCK_FILE])
    except (TreeError, OSError) as exc:
        raise VerifyFailed([f"{shown}: cannot read: {exc}"]) from None
    problems = _problems(lock.tree, found)
    if problems:
        count = "1 file differs" if len(problems) == 1 else f"{len(problems)} files differ"
        raise VerifyFailed([f"{shown}: {count} from its lock", *_named(problems)])
    against = f"its lock ({lock.digest}"
    against += (
        ", pinned)"
        if digest
        else (
            ", which matched the registry's record at download)"
            if lock.verified
            else "; the version had no content record at download)"
        )
    )
    return Verified(shown, lock.digest, len(found.files), found.bytes, against)


def _problems(recorded: Tree, found: Hashed) -> list[str]:
    out = list(differences(recorded, found.files))
    out += [f"{path}: {kind}, not a regular file" for path, kind in found.others]
    return [line.replace("not in the record", "not in the lock") for line in out]


def _named(lines: Sequence[str]) -> list[str]:
    if len(lines) <= SHOWN:
        return list(lines)
    return [*lines[:SHOWN], f"and {len(lines) - SHOWN} more"]
