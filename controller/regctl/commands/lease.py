"""The apply lease as commands take it (`take_lease`, with what apply records as provenance)
and break it (`regctl unlock`).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import TYPE_CHECKING

from regctl.adapters import git as gitinfo
from regctl.config import (
    Settings,
)
from regctl.engine.generation import Lease
from regctl.engine.lease import Holder, acquire, break_lease
from regctl.ports import Registry

if TYPE_CHECKING:
    pass


def provenance(settings: Settings) -> tuple[str, str, str]:
    """(tag value, actor, commit) for what apply records; see model.PROVENANCE_TAG.

    `REGCTL_COMMIT` (set by the apply workflow to the checked-out head) overrides the
    commit git reports; a working tree with uncommitted manifest changes says so.
    """
    info = gitinfo.provenance(settings.repo, os.environ)
    commit = os.environ.get("REGCTL_COMMIT") or info.commit
    shown = commit or "(not in git)"
    if info.dirty and not os.environ.get("REGCTL_COMMIT"):
        shown += " with uncommitted changes"
    at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    via = f" via {info.run_url}" if info.run_url else ""
    return f"commit {shown} by {info.actor} at {at}{via}", info.actor, commit


def take_lease(settings: Settings, registry: Registry, timeout: float) -> Holder:
    """The lease, with its heartbeat running until `release()`."""
    _, actor, commit = provenance(settings)
    holder = f"{actor} on {socket.gethostname()} (pid {os.getpid()})"
    lease = acquire(registry, holder, commit, timeout=timeout)
    lease.start_heartbeat()
    return lease


def unlock(registry: Registry, lease_id: str) -> Lease:
    """Break the apply lease with this id (and only it)."""
    return break_lease(registry, lease_id)
