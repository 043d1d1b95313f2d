"""`regctl diff`: the plan for the registry, with the policy verdict of what it touches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from regctl.commands.planning import Planned, make_plan
from regctl.commands.review import review
from regctl.config import Settings
from regctl.engine.proof import ProofReader
from regctl.errors import ExitCode
from regctl.policy.values import Review


@dataclass(frozen=True)
class DiffReport:
    """A plan and its review; the exit code follows SPEC: 3 when a policy denies a touched
    version, else with --exit-code 2 when there are changes, else 0."""

    planned: Planned
    review: Review
    changes_exit: bool = False

    @property
    def exit_code(self) -> int:
        if self.review.report.denied:
            return ExitCode.DENIED
        if self.changes_exit and not self.planned.plan.empty:
            return ExitCode.CHANGES
        return ExitCode.OK


def diff(
    settings: Settings,
    registry: ProofReader,
    models: Sequence[str] = (),
    *,
    prune: bool = False,
    base: str | None = None,
    allow_mass_delete: bool = False,
    changes_exit: bool = False,
    charts: bool = True,
) -> DiffReport:
    """Plan (scoped to `models`, or to what changed since git `base`) and judge it; with
    `charts`, with the data of each alias move's chart (markdown and JSON show it)."""
    planned = make_plan(
        settings, registry, models, prune=prune, base=base, allow_mass_delete=allow_mass_delete
    )
    judged = review(settings, planned, registry, base=base, charts=charts)
    return DiffReport(planned, judged, changes_exit)
