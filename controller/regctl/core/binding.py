"""Which registry version a manifest entry is: the one rule `diff` and `import` share.

An entry names a run (and an artifact path inside it) and may pin a version number.
Binding goes in two passes over the entries, in manifest order:

1. Pins first: a pin names its version outright (`pinned`). Which pins stand is the
   caller's decision: `diff` refuses a pin on another run's version, `import` takes
   every pin on a live version and rewrites the entry to match it.
2. Adoption: an unpinned entry whose run is known is the lowest unclaimed version of
   that run whose source is the entry's artifact path; when the entry gives no
   `artifact_path`, the lowest unclaimed version of the run at any path inside it.
   A version whose source is not inside its run is never any entry's version.

`source_path` says where a version's source is inside its run (None: not inside it).
Pure: values in, entry index -> version number out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from regctl.core.model import DesiredVersion


def source_path(source: str, run_id: str, artifact_uri: str | None = None) -> str | None:
    """The artifact path a version's source points at inside its run, or None if unknown.

    Only two forms are inside the run: `runs:/<run_id>[/<path>]`, and the run's own
    artifact root (`artifact_uri`, as the tracking server reports it) plus a path. MLflow
    stores any other source as given (`s3://bucket/<run_id>/artifacts` registered with
    that run id is somebody else's bucket), so such a version is never taken for an
    entry's version: its files are not the run's.
    """
    prefix = f"runs:/{run_id}"
    rest: str | None = None
    if source in (prefix, prefix + "/"):
        rest = ""
    elif source.startswith(prefix + "/"):
        rest = source[len(prefix) + 1 :]
    elif artifact_uri:
        root = artifact_uri.rstrip("/")
        if source.rstrip("/") == root:
            rest = ""
        elif source.startswith(root + "/"):
            rest = source[len(root) + 1 :]
    if rest is None:
        return None
    rest = rest.strip("/")
    if rest and any(part in ("", ".", "..") for part in rest.split("/")):
        return None
    return rest


class Candidate(Protocol):
    """A registry version as binding sees it."""

    @property
    def number(self) -> int: ...

    @property
    def run_id(self) -> str: ...

    @property
    def path(self) -> str | None:
        """The artifact path its source names inside its run ("" for the root), None
        when the source is not inside the run (`source_path`)."""
        ...


@dataclass(frozen=True, slots=True)
class Registered:
    """A registry version's number, run and path inside the run (see `Candidate`)."""

    number: int
    run_id: str
    path: str | None


def pinned(entries: Iterable[DesiredVersion], numbers: Collection[int]) -> dict[int, int]:
    """Entry index -> its pin, for the entries pinned to a version in `numbers`."""
    return {v.index: v.version for v in entries if v.version is not None and v.version in numbers}


def adopt(
    entry: DesiredVersion, run_id: str, candidates: Iterable[Candidate], claimed: Collection[int]
) -> int | None:
    """The version an unpinned entry of run `run_id` is, or None (it gets a new one).

    `candidates` in number order: the exact artifact path first; when the entry gives no
    path, the lowest unclaimed version of the run.
    """
    of_run = [
        c
        for c in candidates
        if c.number not in claimed and c.run_id == run_id and c.path is not None
    ]
    exact = [c for c in of_run if c.path == entry.artifact_path]
    if exact:
        return exact[0].number
    if of_run and not entry.artifact_path_given:
        return of_run[0].number
    return None


def bind(
    entries: Sequence[DesiredVersion],
    pins: Mapping[int, int],
    runs: Mapping[int, str | None],
    candidates: Iterable[Candidate],
) -> dict[int, int]:
    """Entry index -> registry version: the `pins` that stand, then adoption.

    `runs`: entry index -> the run id the entry resolves to (absent or None when it
    resolves to none: such an entry is bound only by its pin). `candidates`: the
    versions an entry may adopt. Each version is bound to one entry at most by adoption;
    the entries bound to none are left out.
    """
    ordered = sorted(candidates, key=lambda c: c.number)
    bound = dict(pins)
    claimed = set(pins.values())
    for v in entries:
        run_id = runs.get(v.index)
        if v.index in bound or run_id is None or v.version is not None:
            continue
        number = adopt(v, run_id, ordered, claimed)
        if number is not None:
            bound[v.index] = number
            claimed.add(number)
    return bound
