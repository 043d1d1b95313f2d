"""One writer at a time: a lease held in the registry itself, in numbered generations.

The lease lives in registered models named `regctl-lease-<n>`, n a decimal number: the
generation. Tags say who holds it (lease id, holder, host, pid and the pid's start
time, commit), since when and until when; the description says the same to a person in
the MLflow UI. The holder is the one whose generation is the HIGHEST, while that
generation is live: not released, not expired, and its holder process not known to be
gone. MLflow has no conditional writes, but creating a registered model is atomic (a
second create of a name gets RESOURCE_ALREADY_EXISTS), and that is what the protocol
stands on.

- Acquire: read every generation (one model search, `name LIKE 'regctl-lease%'`). If any
  generation is live, or a live legacy `regctl-lease` (regctl before generations), wait
  or stop naming the holder. Otherwise create generation highest+1: of two acquirers
  that read the same state, exactly one creates it, the other reads again. The creator
  reads again (the confirming read) and yields (deletes its generation, backs off,
  retries) when a higher generation exists or a lower one is live; else it holds the
  lease and deletes the lower generations (best effort). A create whose response was
  lost and that the client retried is recognised by its lease id.
- Hold: `Holder.check()` (my generation is the highest, carries my id, is not released)
  runs before every write phase. A heartbeat thread refreshes the expiry every ttl/3
  (read, set `expires_at`, read again) while apply or sync works. When a refresh fails
  or finds the lease lost, or when the last good refresh is older than 2/3 of the TTL by
  this machine's clocks (one that counts suspend, and the wall clock), the holder is
  lost for good: writers stop before their next write (`should_stop`), and a later
  refresh never revives it.
- Release marks the generation released (`regctl.lease.released` = its lease id); the
  next acquirer deletes it. `regctl unlock ID` marks the lease with that exact id.
- A holder that died is taken over when its generation expires (TTL at most 60 s), and
  at once when it ran on this machine (same hostname, boot id and pid namespace) and its
  pid is gone or now belongs to a process with another start time.

Why two writers never both hold it. A writer holds from the confirming read that made
it win until it is lost or releases. Let X win generation x and Y win y, and let X's
confirming read come first; suppose X still holds at Y's confirming read r. x ≠ y (the
create is atomic). At r, x exists: only a later winner's clean-up deletes a winner's
generation, and that winner's confirming read would have seen x live and yielded. x is
not released (X releases after it stops holding). x is not expired: X holds at r, so
its last good refresh g (whose write landed before r) is younger than 2/3 ttl, and it
set expires_at = g + ttl; a reader whose clock is within ttl/3 of X's sees x live.
X runs, so it is not known gone. Then Y's confirming read saw x live and lower than y,
or saw x higher than y: either way Y yielded, a contradiction. The assumptions: the
server's reads see the writes it has answered, and clocks of hosts sharing a registry
agree within ttl/3 (20 s).

Why release marks instead of deleting. Every write to a lease model is by name, and a
write meant for my generation n must never land on another holder's generation n. That
holds because a generation number, once won, is never won again: a winner's generation
is deleted only by a later winner's clean-up, so a won generation at least as high
exists from then on, and whoever creates a lower number yields at its confirming read.
Deleting on release would give numbers back: Y confirms generation 5 and stalls before
its yield's delete; W wins 6, cleans 5 up, releases by deleting 6; a crash left a stale
4, so Z creates 5 and wins; Y wakes up and deletes Z's 5; a fourth acquirer then wins
5 while Z still holds. Marking keeps numbers growing. The released mark carries the
lease id, so even after someone deletes a lease model by hand (which breaks it like
`unlock`: the holder stops at its next check or refresh) and its number is reused, a
late release of the old holder cannot release the new one.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Protocol

from regctl.core.model import LEASE_PREFIX, ObservedModel
from regctl.engine.generation import (
    _EXPIRES,
    _RELEASED,
    DEFAULT_TTL,
    LEASE_MODEL,
    MAX_TTL,
    Lease,
    _parse,
    _shown,
    _State,
)
from regctl.engine.process import Process, _since_boot, this_process
from regctl.errors import AlreadyExists, NotFound, RegctlError

__all__ = [
    "Holder",
    "LeaseHeld",
    "LeaseLost",
    "LeaseStore",
    "acquire",
    "break_lease",
    "current",
]

_GENERATION = re.compile(r"regctl-lease-(0|[1-9][0-9]{0,29})")
_MAX_GENERATION = 10**30 - 1


class LeaseStore(Protocol):
    """The registry calls a lease needs."""

    def search_models_like(self, pattern: str) -> dict[str, ObservedModel]: ...

    def create_model(self, name: str, description: str | None, tags: Mapping[str, str]) -> None: ...

    def set_model_tag(self, name: str, key: str, value: str) -> None: ...

    def delete_model(self, name: str) -> None: ...


class LeaseHeld(RegctlError):
    """Another writer holds the lease."""


class LeaseLost(RegctlError):
    """This writer's lease was broken, taken over or not refreshed in time."""


def _read(store: LeaseStore) -> _State:
    generations: dict[int, Lease | None] = {}
    legacy = None
    for name, model in store.search_models_like(LEASE_PREFIX + "%").items():
        if name == LEASE_MODEL:
            legacy = _parse(model, 0) or Lease("?", "unknown (unreadable lease)", "", 0.0, 0.0)
            continue
        match = _GENERATION.fullmatch(name)
        if match:  # other names are not generations (`regctl-lease-07`, ...): ignored
            generation = int(match.group(1))
            generations[generation] = _parse(model, generation)
    return _State(generations, legacy)


def current(store: LeaseStore, *, clock: Callable[[], float] = time.time) -> Lease | None:
    """The lease as a writer here would see it now: the live holder, or None."""
    return _read(store).live(clock(), this_process())


# -- holding it --------------------------------------------------------------------------


class Holder:
    """A held lease. `check()` before each write phase, a heartbeat while writing,
    `should_stop()` between writes, `release()` at the end."""

    def __init__(
        self,
        store: LeaseStore,
        lease: Lease,
        ttl: float,
        clock: Callable[[], float] = time.time,
        ticks: Callable[[], float] = _since_boot,
        *,
        good: tuple[float, float] | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.ttl = ttl
        self.clock = clock
        self.ticks = ticks
        self._good = good if good is not None else (ticks(), clock())  # (ticks, wall)
        self._lost: str | None = None
        self._released = False
        self._lock = threading.Lock()
        self._beat: tuple[threading.Thread, threading.Event] | None = None

    # the local view: no request
    def _lapsed_locked(self) -> bool:
        ticks, wall = self._good
        limit = self.ttl * 2 / 3
        if self.ticks() - ticks > limit or self.clock() - wall > limit:
            if self._lost is None:
                self._lost = f"no refresh succeeded for {limit:g} s"
            return True
        return False

    def holding(self) -> bool:
        """Whether this writer may still write (no request: its own clocks and flags)."""
        with self._lock:
            return self._lost is None and not self._released and not self._lapsed_locked()

    def should_stop(self) -> bool:
        """For writers between writes: the lease is lost (or released)."""
        return not self.holding()

    def ensure(self) -> None:
        """Raise LeaseLost unless this writer still holds the lease (no request)."""
        if not self.holding():
            raise LeaseLost(self._message())

    def lost_message(self) -> str:
        """Why this writer no longer holds the lease."""
        why = self._lost or "released"
        return f"lost lease {self.lease.id} (generation {self.lease.generation}): {why}"

    def _message(self) -> str:
        return self.lost_message() + "; stopping before the next write"

    def _lose(self, why: str) -> LeaseLost:
        with self._lock:
            if self._lost is None:
                self._lost = why
        return LeaseLost(self._message())

    def _verify(self, state: _State) -> None:
        mine = state.generations.get(self.lease.generation)
        now = self.clock()
        if mine is None or mine.id != self.lease.id:
            raise self._lose("its registered model is gone or belongs to another writer")
        if mine.released:
            raise self._lose("it was released or broken (`regctl unlock`)")
        higher = [g for g in state.generations if g > self.lease.generation]
        if higher:
            other = state.generations[max(higher)]
            who = other.describe(now) if other else f"generation {max(higher)}"
            raise self._lose(f"a newer generation exists: {who}")

    def check(self) -> None:
        """Before a write phase: still the highest generation, mine, not released."""
        self.ensure()
        self._verify(_read(self.store))
        self.ensure()

    def refresh(self) -> None:
        """Extend the expiry by a TTL: read, set `expires_at`, read again."""
        self.ensure()
        self._verify(_read(self.store))
        ticks, wall = self.ticks(), self.clock()
        try:
            self.store.set_model_tag(self.lease.model, _EXPIRES, f"{wall + self.ttl:.3f}")
        except NotFound:
            raise self._lose("its registered model is gone (taken over and cleaned up)") from None
        self._verify(_read(self.store))
        with self._lock:
            # a refresh that ends after the holder lapsed does not revive it
            if self._lost is None and not self._released and not self._lapsed_locked():
                self._good = (ticks, wall)
                self.lease = replace(self.lease, expires_at=wall + self.ttl)
                return
        raise LeaseLost(self._message())

    # the heartbeat
    def start_heartbeat(self) -> None:
        """Refresh every ttl/3 in a thread until release (or `stop_heartbeat`)."""
        if self._beat is not None:
            return
        stop = threading.Event()

        def beat() -> None:
            while True:
                with self._lock:
                    due = self._good[0] + self.ttl / 3
                if stop.wait(max(0.0, due - self.ticks())):
                    return
                try:
                    self.refresh()
                except LeaseLost:
                    return
                except Exception as exc:  # any failure: stop writing rather than guess
                    self._lose(f"refreshing it failed: {_shown(str(exc), 300)}")
                    return

        thread = threading.Thread(target=beat, name="regctl-lease-heartbeat", daemon=True)
        self._beat = (thread, stop)
        thread.start()

    def stop_heartbeat(self) -> None:
        if self._beat is None:
            return
        thread, stop = self._beat
        self._beat = None
        stop.set()
        thread.join(timeout=self.ttl / 3)

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[Holder]:
        """`with holder.heartbeat(): ...` refreshes the lease while the block runs."""
        self.start_heartbeat()
        try:
            yield self
        finally:
            self.stop_heartbeat()

    def release(self) -> None:
        """Mark this generation released (once). A failure only leaves it to expire."""
        self.stop_heartbeat()
        with self._lock:
            if self._released:
                return
            self._released = True
        with contextlib.suppress(RegctlError):
            self.store.set_model_tag(self.lease.model, _RELEASED, self.lease.id)


# -- taking it -------------------------------------------------------------------------


_VANISHED = "the generation it created vanished (deleted by hand?)"


def _confirm(state: _State, lease: Lease, now: float, here: Process) -> Lease | str | None:
    """After creating `lease`: None when it wins, else what it yields to (a holder, or why)."""
    mine = state.generations.get(lease.generation)
    if mine is None or mine.id != lease.id:
        return _VANISHED
    higher = [g for g in state.generations if g > lease.generation]
    if higher:
        return state.generations[max(higher)] or f"generation {max(higher)}"
    lower = [
        g
        for n, g in state.generations.items()
        if n < lease.generation and g is not None and g.live(now, here)
    ]
    if state.legacy is not None and state.legacy.live(now, here):
        lower.append(state.legacy)
    return lower[0] if lower else None


def _abandon(store: LeaseStore, lease: Lease) -> None:
    """Give up a generation this acquirer created and did not win."""
    try:
        store.delete_model(lease.model)
    except NotFound:
        pass
    except RegctlError:
        store.set_model_tag(lease.model, _RELEASED, lease.id)


def _clean_up_below(store: LeaseStore, state: _State, generation: int) -> None:
    """After winning `generation`: delete the lower generations (best effort)."""
    for n in sorted(state.generations):
        if n < generation:
            with contextlib.suppress(RegctlError):
                store.delete_model(f"{LEASE_PREFIX}-{n}")


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
    ticks: Callable[[], float] = _since_boot,
    identity: Process | None = None,
) -> Holder:
    """Take the lease, waiting up to `timeout` seconds for a live holder to finish.

    `identity` is the process the lease records (this one by default); `clock`, `sleep`
    and `ticks` (a clock that never jumps) are injectable for tests.
    """
    if not 0 < ttl <= MAX_TTL:
        raise RegctlError(f"lease TTL must be between 0 and {MAX_TTL:g} s, got {ttl:g}")
    here = this_process()
    me = identity or here
    deadline = clock() + timeout
    state = _read(store)
    tight = 0
    while True:
        now = clock()
        blocker: Lease | str | None = state.live(now, here)
        if blocker is None:
            generation = state.highest + 1
            if generation > _MAX_GENERATION:
                raise RegctlError(
                    f"lease generation {state.highest} is the last one regctl counts to; "
                    f"delete the model {LEASE_PREFIX}-{state.highest} (not made by regctl)"
                )
            lease_id = uuid.uuid4().hex[:12]
            lease = Lease(lease_id, holder, commit, now, now + ttl, generation, me, ttl=ttl)
            good = (ticks(), now)
            try:
                store.create_model(lease.model, lease.description(), lease.tags())
            except AlreadyExists:
                state = _read(store)
                seen = state.generations.get(generation)
                if seen is None or seen.id != lease.id:
                    tight += 1  # another acquirer won that number: look again at once
                    if tight < 5:
                        continue
                    blocker = seen or f"generation {generation}"
                # else: our own create, retried by the client after a lost response
            except RegctlError:
                # the create may have landed: a generation of ours must not linger
                with contextlib.suppress(RegctlError):
                    seen = _read(store).generations.get(generation)
                    if seen is not None and seen.id == lease.id:
                        _abandon(store, lease)
                raise
            if blocker is None:
                state = _read(store)
                blocker = _confirm(state, lease, clock(), here)
                if blocker is None:
                    _clean_up_below(store, state, generation)
                    return Holder(store, lease, ttl, clock, ticks, good=good)
                if blocker is not _VANISHED:
                    _abandon(store, lease)
        tight = 0
        now = clock()
        if now >= deadline:
            shown = blocker.describe(now) if isinstance(blocker, Lease) else blocker
            unlock = (
                f"run `regctl unlock {_shown(blocker.id, 40)}`"
                if isinstance(blocker, Lease)
                else "try again"
            )
            raise LeaseHeld(
                f"another writer holds the lease: {shown}; waited {timeout:.0f} s "
                f"(--lock-timeout). A holder that died frees it when it expires (at once "
                f"when it ran on this machine); to break it by hand, {unlock}"
            )
        sleep(min(poll * (0.5 + random.random()), max(0.0, deadline - now)))
        state = _read(store)


def break_lease(store: LeaseStore, lease_id: str) -> Lease:
    """Break the lease with this id (and only it): mark its generation released."""
    state = _read(store)
    now = time.time()
    for lease in state.leases():
        if lease.id != lease_id:
            continue
        if lease.released:
            raise RegctlError(f"lease {_shown(lease_id, 40)} was already released")
        if lease.generation:
            store.set_model_tag(lease.model, _RELEASED, lease.id)
        else:
            store.delete_model(LEASE_MODEL)
        return lease
    held = state.live(now, this_process())
    if held is None:
        raise RegctlError(f"no lease is held (nothing to unlock for {_shown(lease_id, 40)})")
    raise RegctlError(
        f"lease {_shown(lease_id, 40)} is not the current lease; the current one is "
        f"{held.describe(now)}. Unlock breaks a lease by its exact id only"
    )
