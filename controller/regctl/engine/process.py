"""Who holds a lease and whether it is still alive: the holder process, seen from here.

A lease records the process that took it (host, boot id and pid namespace, pid, the pid's
start time) so that a writer on the same machine can tell at once that the holder is
gone, instead of waiting for the lease to expire. Also the clock a holder measures its
refreshes with (`_since_boot`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Process:
    """Where a holder runs: enough to tell, from the same machine, that it is gone.

    `machine` is the kernel's boot id and the pid namespace: two processes with the same
    value see the same pids. "" when unknown (then only expiry frees the lease).
    `started` is the pid's start time in clock ticks since boot, "" when unknown.
    """

    host: str
    machine: str
    pid: int
    started: str


def _machine() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except (OSError, UnicodeDecodeError):
        return ""
    return f"{boot} {namespace}"


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a pid from /proc, or None when unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces and ')'
    return (fields[0], fields[19]) if len(fields) > 19 else None


def this_process() -> Process:
    """This process, as a lease records it."""
    pid = os.getpid()
    stat = _stat(pid)
    return Process(socket.gethostname(), _machine(), pid, stat[1] if stat else "")


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (EPERM): it exists
        return True
    return True


def gone(process: Process, here: Process) -> bool:
    """Whether `process` ran on this machine and is known to have ended.

    Never guesses: another host, an unknown machine identity or a process /proc cannot
    describe all count as alive.
    """
    if not process.machine or process.pid <= 0:
        return False
    if (process.host, process.machine) != (here.host, here.machine):
        return False
    if not _exists(process.pid):
        return True
    stat = _stat(process.pid)
    if stat is None:
        return False
    state, started = stat
    if state in ("Z", "X"):  # a zombie: it has exited, only its parent has not reaped it
        return True
    return bool(process.started) and started != process.started


def _since_boot() -> float:
    """Seconds on a clock that never jumps and counts time suspended (Linux), else monotonic."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        with contextlib.suppress(OSError):
            return time.clock_gettime(boottime)
    return time.monotonic()
