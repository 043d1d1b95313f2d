"""The console port: what a use case asks of whoever runs it (show, confirm, progress, stop).

The CLI implements it with click; tests and library callers use `Silent` (shows nothing,
approves, never stops). Use cases take an options value and a console instead of a row
of callbacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from regctl.core.plan import Change, Plan
    from regctl.policy.values import Review


class Console(Protocol):
    """Prompts and progress for a use case; every method may be a no-op."""

    def show(self, plan: Plan, review: Review) -> None:
        """The plan about to be applied, with its policy verdict."""

    def confirm(self, plan: Plan) -> bool:
        """Whether to apply `plan` (not asked with --auto-approve)."""

    def progress(self, done: int, total: int, change: Change) -> None:
        """A change was written."""

    def sync_progress(self, files: int, files_total: int, size: int, size_total: int) -> None:
        """Files and bytes uploaded so far by sync."""

    def should_stop(self) -> bool:
        """True once the user asked to stop (SIGTERM): stop after the writes in flight."""


class Silent:
    """A console for library callers and tests: shows nothing, approves, never stops."""

    def show(self, plan: Plan, review: Review) -> None:
        return None

    def confirm(self, plan: Plan) -> bool:
        return True

    def progress(self, done: int, total: int, change: Change) -> None:
        return None

    def sync_progress(self, files: int, files_total: int, size: int, size_total: int) -> None:
        return None

    def should_stop(self) -> bool:
        return False
