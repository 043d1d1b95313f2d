"""One generation of the lease as its registered model records it.

`Lease` is the value (who holds it, for which commit, until when, from which process);
its tags and description are what a generation's registered model carries, and `_parse`
reads them back, refusing hostile or half-made tags. `_State` is every generation as one
search saw them. How generations are taken, held and released is `regctl.engine.lease`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from regctl.core.model import LEASE_PREFIX, ObservedModel
from regctl.engine.process import Process, gone

LEASE_MODEL = LEASE_PREFIX
"""The legacy lease model (regctl before generations); generations are `regctl-lease-<n>`."""
MAX_TTL = 60.0
DEFAULT_TTL = MAX_TTL
_PID_MAX = 4_194_304  # Linux's PID_MAX_LIMIT: a larger "pid" is no process

_ID = "regctl.lease.id"
_HOLDER = "regctl.lease.holder"
_COMMIT = "regctl.lease.commit"
_ACQUIRED = "regctl.lease.acquired_at"
_EXPIRES = "regctl.lease.expires_at"
_TTL = "regctl.lease.ttl"
_HOST = "regctl.lease.host"
_MACHINE = "regctl.lease.machine"
_PID = "regctl.lease.pid"
_STARTED = "regctl.lease.pid_start"
_RELEASED = "regctl.lease.released"


def _shown(text: str, limit: int = 120) -> str:
    """A registry string fit for a one-line message: no control characters, bounded."""
    out = "".join(ch if ch.isprintable() else "?" for ch in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Lease:
    """One generation of the lease: who holds it, for which commit, until when (epoch s)."""

    id: str
    holder: str
    commit: str
    acquired_at: float
    expires_at: float
    generation: int = 0
    process: Process | None = None
    released: bool = False
    ttl: float = DEFAULT_TTL

    @property
    def model(self) -> str:
        """The registered model that holds this generation."""
        return f"{LEASE_PREFIX}-{self.generation}" if self.generation else LEASE_MODEL

    def tags(self) -> dict[str, str]:
        tags = {
            _ID: self.id,
            _HOLDER: self.holder,
            _COMMIT: self.commit,
            _ACQUIRED: f"{self.acquired_at:.3f}",
            _EXPIRES: f"{self.expires_at:.3f}",
            _TTL: f"{self.ttl:g}",
        }
        if self.process is not None:
            tags.update(
                {
                    _HOST: self.process.host,
                    _MACHINE: self.process.machine,
                    _PID: str(self.process.pid),
                    _STARTED: self.process.started,
                }
            )
        return tags

    def description(self) -> str:
        """What a person reading the MLflow UI needs to know."""
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.acquired_at))
        commit = f" for commit {self.commit}" if self.commit else ""
        if self.holder.startswith("regctl controller"):  # held for days: say so
            return (
                f"regctl's lease (generation {self.generation}), not a model: "
                f"{self.holder} leads since {since}{commit} and is the only regctl that "
                f"writes to this registry (`regctl controller`, docs/controller.md). It "
                f"refreshes {_EXPIRES} every {self.ttl / 3:g} s for as long as it runs. Do "
                "not edit. Deleting it only pauses writes: the controller stops before its "
                "next write and takes the lease again, as a new generation, within seconds."
            )
        return (
            f"regctl's apply lease (generation {self.generation}), not a model. Taken by "
            f"{self.holder}{commit} at {since}; it holds the lease while this is the "
            f"highest regctl-lease-<n>, its {_RELEASED} tag is unset and {_EXPIRES} (epoch "
            f"seconds) is in the future: the holder refreshes it every {self.ttl / 3:g} s "
            "while it writes. Do not edit. Deleting it breaks the lease like "
            f"`regctl unlock {self.id}`: the holder stops before its next write and writes "
            "pause until a writer takes the lease again."
        )

    def describe(self, now: float) -> str:
        left = self.expires_at - now
        if self.released:
            when = "released"
        elif left > 0:
            when = f"expires in {left:.0f} s"
        else:
            when = f"expired {-left:.0f} s ago"
        where = f"generation {self.generation}" if self.generation else f"legacy {LEASE_MODEL}"
        commit = f" at commit {_shown(self.commit, 12)}" if self.commit else ""
        who = _shown(self.holder)
        return f"lease {_shown(self.id, 40)} ({where}) held by {who}{commit} ({when})"

    def live(self, now: float, here: Process) -> bool:
        """Held as far as a reader at `now` on `here` can tell."""
        if self.released or not self.expires_at > now:
            return False
        return self.process is None or not gone(self.process, here)


def _number(tags: Mapping[str, str], key: str, default: float | None = None) -> float:
    raw = tags.get(key)
    if raw is None:
        if default is None:
            raise ValueError(key)
        return default
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(key)
    return value


def _parse(model: ObservedModel, generation: int) -> Lease | None:
    """The lease a model's tags describe, or None when they do not (hostile or half-made)."""
    t = model.tags
    lease_id = t.get(_ID, "")
    if not lease_id:
        return None
    try:
        expires = _number(t, _EXPIRES)
        acquired = _number(t, _ACQUIRED, 0.0)
        ttl = _number(t, _TTL, DEFAULT_TTL)
    except ValueError:
        return None
    process = None
    pid = t.get(_PID, "")
    known = pid.isascii() and pid.isdigit() and len(pid) <= 7 and 0 < int(pid) <= _PID_MAX
    if generation and known:
        started = t.get(_STARTED, "")
        process = Process(
            t.get(_HOST, ""),
            t.get(_MACHINE, ""),
            int(pid),
            started if started.isascii() and started.isdigit() else "",
        )
    return Lease(
        id=lease_id,
        holder=_shown(t.get(_HOLDER, "?"), 200),  # for messages only: made printable here
        commit=_shown(t.get(_COMMIT, ""), 64),
        acquired_at=acquired,
        expires_at=expires,
        generation=generation,
        process=process,
        released=t.get(_RELEASED) == lease_id,
        ttl=ttl,
    )


@dataclass(frozen=True)
class _State:
    """Every lease model, as one search saw them. Unreadable generations map to None."""

    generations: dict[int, Lease | None] = field(default_factory=dict)
    legacy: Lease | None = None

    @property
    def highest(self) -> int:
        return max(self.generations, default=0)

    def leases(self) -> list[Lease]:
        found = [g for _, g in sorted(self.generations.items(), reverse=True) if g is not None]
        return found + ([self.legacy] if self.legacy is not None else [])

    def live(self, now: float, here: Process) -> Lease | None:
        """The holder: the highest live generation, else a live legacy lease."""
        return next((g for g in self.leases() if g.live(now, here)), None)
