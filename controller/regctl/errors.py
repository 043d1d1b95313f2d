"""The error family of regctl and the exit codes every command shares.

Errors carry data (where, what) and are rendered once, at the edge, as one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes, the same for every command (SPEC section 5)."""

    OK = 0
    ERROR = 1
    CHANGES = 2
    DENIED = 3
    INTERRUPTED = 130


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a file: path as the user knows it, 1-based line and column."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        if self.col <= 0:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about an input file: `file:line:col: field.path: message`."""

    location: Location
    field: str
    message: str

    def __str__(self) -> str:
        field = f"{self.field}: " if self.field else ""
        return f"{self.location}: {field}{self.message}"


class RegctlError(Exception):
    """Base of all expected errors. `str(err)` is the one line shown to the user."""

    exit_code: ExitCode = ExitCode.ERROR


class InputError(RegctlError):
    """One or more input files are invalid. Carries every problem found, in order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class PlanError(RegctlError):
    """The desired state cannot be reached from the observed one (e.g. a rebound version)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class RegistryError(RegctlError):
    """The registry (MLflow) refused or failed a request. Never carries credentials."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        status: int = 0,
        request: str = "",
        transient: bool = False,
    ) -> None:
        self.code = code
        self.status = status
        self.request = request
        self.transient = transient
        super().__init__(message)


class NotFound(RegistryError):
    """The named registry object does not exist."""


class AlreadyExists(RegistryError):
    """Creating an object that already exists."""


class Unreachable(RegistryError):
    """The server could not be reached, or kept failing until the deadline."""


class GitHubError(RegctlError):
    """GitHub's API refused or failed a request (`regctl github`). The message is one line:
    method, API path, status and GitHub's own message; it never carries the token."""

    def __init__(self, message: str, *, status: int = 0, method: str = "", path: str = "") -> None:
        self.status = status
        self.method = method
        self.path = path
        super().__init__(message)


class ApplyError(RegctlError):
    """Apply stopped part-way; says how far it got."""

    def __init__(self, message: str, *, done: int, total: int) -> None:
        self.done = done
        self.total = total
        super().__init__(message)


class PolicyDenied(RegctlError):
    """A policy denied the desired state; nothing was written."""

    exit_code = ExitCode.DENIED


class Aborted(RegctlError):
    """The user declined the confirmation prompt."""


def type_name(value: Any, *, mapping: str = "a mapping") -> str:
    """What kind of value a file held, for "expected X, got Y": never the value itself
    (it may be huge or hostile). `mapping` names a mapping in the file's own terms
    ("a mapping" in YAML, "an object" in JSON)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return mapping
    return type(value).__name__
