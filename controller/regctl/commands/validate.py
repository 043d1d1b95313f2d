"""`regctl validate`: manifests, policies and the run directories they reference, offline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from regctl.commands.planning import load_desired
from regctl.config import (
    Settings,
)
from regctl.engine.sync import collect
from regctl.policy.loading import load_policies

if TYPE_CHECKING:
    pass


@dataclass
class ValidateReport:
    """Result of the offline checks."""

    models: int
    versions: int
    run_dirs: int
    warnings: list[str] = field(default_factory=list)
    policies: int = 0
    waivers: int = 0


def validate(settings: Settings, models: Sequence[str] = ()) -> ValidateReport:
    """Offline: manifests, and the run directories they reference."""
    desired, _ = load_desired(settings, models)
    policies = load_policies(settings.repo)
    items = collect(desired, settings.repo)
    warnings = [f"{i.display}: {w}" for i in items for w in i.record.warnings]
    warnings += [
        f"{i.display}: skipped {s.rel_path}: {s.reason}" for i in items for s in i.record.skipped
    ]
    return ValidateReport(
        len(desired.models),
        sum(len(m.versions) for m in desired.models),
        len(items),
        warnings,
        len(policies.policies),
        len(policies.waivers),
    )
