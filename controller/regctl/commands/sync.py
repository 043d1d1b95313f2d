"""`regctl sync`: log the run directories the manifests reference, under the apply lease."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regctl.commands.console import Console, Silent
from regctl.commands.lease import take_lease
from regctl.commands.planning import load_desired
from regctl.config import (
    Settings,
    default_concurrency,
)
from regctl.engine.lease import Holder
from regctl.engine.sync import SyncItem, SyncReport, SyncStopped, collect, sync
from regctl.ports import Registry

if TYPE_CHECKING:
    from regctl.engine.sync import Progress


def lease_sync(
    lease: Holder,
    items: list[SyncItem],
    registry: Registry,
    progress: Progress | None,
    workers: int,
    *,
    ledger: Mapping[str, str] | None = None,
    known: dict[str, str] | None = None,
) -> SyncReport:
    """Sync under the lease: checked first, stopped before the next write once lost."""
    lease.check()
    try:
        return sync(
            items,
            registry,
            progress=progress,
            workers=workers,
            should_stop=lease.should_stop,
            ledger=ledger,
            known=known,
        )
    except SyncStopped as err:
        lease.ensure()
        raise err


@dataclass(frozen=True)
class SyncOptions:
    """What `regctl sync` was asked to do (its flags)."""

    models: Sequence[str] = ()
    dry_run: bool = False
    lock_timeout: float = 0.0
    concurrency: int | None = None


def run_sync(
    settings: Settings,
    registry: Registry,
    options: SyncOptions = SyncOptions(),
    console: Console | None = None,
) -> SyncReport:
    """Log the referenced run directories (under the lease unless dry-run); `concurrency`
    uploads in flight (default: `default_concurrency`). Progress goes to the console."""
    console = console or Silent()
    desired, _ = load_desired(settings, options.models)
    items = collect(desired, settings.repo)
    known: dict[str, str] = {}
    workers = (
        options.concurrency if options.concurrency is not None else default_concurrency(settings)
    )
    # checks and proves everything, writes nothing
    looked = sync(items, registry, dry_run=True, known=known, workers=workers)
    if options.dry_run or (len(looked.skipped) == len(items) and not looked.unrecorded):
        return looked
    lease = take_lease(settings, registry, options.lock_timeout)
    try:
        return lease_sync(lease, items, registry, console.sync_progress, workers, known=known)
    finally:
        lease.release()
