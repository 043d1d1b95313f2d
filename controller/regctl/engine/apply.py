"""Apply: one handler per change type against the writer port.

Each handler makes the registry hold the change's new value. Creating a version is
the only write that is not naturally idempotent, so a failed create is followed by a
find-by-run before anything else happens: a create whose response was lost is
adopted instead of repeated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import singledispatch
from typing import Any, Protocol

from regctl.core.digests import DIGEST_TAG, FILES_TAG
from regctl.core.model import ENTRY_TAG, PROVENANCE_TAG, entry_identity
from regctl.core.plan import (
    Change,
    CreateModel,
    CreateVersion,
    DeleteAlias,
    DeleteModel,
    DeleteVersion,
    Plan,
    RecordDigest,
    SetAlias,
    SetModelDescription,
    SetModelTag,
    SetVersionDescription,
    SyncRun,
)
from regctl.errors import AlreadyExists, ApplyError, RegctlError, RegistryError
from regctl.ports import RegistryReader, RegistryWriter


class SyncSteps(Protocol):
    """How apply's interpreter executes a SyncRun (engine.sync.SyncExecutor)."""

    def run(self, key: tuple[str, str]) -> str:
        """Log the run of (experiment, run name); its run id."""

    def finish(self) -> object:
        """Record what the sync steps proved (once, after the last of them)."""


@dataclass
class ApplyContext:
    """What handlers share: the ports, the sync executor and the run ids it produced,
    the versions created."""

    writer: RegistryWriter
    reader: RegistryReader
    run_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    sync: SyncSteps | None = None
    created: dict[tuple[str, int], int] = field(default_factory=dict)
    provenance: str = ""
    sleep: Callable[[float], None] = time.sleep
    done: list[Change] = field(default_factory=list)
    create_records: dict[str, str] = field(default_factory=dict)
    """The record a created model carries in its create request: what the plan will do
    to it (its alias moves included), checked against what was done afterwards."""
    adopted: set[str] = field(default_factory=set)
    """Models a CreateModel found existing (an earlier apply's): recorded like any other."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    holding: Callable[[], bool] = lambda: True
    """Whether this apply may still write (the lease is held): provenance is recorded for
    what was written also after a failure or a stop, but never once the lease is lost."""

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
    key = (change.experiment, change.run_name)
    if ctx.sync is not None:
        run_id = ctx.sync.run(key)
        with ctx.lock:
            ctx.run_ids[key] = run_id
    else:  # --no-sync: a run the plan would log is not there, so nothing can use it
        raise ApplyError(f"run {change.run_name!r} was not synced (--no-sync)", done=0, total=0)


@_handle.register
def _(change: CreateModel, ctx: ApplyContext) -> None:
    tags = dict(change.tags)
    if ctx.provenance:
        tags[PROVENANCE_TAG] = ctx.create_records.get(change.model, ctx.provenance)
    try:
        ctx.writer.create_model(change.model, change.description, tags)
    except AlreadyExists:
        # Created by an earlier, interrupted apply (or a lost response): make it match.
        # Its tags may not include this apply's record: provenance writes it afterwards.
        with ctx.lock:
            ctx.adopted.add(change.model)
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
                **({DIGEST_TAG: change.digest} if change.digest else {}),
                **({FILES_TAG: change.files} if change.digest and change.files else {}),
            }
            return ctx.writer.create_version(change.model, source, run_id, change.description, tags)
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
def _(change: RecordDigest, ctx: ApplyContext) -> None:
    # the per-file list first: a digest without its list is a complete record, a list
    # without the digest is ignored (it is believed only when it hashes to the digest)
    if change.files:
        ctx.writer.set_version_tag(change.model, change.version, FILES_TAG, change.files)
    ctx.writer.set_version_tag(change.model, change.version, DIGEST_TAG, change.digest)


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


MAX_PROVENANCE_CHARS = 4000
"""A model's `regctl.applied` value stays well under MLflow's tag value limit."""


def _record(base: str, moves: list[str]) -> str:
    value = base + ("; aliases: " + ", ".join(sorted(moves)) if moves else "")
    if len(value) > MAX_PROVENANCE_CHARS:
        value = value[: MAX_PROVENANCE_CHARS - 1] + "\u2026"
    return value


def _alias_moves(changes: list[Change], number: Callable[[SetAlias], int]) -> list[str]:
    moves = []
    for c in changes:
        if isinstance(c, SetAlias):
            moves.append(f"{c.alias} -> v{number(c)}")
        elif isinstance(c, DeleteAlias):
            moves.append(f"{c.alias} removed")
    return moves


def _by_model(changes: Iterable[Change]) -> dict[str, list[Change]]:
    out: dict[str, list[Change]] = {}
    for change in changes:
        if not isinstance(change, SyncRun):  # runs get no regctl tags: theirs are people's
            out.setdefault(change.model, []).append(change)
    return out


def planned_records(plan: Plan, provenance: str) -> dict[str, str]:
    """Model -> the record a model the plan creates carries from its create request:
    the commit and the aliases the plan points at the versions it creates (numbered as
    the plan expects: a new model's versions are numbered 1, 2, ... in manifest order)."""
    if not provenance:
        return {}
    out = {}
    for model, changes in _by_model(plan.changes).items():
        if not any(isinstance(c, CreateModel) for c in changes):
            continue
        expected = {c.entry: c.expected_version for c in changes if isinstance(c, CreateVersion)}

        def number(c: SetAlias, expected: dict[int, int] = expected) -> int:
            return expected.get(c.entry, c.new) if c.entry is not None else c.new

        out[model] = _record(provenance, _alias_moves(changes, number))
    return out


def provenance_records(ctx: ApplyContext) -> dict[str, str]:
    """Model -> the `regctl.applied` value this apply still has to write: one tag per
    changed model, naming the commit and every alias it moved ("Production -> v3"),
    written after the model's changes. A model this apply created carries its record
    from the create request; it is written again only when what was done differs from
    what that record said (a failure part-way, another number). A deleted model has none."""
    if not ctx.provenance:
        return {}

    def number(c: SetAlias) -> int:
        return ctx.created.get((c.model, c.entry), c.new) if c.entry is not None else c.new

    out = {}
    for model, changes in sorted(_by_model(ctx.done).items()):
        if any(isinstance(c, DeleteModel) for c in changes):
            continue
        value = _record(ctx.provenance, _alias_moves(changes, number))
        created = model not in ctx.adopted and any(isinstance(c, CreateModel) for c in changes)
        if created and ctx.create_records.get(model, ctx.provenance) == value:
            continue
        out[model] = value
    return out


def _record_provenance(ctx: ApplyContext, pool: ThreadPoolExecutor) -> str | None:
    """Write every changed model's record (concurrently); the first error, if any."""
    records = provenance_records(ctx)

    def write(model: str, value: str) -> None:
        if ctx.holding():  # asked before every write: never once the lease is lost
            ctx.writer.set_model_tag(model, PROVENANCE_TAG, value)

    futures = [pool.submit(write, model, value) for model, value in records.items()]
    error = None
    for future in futures:
        try:
            future.result()
        except RegistryError as err:
            error = error or f"recording provenance: {err}"
    return error


def _finish_sync(ctx: ApplyContext, state: _Progress) -> None:
    """After the sync phase: record what it proved on the ledger, before any registry
    write; after a failure or a stop in it too, for the runs already logged."""
    assert ctx.sync is not None
    try:
        ctx.sync.finish()
    except RegctlError as err:
        state.fail(str(err))


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
    What was written is recorded (provenance) also then, unless the lease is lost.
    """
    total = len(plan.changes)
    state = _Progress(total, progress)
    if not ctx.create_records:
        ctx.create_records.update(planned_records(plan, ctx.provenance))
    phases: dict[int, dict[tuple[Any, ...], list[Change]]] = {}
    for change in plan.changes:
        phases.setdefault(change.phase, {}).setdefault(change.lane(), []).append(change)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        _run_phases(phases, ctx, state, should_stop, pool)
        if ctx.holding():
            recorded = _record_provenance(ctx, pool)
            if recorded is not None:
                state.fail(recorded)
    if state.error is not None:
        raise ApplyError(
            f"{state.error}; applied {state.done} of {total} changes",
            done=state.done,
            total=total,
        ) from None
    return ApplyReport(done=total, total=total, created=dict(ctx.created))


def _run_phases(
    phases: Mapping[int, Mapping[tuple[Any, ...], list[Change]]],
    ctx: ApplyContext,
    state: _Progress,
    should_stop: Callable[[], bool] | None,
    pool: ThreadPoolExecutor,
) -> None:
    sync_open = ctx.sync is not None
    for phase in sorted(phases):
        if sync_open and phase > SyncRun.phase:
            sync_open = False
            _finish_sync(ctx, state)
            if state.error is not None:
                return
        futures = [
            pool.submit(_run_lane, items, ctx, state, should_stop)
            for items in phases[phase].values()
        ]
        for future in futures:
            future.result()
        if state.error is not None:
            break
    if sync_open and ctx.holding():
        _finish_sync(ctx, state)


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
        except (RegctlError, OSError) as err:  # a file that vanished under sync, too
            state.fail(str(err))
            return
        with ctx.lock:
            ctx.done.append(change)
        state.finished(change)
