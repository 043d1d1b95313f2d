"""The lock of a downloaded folder: `regctl-resolved.json`, what was resolved and its bytes.

`regctl resolve --download DIR` writes it into DIR (after every file was checked against
the registry's content record); `regctl verify DIR` re-hashes DIR against it, offline.
Besides what was resolved (`Resolved.to_json()`), the lock holds:

- `files`: every file of DIR but the lock itself, sorted by path, each with `path`
  (relative, POSIX), `size` and `sha256` (hex);
- `digest`: the tree digest of those files (`regctl.core.runs.tree_digest`, the digest
  the registry records as `regctl.digest`);
- `verified`: true when the files matched the digest the registry records for the
  version, false when the version has no record (registered before content digests).

Of what was resolved, `model_file` (the file inference loads) must be one of `files`:
the digest and a pin cover the files, not the other fields, so a rewritten lock could
otherwise send a loader outside the folder. The other fields (params, version, ...) are
the registry's and are not covered by the digest: read them from `regctl.resolve`.

The lock lies in the folder it describes, so it proves only that nothing changed since
the download (a disk error, a careless edit, a partial copy); someone who can rewrite
files can rewrite the lock too. Against that, pin the digest: `regctl verify DIR --digest
sha256:...` (the manifest's `digest:` pin, or the digest the registry records) fails when
the lock's digest is another. A lock is read as hostile input: every field is checked
and the listed files must hash to its digest before any of it is believed.
"""

from __future__ import annotations

import itertools
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from regctl.core.digests import DIGEST_PATTERN, Tree, digest_of

__all__ = ["LOCK_FILE", "Lock", "LockError", "lock_fields", "parse_lock", "safe_relative"]

LOCK_FILE: Final = "regctl-resolved.json"
_SHA = re.compile(r"^[0-9a-f]{64}\Z")
_MAX_SIZE: Final = 1 << 60


class LockError(ValueError):
    """A lock that cannot be believed; `field` names where (`files[3].sha256`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Lock:
    """A parsed, self-consistent lock: the files, their digest, and whether they matched
    the registry's record at download. (Its other fields are the registry's, not covered
    by the digest: nothing here reads them.)"""

    tree: Tree
    digest: str
    verified: bool


def lock_fields(tree: Tree, verified: bool) -> dict[str, Any]:
    """The lock's own fields (added to `Resolved.to_json()`)."""
    return {
        "files": [{"path": p, "size": size, "sha256": sha} for p, size, sha in tree],
        "digest": digest_of(tree),
        "verified": verified,
    }


def parse_lock(text: str) -> Lock:
    """Parse a lock; LockError naming the field when anything is off."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockError("", f"not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except (RecursionError, ValueError):
        raise LockError("", "not valid JSON") from None
    if not isinstance(data, dict):
        raise LockError("", "must be a JSON object")
    files = data.get("files")
    if not isinstance(files, list):
        raise LockError("files", "missing or not a list")
    if files and isinstance(files[0], dict) and "sha256" not in files[0] and "digest" not in data:
        raise LockError(
            "files",
            "no sha256 per file: written by a regctl before content digests; download again",
        )
    tree = tuple(sorted(_entry(i, e) for i, e in enumerate(files)))
    paths = [p for p, _, _ in tree]
    # sorted, so a repeated path is next to itself (paths.count was quadratic: a lock of
    # 10^6 entries with one repeat at the end took hours)
    dup = next((a for a, b in itertools.pairwise(paths) if a == b), None)
    if dup is not None:
        raise LockError("files", f"lists {dup!r} twice")
    digest = data.get("digest")
    if not isinstance(digest, str) or not DIGEST_PATTERN.match(digest):
        raise LockError("digest", "missing or not sha256:<64 hex digits>")
    if digest_of(tree) != digest:
        raise LockError("digest", f"{digest} is not the digest of the files it lists (edited?)")
    verified = data.get("verified")
    if not isinstance(verified, bool):
        raise LockError("verified", "missing or not true/false")
    # What inference loads; the digest (and a pin) covers the files, not this field, so
    # it must name one of them: never a path outside the folder or an unchecked file.
    model_file = data.get("model_file")
    if model_file is not None and (not isinstance(model_file, str) or model_file not in paths):
        raise LockError("model_file", f"{model_file!r} is not one of the files the lock lists")
    return Lock(tree=tree, digest=digest, verified=verified)


def _entry(index: int, entry: object) -> tuple[str, int, str]:
    at = f"files[{index}]"
    if not isinstance(entry, Mapping):
        raise LockError(at, "not an object")
    path, size, sha = entry.get("path"), entry.get("size"), entry.get("sha256")
    if not isinstance(path, str) or not safe_relative(path) or path == LOCK_FILE:
        raise LockError(f"{at}.path", f"{path!r} is not a safe relative path")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < _MAX_SIZE:
        raise LockError(f"{at}.size", f"{size!r} is not a size in bytes")
    if not isinstance(sha, str) or not _SHA.match(sha):
        raise LockError(f"{at}.sha256", "not 64 lowercase hex digits")
    return path, size, sha


def safe_relative(path: str) -> bool:
    """A relative POSIX path with no empty, `.` or `..` part, no control character and no
    lone surrogate (a name that was not UTF-8): the names sync logs (`core.runs`), so the
    names a download accepts (`engine.download`) and a lock may list.

    A newline matters most: the tree digest hashes one `<sha> <size> <path>` line per
    file, so a path holding `\\n<sha> <size> <other>` would give the lines of two files."""
    if not path or posixpath.isabs(path) or "\\" in path:
        return False
    if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))
