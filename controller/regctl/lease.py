"""One writer at a time: a lease held in the registry itself.

The lease is a registered model named `regctl-lease` whose tags say who holds it, for
which commit, and until when. Creating a registered model is atomic in MLflow (a second
create gets RESOURCE_ALREADY_EXISTS), so at most one apply can hold it. A holder refreshes
its expiry while it works; a lease past its expiry is stale and may be taken over; an
operator can break one by its id only (`regctl unlock LEASE_ID`), never by accident.

Taking over a stale lease is a read, a delete and a create; two processes that both
saw the same stale lease could race there, so a holder re-reads the lease before each
refresh and stops if it no longer holds it.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from regctl.errors import AlreadyExists, NotFound, RegctlError
from regctl.model import ObservedModel

LEASE_MODEL = "regctl-lease"
DEFAULT_TTL = 900.0


class LeaseStore(Protocol):
    """The registry calls a lease needs."""

    def search_models(self, names: Collection[str] | None) -> dict[str, ObservedModel]: ...

    def create_model(self, name: str, description: str | None, tags: Mapping[str, str]) -> None: ...

    def set_model_tag(self, name: str, key: str, value: str) -> None: ...

    def delete_model(self, name: str) -> None: ...


class LeaseHeld(RegctlError):
    """Another writer holds the lease."""


class LeaseLost(RegctlError):
    """This writer's lease was broken or taken over while it worked."""


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds the registry, for which commit, until when (epoch seconds)."""

    id: str
    holder: str
    commit: str
    acquired_at: float
    expires_at: float

    def tags(self) -> dict[str, str]:
        return {
            "regctl.lease.id": self.id,
            "regctl.lease.holder": self.holder,
            "regctl.lease.commit": self.commit,
            "regctl.lease.acquired_at": f"{self.acquired_at:.0f}",
            "regctl.lease.expires_at": f"{self.expires_at:.0f}",
        }

    def describe(self, now: float) -> str:
        left = self.expires_at - now
        when = f"expires in {left:.0f} s" if left > 0 else f"expired {-left:.0f} s ago"
        commit = f" at commit {self.commit[:12]}" if self.commit else ""
        return f"lease {self.id} held by {self.holder}{commit} ({when})"


def _parse(model: ObservedModel) -> Lease | None:
    t = model.tags
    try:
        return Lease(
            id=t["regctl.lease.id"],
            holder=t.get("regctl.lease.holder", "?"),
            commit=t.get("regctl.lease.commit", ""),
            acquired_at=float(t.get("regctl.lease.acquired_at", "0")),
            expires_at=float(t["regctl.lease.expires_at"]),
        )
    except (KeyError, ValueError):
        return None


def current(store: LeaseStore) -> Lease | None:
    """The lease as the registry holds it now, or None."""
    found = store.search_models([LEASE_MODEL]).get(LEASE_MODEL)
    if found is None:
        return None
    return _parse(found) or Lease("?", "unknown (unreadable lease)", "", 0.0, 0.0)


@dataclass
class Holder:
    """A held lease: refresh it while working, release it at the end."""

    store: LeaseStore
    lease: Lease
    ttl: float
    clock: Callable[[], float] = time.time
    refreshed: float = 0.0

    def refresh(self, *, force: bool = False) -> None:
        """Extend the expiry (at most every ttl/3 unless forced); stop if the lease was lost."""
        now = self.clock()
        if not force and now - self.refreshed < self.ttl / 3:
            return
        seen = current(self.store)
        if seen is None or seen.id != self.lease.id:
            who = seen.describe(now) if seen else "nobody holds it now"
            raise LeaseLost(f"lost lease {self.lease.id} while applying ({who}); stopping")
        self.lease = Lease(
            self.lease.id,
            self.lease.holder,
            self.lease.commit,
            self.lease.acquired_at,
            now + self.ttl,
        )
        self.store.set_model_tag(
            LEASE_MODEL, "regctl.lease.expires_at", f"{self.lease.expires_at:.0f}"
        )
        self.refreshed = now

    def release(self) -> None:
        """Give the lease back if this holder still has it."""
        seen = current(self.store)
        if seen is not None and seen.id == self.lease.id:
            with contextlib.suppress(NotFound):
                self.store.delete_model(LEASE_MODEL)


def acquire(
    store: LeaseStore,
    holder: str,
    commit: str,
    *,
    ttl: float = DEFAULT_TTL,
    timeout: float = 0.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    poll: float = 1.0,
) -> Holder:
    """Take the lease, waiting up to `timeout` seconds for a live holder to finish."""
    deadline = clock() + timeout
    while True:
        now = clock()
        lease = Lease(uuid.uuid4().hex[:12], holder, commit, now, now + ttl)
        try:
            store.create_model(
                LEASE_MODEL,
                "regctl apply lease: one writer at a time (do not edit)",
                lease.tags(),
            )
            return Holder(store, lease, ttl, clock, now)
        except AlreadyExists:
            pass
        seen = current(store)
        if seen is None:
            continue  # released between our create and our read: try again
        if seen.expires_at < now:
            # stale: take it over, but only the one we saw
            again = current(store)
            if again is not None and again.id == seen.id:
                with contextlib.suppress(NotFound):
                    store.delete_model(LEASE_MODEL)
            continue
        if now >= deadline:
            raise LeaseHeld(
                f"another apply is running: {seen.describe(now)}; waited {timeout:.0f} s "
                f"(--lock-timeout). If that holder is gone, wait for the lease to expire or "
                f"run `regctl unlock {seen.id}`"
            )
        sleep(min(poll, max(0.0, deadline - now)))


def break_lease(store: LeaseStore, lease_id: str) -> Lease:
    """Remove the lease with this id (and only it)."""
    seen = current(store)
    if seen is None:
        raise RegctlError(f"no lease is held (nothing to unlock for {lease_id})")
    if seen.id != lease_id:
        raise RegctlError(
            f"lease {lease_id} is not the current lease; the current one is "
            f"{seen.describe(time.time())}. Unlock breaks a lease by its exact id only"
        )
    store.delete_model(LEASE_MODEL)
    return seen
