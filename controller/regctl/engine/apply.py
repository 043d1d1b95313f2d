"""Apply: one handler per change type against the writer port.

Each handler makes the registry hold the change's new value. Creating a version is
the only write that is not naturally idempotent, so a failed create is followed by a
find-by-run before anything else happens: a create whose response was lost is
adopted instead of repeated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import singledispatch
from typing import Any

from regctl.core.model import ENTRY_TAG, PROVENANCE_TAG, entry_identity
from regctl.core.plan import (
    Change,
    CreateModel,
    CreateVersion,
    DeleteAlias,
    DeleteModel,
    DeleteVersion,
    Plan,
    SetAlias,
    SetModelDescription,
    SetModelTag,
    SetVersionDescription,
    SyncRun,
)
from regctl.errors import AlreadyExists, ApplyError, RegistryError
from regctl.ports import RegistryReader, RegistryWriter


@dataclass
class ApplyContext:
    """What handlers share: the ports, run ids that sync produced, versions created."""

    writer: RegistryWriter
    reader: RegistryReader
    run_ids: Mapping[tuple[str, str], str] = field(default_factory=dict)
    created: dict[tuple[str, int], int] = field(default_factory=dict)
    provenance: str = ""
    sleep: Callable[[float], None] = time.sleep
    attributed: set[tuple[str, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def provenance_tags(self) -> dict[str, str]:
        return {PROVENANCE_TAG: self.provenance} if self.provenance else {}


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """How far apply got. `done == total` means every change was written."""

    done: int
    total: int
    created: Mapping[tuple[str, int], int]


@singledispatch
def _handle(change: Change, ctx: ApplyContext) -> None:
    raise NotImplementedError(type(change).__name__)


@_handle.register
def _(change: SyncRun, ctx: ApplyContext) -> None:
    # Sync runs before apply (commands.apply); here it only has to have happened.
    if (change.experiment, change.run_name) not in ctx.run_ids:
        raise ApplyError(f"run {change.run_name!r} was not synced", done=0, total=0)


@_handle.register
def _(change: CreateModel, ctx: ApplyContext) -> None:
    tags = {**change.tags, **ctx.provenance_tags}
    try:
        ctx.writer.create_model(change.model, change.description, tags)
        ctx.attributed.add((change.model, 0))
    except AlreadyExists:
        # Created by an earlier, interrupted apply (or a lost response): make it match.
        if change.description is not None:
            ctx.writer.update_model_description(change.model, change.description)
        for key, value in change.tags.items():
            ctx.writer.set_model_tag(change.model, key, value)


@_handle.register
def _(change: SetModelDescription, ctx: ApplyContext) -> None:
    ctx.writer.update_model_description(change.model, change.new)


@_handle.register
def _(change: SetModelTag, ctx: ApplyContext) -> None:
    ctx.writer.set_model_tag(change.model, change.key, change.new)


def _run_id(change: CreateVersion, ctx: ApplyContext) -> str:
    if change.run_id is not None:
        return change.run_id
    key = (change.experiment or "", change.run_name or "")
    if key not in ctx.run_ids:
        raise ApplyError(
            f"{change.location}: run {change.run_name!r} has no run id (not synced)",
            done=0,
            total=0,
        )
    return ctx.run_ids[key]


CREATE_ATTEMPTS = 3
"""A transient create failure is retried only after find-by-run showed it did not commit."""


def _create_or_adopt(change: CreateVersion, ctx: ApplyContext, run_id: str) -> int:
    source = change.source(run_id)
    for attempt in range(CREATE_ATTEMPTS):
        try:
            tags = {
                **ctx.provenance_tags,
                ENTRY_TAG: entry_identity(change.experiment, change.run_name, run_id),
            }
            number = ctx.writer.create_version(
                change.model, source, run_id, change.description, tags
            )
            ctx.attributed.add((change.model, number))
            return number
        except RegistryError as err:
            # The create may have committed although we saw an error (lost response).
            # Look before anything else, so one entry never gets two versions.
            found = [
                v for v in ctx.reader.versions_of_run(change.model, run_id) if v.source == source
            ]
            if found:
                for extra in found[1:]:
                    ctx.writer.delete_version(change.model, extra.version)
                if change.description is not None and found[0].description != change.description:
                    ctx.writer.update_version_description(
                        change.model, found[0].version, change.description
                    )
                return found[0].version
            if not err.transient or attempt == CREATE_ATTEMPTS - 1:
                raise
            ctx.sleep(2.0**attempt)
    raise AssertionError("unreachable")


@_handle.register
def _(change: CreateVersion, ctx: ApplyContext) -> None:
    run_id = _run_id(change, ctx)
    number = _create_or_adopt(change, ctx, run_id)
    if change.pinned and number != change.expected_version:
        ctx.writer.delete_version(change.model, number)
        raise ApplyError(
            f"{change.location}: MLflow assigned version {number} to "
            f"{change.run_name or run_id}, but the entry is pinned to "
            f"{change.expected_version} (another writer registered a version meanwhile, or a "
            f"deleted version consumed the number); version {number} was deleted again. "
            "Remove or update the pin and apply again",
            done=0,
            total=0,
        )
    ctx.created[(change.model, change.entry)] = number


@_handle.register
def _(change: SetVersionDescription, ctx: ApplyContext) -> None:
    ctx.writer.update_version_description(change.model, change.version, change.new)


@_handle.register
def _(change: SetAlias, ctx: ApplyContext) -> None:
    number = change.new
    if change.entry is not None:
        number = ctx.created.get((change.model, change.entry), change.new)
    ctx.writer.set_alias(change.model, change.alias, number)


@_handle.register
def _(change: DeleteAlias, ctx: ApplyContext) -> None:
    ctx.writer.delete_alias(change.model, change.alias)


@_handle.register
def _(change: DeleteVersion, ctx: ApplyContext) -> None:
    ctx.writer.delete_version(change.model, change.version)


@_handle.register
def _(change: DeleteModel, ctx: ApplyContext) -> None:
    ctx.writer.delete_model(change.model)


def _touches(change: Change, ctx: ApplyContext) -> list[tuple[str, int]]:
    """What a change makes attributable: (model, 0) for the model, (model, n) for a version.

    Every change is attributed to its model. A version is attributed only when the apply
    created it or pointed an alias at it, so its tag keeps answering "which commit made
    or promoted this version": a later description edit is recorded on the model and does
    not overwrite it (and costs one request less per edited version).
    """
    if isinstance(change, DeleteModel | SyncRun):
        return []
    out = [(change.model, 0)]
    if isinstance(change, CreateVersion):
        number = ctx.created.get((change.model, change.entry))
        if number is not None:
            out.append((change.model, number))
    elif isinstance(change, SetAlias):
        number = change.new
        if change.entry is not None:
            number = ctx.created.get((change.model, change.entry), change.new)
        out.append((change.model, number))
    return out


def _attribute(change: Change, ctx: ApplyContext) -> None:
    """Record commit, actor and time on what the change touched, once per object per apply."""
    if not ctx.provenance:
        return
    for model, number in _touches(change, ctx):
        with ctx.lock:
            if (model, number) in ctx.attributed:
                continue
            ctx.attributed.add((model, number))
        if number == 0:
            ctx.writer.set_model_tag(model, PROVENANCE_TAG, ctx.provenance)
        else:
            ctx.writer.set_version_tag(model, number, PROVENANCE_TAG, ctx.provenance)


def lane(change: Change) -> tuple[Any, ...]:
    """Changes in one lane must run in plan order; different lanes may run concurrently.

    Versions of one model share a lane (numbers are assigned in manifest order); every
    other change touches one object (an alias, a tag, a description) and has its own.
    """
    if isinstance(change, CreateVersion | CreateModel | DeleteModel):
        return (change.model,)
    if isinstance(change, SetAlias | DeleteAlias):
        return (change.model, "alias", change.alias)
    if isinstance(change, SetModelTag):
        return (change.model, "tag", change.key)
    if isinstance(change, SetVersionDescription | DeleteVersion):
        return (change.model, "version", change.version)
    return (change.model, change.verb)


def apply_plan(
    plan: Plan,
    ctx: ApplyContext,
    *,
    progress: Callable[[int, int, Change], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    concurrency: int = 1,
) -> ApplyReport:
    """Write every change: phase by phase in plan order, lanes of a phase concurrently.

    Stops at the first failure (after the writes in flight) with an ApplyError that says
    how many changes were applied; `should_stop` ends it the same way between writes.
    """
    changes = [c for c in plan.changes if not isinstance(c, SyncRun)]
    total = len(changes)
    state = _Progress(total, progress)
    phases: dict[int, dict[tuple[Any, ...], list[Change]]] = {}
    for change in changes:
        phases.setdefault(change.phase, {}).setdefault(lane(change), []).append(change)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for phase in sorted(phases):
            lanes = list(phases[phase].values())
            futures = [pool.submit(_run_lane, items, ctx, state, should_stop) for items in lanes]
            for future in futures:
                future.result()
            if state.error is not None:
                raise ApplyError(
                    f"{state.error}; applied {state.done} of {total} changes",
                    done=state.done,
                    total=total,
                ) from None
    return ApplyReport(done=total, total=total, created=dict(ctx.created))


class _Progress:
    """Shared between lanes: how many changes are done, the first error, the stop flag."""

    def __init__(self, total: int, callback: Callable[[int, int, Change], Any] | None) -> None:
        self.total = total
        self.done = 0
        self.error: str | None = None
        self.callback = callback
        self.lock = threading.Lock()

    def fail(self, message: str) -> None:
        with self.lock:
            if self.error is None:
                self.error = message

    def finished(self, change: Change) -> None:
        with self.lock:
            self.done += 1
            done = self.done
        if self.callback is not None:
            self.callback(done, self.total, change)


def _run_lane(
    items: list[Change],
    ctx: ApplyContext,
    state: _Progress,
    should_stop: Callable[[], bool] | None,
) -> None:
    for change in items:
        if state.error is not None:
            return
        if should_stop is not None and should_stop():
            state.fail("stopped")
            return
        try:
            _handle(change, ctx)
            _attribute(change, ctx)
        except (ApplyError, RegistryError) as err:
            state.fail(str(err))
            return
        state.finished(change)
