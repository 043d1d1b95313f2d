"""Content digests of model versions: the bytes that were reviewed, recorded registry side.

A version's content is the files under its source (`runs:/<run>/<artifact_path>`), with
paths relative to that source: the whole run's files when `artifact_path` is "" (the
default), the files below `artifact_path/` when it names a folder, the one file (by its
name) when it names a file. Its digest is `core.runs.tree_digest` of those files, the
same function that digests a run directory, so a digest computed from the run directory
at sync time compares with one computed from a download.

The record is two model-version tags (registry side: runs get no tags):

- `regctl.digest`: `sha256:<64 hex>`, the tree digest;
- `regctl.files`: the per-file list, one line per file, `<sha256> <size> <path>`, sorted
  by path: exactly the lines the tree digest hashes, so the list is checked against the
  digest before it is believed. It is kept when it fits in one tag (MLflow's limit for
  registry tag values is 100,000 characters: about 1,000 files); a larger version keeps
  the digest only, and a mismatch then names the digests, not the file.

Where the bytes come from: the run directory of the manifest entry (sync hashed every
file as it read it, and the run is proven to hold the same files), so apply records what
the pull request reviewed. A version whose entry names no run directory gets no record
from apply: `regctl verify --record MODEL/VERSION` records it after a person has checked.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from regctl.core.model import DesiredModel, ObservedModel
from regctl.core.plan import Binding, Change, CreateVersion, RecordDigest
from regctl.core.runs import RunFile, tree_digest
from regctl.errors import Problem

__all__ = [
    "DIGEST_PATTERN",
    "DIGEST_TAG",
    "FILES_TAG",
    "FILES_TAG_LIMIT",
    "Tree",
    "content_changes",
    "differences",
    "digest_of",
    "files_record",
    "parse_files_record",
    "version_tree",
]

DIGEST_TAG: Final = "regctl.digest"
FILES_TAG: Final = "regctl.files"
FILES_TAG_LIMIT: Final = 100_000
DIGEST_PATTERN: Final = re.compile(r"^sha256:[0-9a-f]{64}\Z")  # \Z: `$` allows a final "\n"
_LINE = re.compile(r"^([0-9a-f]{64}) (0|[1-9][0-9]{0,15}) (.+)\Z")

Tree = tuple[tuple[str, int, str], ...]
"""(path relative to the version's source, size, sha256 hex), sorted by path."""


def version_tree(files: Iterable[RunFile], artifact_path: str) -> Tree:
    """The files of a version whose source is `artifact_path` inside a run holding `files`."""
    prefix = artifact_path.strip("/")
    out = []
    for f in files:
        if not prefix:
            out.append((f.rel_path, f.size, f.sha256))
        elif f.rel_path == prefix:
            out.append((prefix.rsplit("/", 1)[-1], f.size, f.sha256))
        elif f.rel_path.startswith(prefix + "/"):
            out.append((f.rel_path[len(prefix) + 1 :], f.size, f.sha256))
    return tuple(sorted(out))


def digest_of(tree: Tree) -> str:
    return tree_digest(tree)


def files_record(tree: Tree) -> str | None:
    """The `regctl.files` value of a version, or None when it does not fit one tag."""
    text = "".join(f"{sha} {size} {path}\n" for path, size, sha in tree)
    return text if len(text) <= FILES_TAG_LIMIT else None


def parse_files_record(text: str, digest: str) -> Tree | None:
    """The per-file list of a record, or None when it is malformed or does not hash to
    `digest` (a tag anyone with write access could have edited: believed only when it
    matches the digest)."""
    out: list[tuple[str, int, str]] = []
    for line in text.split("\n")[:-1] if text.endswith("\n") else [None]:
        m = _LINE.match(line) if line is not None else None
        if m is None:
            return None
        out.append((m.group(3), int(m.group(2)), m.group(1)))
    tree = tuple(sorted(out))
    if len({p for p, _, _ in tree}) != len(tree) or tree_digest(tree) != digest:
        return None
    return tree


def differences(recorded: Tree, found: Tree) -> Sequence[str]:
    """One line per file that differs between a record and what was found."""
    want = {p: (size, sha) for p, size, sha in recorded}
    have = {p: (size, sha) for p, size, sha in found}
    out = []
    for path in sorted(set(want) | set(have)):
        a, b = want.get(path), have.get(path)
        if a == b:
            continue
        if a is None:
            out.append(f"{path}: not in the record (extra file)")
        elif b is None:
            out.append(f"{path}: missing (recorded sha256 {a[1]})")
        else:
            out.append(f"{path}: sha256 {b[1]} found, {a[1]} recorded")
    return out


def content_changes(
    model: DesiredModel,
    current: ObservedModel | None,
    bindings: Mapping[int, Binding],
    changes: list[Change],
    contents: Mapping[tuple[str, str], Sequence[RunFile]],
    problems: list[Problem],
) -> list[Change]:
    """Digests for the plan of one model: what its new versions record (set on their
    CreateVersion in `changes`), the RecordDigest of bound versions that have no record
    yet, and a problem for every pin or record the content contradicts.

    `contents` maps (experiment, run name) to the files of the entry's run directory (as
    sync read them). A recorded digest that differs from the run directory is refused:
    the run was proven to hold the directory's files, so the stored files or the record
    changed after the record was made.
    """
    created = {
        c.entry: (i, c)
        for i, c in enumerate(changes)
        if isinstance(c, CreateVersion) and c.model == model.name
    }
    out: list[Change] = []
    for v in model.versions:
        b = bindings.get(v.index)
        if b is None:
            continue
        files = contents.get((model.experiment, v.run)) if model.experiment and v.run else None
        tree = version_tree(files, v.artifact_path) if files is not None and v.run_dir else None
        found = digest_of(tree) if tree is not None else None
        if b.created:
            if v.index in created and tree is not None:
                at, change = created[v.index]
                changes[at] = dataclasses.replace(change, digest=found, files=files_record(tree))
            expected, source = found, "the run directory's files give"
        else:
            assert current is not None
            recorded = current.versions[b.version].tags.get(DIGEST_TAG)
            why = _record_problem(model, b.version, recorded, found)
            if why is not None:
                problems.append(Problem(v.location, f"versions[{v.index}].{why[0]}", why[1]))
                continue
            if not recorded and found is not None and tree is not None:
                record = files_record(tree)
                out.append(RecordDigest(model.name, b.version, found, record))
            expected = recorded or found
            source = "the registry records" if recorded else "the run directory's files give"
        if v.digest is not None and v.digest != expected:
            why_pin = _pin(v.digest, expected, source)
            problems.append(Problem(v.location, f"versions[{v.index}].digest", why_pin))
    return out


def _record_problem(
    model: DesiredModel, number: int, recorded: str | None, found: str | None
) -> tuple[str, str] | None:
    """(field, message) when a version's record is malformed or the run directory
    contradicts it, else None."""
    if recorded is not None and not DIGEST_PATTERN.match(recorded):
        return "digest", _malformed(model, number)
    if recorded and found and recorded != found:
        return "run_dir", (
            f"version {number} of {model.name!r} records content {recorded}, but the run "
            f"directory's files give {found}: the stored files or the record changed after "
            f"it was made; check with `regctl verify {model.name}/{number}`"
        )
    return None


def _malformed(model: DesiredModel, number: int) -> str:
    return (
        f"version {number} of {model.name!r} has a malformed {DIGEST_TAG} tag; remove it and "
        f"record the digest again with `regctl verify --record {model.name}/{number}`"
    )


def _pin(pinned: str, expected: str | None, source: str) -> str:
    if expected is None:
        return (
            f"pinned to {pinned}, but there is nothing to check it against: the version has "
            "no recorded digest and the entry no run directory (`regctl verify --record` "
            "records one)"
        )
    return f"pinned to {pinned}, but {source} {expected}"
