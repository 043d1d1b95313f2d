"""`regctl apply`: plan (or check a saved plan), judge, confirm; then under the lease sync,
apply and verify.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from regctl.adapters.planfile import load_plan_file
from regctl.commands.console import Console, Silent
from regctl.commands.lease import provenance, take_lease
from regctl.commands.planning import Inputs, Planned, load_inputs, make_plan
from regctl.commands.review import review
from regctl.config import (
    Settings,
    default_concurrency,
    registry_target,
)
from regctl.core.model import DesiredState
from regctl.core.plan import (
    DeleteModel,
    Plan,
    SyncRun,
    first_difference,
)
from regctl.engine.apply import ApplyContext, ApplyReport, apply_plan
from regctl.engine.lease import Holder, LeaseLost
from regctl.engine.sync import SyncExecutor, SyncReport, SyncStopped, survey
from regctl.errors import (
    Aborted,
    ApplyError,
    ExitCode,
    PolicyDenied,
    RegctlError,
)
from regctl.policy.values import Review
from regctl.ports import Registry

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class ApplyOptions:
    """What `regctl apply` was asked to do (its flags)."""

    models: Sequence[str] = ()
    plan_file: Path | None = None
    prune: bool = False
    no_sync: bool = False
    lock_timeout: float = 0.0
    auto_approve: bool = False
    concurrency: int | None = None
    allow_mass_delete: bool = False


@dataclass
class ApplyOutcome:
    """What apply did and what the registry looked like afterwards."""

    plan: Plan
    review: Review | None
    report: ApplyReport | None
    sync: SyncReport | None
    after: Plan | None

    @property
    def exit_code(self) -> int:
        """1 when the registry still differs from the manifests after apply, else 0."""
        return ExitCode.ERROR if self.after is not None and not self.after.empty else ExitCode.OK


def apply(
    settings: Settings,
    registry: Registry,
    options: ApplyOptions = ApplyOptions(),
    console: Console | None = None,
    *,
    held: Holder | None = None,
) -> ApplyOutcome:
    """Plan (or check a saved plan), judge, confirm; then under the lease sync, apply, verify.

    `held` is a lease the caller already holds (the controller holds it for as long as it
    leads): it is checked, not taken, and not released.

    Everything up to the confirmation only reads: nothing is written (no lease, no sync)
    when the plan is empty, a manifest is invalid, a policy denies a version the plan
    touches, the user declines, or a saved plan no longer matches the registry. Under the
    lease the plan is made again and must equal the one confirmed (with `auto_approve`,
    the one judged). Planning once, under the lease, would save an observe, but then
    every refused apply (a squatted run, a bad pin, a policy deny) would have written the
    lease: the gate promises no write at all. Verify reads back the models the plan
    touched (see `_verify`).
    """
    console = console or Silent()
    models: Sequence[str] = options.models
    saved = None
    if options.plan_file is not None:
        saved = load_plan_file(options.plan_file)
        models = _saved_scope(saved, options.plan_file, settings, models, options.prune)
    inputs = load_inputs(settings, models)
    if saved is not None and options.plan_file is not None:
        _same_inputs(saved, options.plan_file, inputs)

    def plan_now() -> Planned:
        return make_plan(
            settings,
            registry,
            prune=options.prune,
            allow_mass_delete=options.allow_mass_delete,
            inputs=inputs,
        )

    def judged() -> tuple[Planned, Review | None]:
        planned = plan_now()
        # A saved plan is never executed: it is the plan made now, from the checked-out
        # manifests and policies and the live registry, that is judged and applied, and
        # only when its changes are exactly the saved ones (SPEC section 6).
        if saved is not None and options.plan_file is not None:
            _same_changes(saved, options.plan_file, planned.plan)
        if planned.plan.empty:
            return planned, None
        verdict = review(settings, planned, registry)
        console.show(planned.plan, verdict)
        if verdict.report.denied:
            denied = "; ".join(r.message for r in verdict.report.denied)
            raise PolicyDenied(f"policy denied, nothing was written: {denied}")
        return planned, verdict

    shown, verdict = judged()
    if verdict is None:
        return ApplyOutcome(shown.plan, None, None, None, None)
    if not options.auto_approve and not console.confirm(shown.plan):
        raise Aborted("apply cancelled; nothing was written")
    lease = held if held is not None else take_lease(settings, registry, options.lock_timeout)
    try:
        planned = plan_now()
        if planned.plan.empty:  # another writer did it meanwhile: nothing left to do
            return ApplyOutcome(planned.plan, verdict, None, None, None)
        if planned.plan.changes != shown.plan.changes:
            raise RegctlError(
                "the registry changed after the plan was shown (another writer?); "
                "nothing was written. Run apply again to see the new plan"
            )
        report, sync_report = _write(settings, registry, lease, planned, inputs, options, console)
    finally:
        if held is None:
            lease.release()
    after = _verify(settings, registry, planned, inputs, options)
    return ApplyOutcome(planned.plan, verdict, report, sync_report, after)


def _write(
    settings: Settings,
    registry: Registry,
    lease: Holder,
    planned: Planned,
    inputs: Inputs,
    options: ApplyOptions,
    console: Console,
) -> tuple[ApplyReport, SyncReport | None]:
    """Under the lease: the plan, its sync steps included, through apply's interpreter."""
    workers = (
        options.concurrency if options.concurrency is not None else default_concurrency(settings)
    )
    executor = None
    if planned.items and not options.no_sync:
        executor = _sync_executor(registry, lease, planned, inputs, console, workers)
    tag, _, _ = provenance(settings)
    ctx = ApplyContext(
        writer=registry,
        reader=registry,
        run_ids=dict(executor.report.run_ids) if executor is not None else {},
        sync=executor,
        provenance=tag,
        holding=lease.holding,
    )

    def stop() -> bool:
        return lease.should_stop() or console.should_stop()

    lease.check()
    try:
        report = apply_plan(
            planned.plan, ctx, progress=console.progress, should_stop=stop, concurrency=workers
        )
    except ApplyError as err:  # a sync step stopped by a lost lease arrives here too
        if lease.holding():
            raise
        raise LeaseLost(
            f"{lease.lost_message()}; applied {err.done} of {err.total} changes, run apply again"
        ) from None
    return report, executor.report if executor is not None else None


def _sync_executor(
    registry: Registry,
    lease: Holder,
    planned: Planned,
    inputs: Inputs,
    console: Console,
    workers: int,
) -> SyncExecutor:
    """Check the run directories again under the lease; resume what an interrupted sync
    left (a proven run still RUNNING or FAILED: not a change of the plan, whose SyncRun
    steps are the runs not logged at all), and hand the plan's steps to the interpreter."""
    lease.check()
    found = survey(
        planned.items,
        registry,
        workers=workers,
        ledger=planned.observed.ledger,
        known=inputs.proven,
    )
    executor = SyncExecutor(
        found,
        registry,
        progress=console.sync_progress,
        workers=workers,
        # a lost lease, or SIGTERM: stop before the next upload, not after the whole sync
        should_stop=lambda: lease.should_stop() or console.should_stop(),
    )
    in_plan = {(c.experiment, c.run_name) for c in planned.plan.changes if isinstance(c, SyncRun)}
    try:
        for key in found.steps:
            if key not in in_plan:
                executor.run(key)
    except SyncStopped:
        lease.ensure()
        raise
    return executor


def _verify(
    settings: Settings, registry: Registry, planned: Planned, inputs: Inputs, options: ApplyOptions
) -> Plan:
    """The plan left after apply. A small apply (at most half of the manifests' models, no
    model deleted: a scoped plan plans no deletions) reads back only the models it touched,
    a few requests by name; a larger one reads the registry whole, which is then fewer
    requests (a name filter holds 50 names, a page 1,000 models)."""
    touched = {c.model for c in planned.plan.changes}
    verify = inputs
    small = len(touched) * 2 <= len(inputs.desired.models)
    if small and not any(isinstance(c, DeleteModel) for c in planned.plan.changes):
        desired = DesiredState(tuple(m for m in inputs.desired.models if m.name in touched))
        # by experiment, not by how a manifest spells a run directory: a superset is safe
        experiments = {m.experiment for m in desired.models}
        items = [i for i in inputs.items if i.experiment in experiments]
        verify = dataclasses.replace(inputs, desired=desired, complete=False, items=items)
    return make_plan(
        settings,
        registry,
        prune=options.prune,
        allow_mass_delete=options.allow_mass_delete,
        inputs=verify,
    ).plan


def _saved_scope(
    saved: Plan, plan_file: Path, settings: Settings, models: Sequence[str], prune: bool
) -> Sequence[str]:
    """The model scope to re-plan a saved plan with; refuses another target or other flags."""
    target = registry_target(settings)
    if saved.target != target:
        raise RegctlError(
            f"{plan_file}: this plan is for {saved.target}, not {target}; nothing was written"
        )
    if saved.options.prune != prune:
        flag = "with" if saved.options.prune else "without"
        raise RegctlError(
            f"{plan_file}: this plan was made {flag} --prune; apply it {flag} --prune "
            "(nothing was written)"
        )
    scope = saved.options.scope
    if models and (scope is None or sorted(models) != sorted(scope)):
        shown = "every manifest" if scope is None else "models " + ", ".join(scope)
        raise RegctlError(
            f"{plan_file}: this plan covers {shown}; give no MODEL arguments to apply it "
            "(nothing was written)"
        )
    return list(scope) if scope is not None else []


def _same_inputs(saved: Plan, plan_file: Path, inputs: Inputs) -> None:
    for what in ("manifests", "policies"):
        made, now = saved.inputs.get(what, "(none)"), inputs.digests.get(what)
        if made != now:
            raise RegctlError(
                f"{plan_file}: the {what} changed since this plan was made ({made} -> {now}); "
                "nothing was written. Run `regctl diff --out` again and review the new plan"
            )


def _same_changes(saved: Plan, plan_file: Path, current: Plan) -> None:
    difference = first_difference(saved.changes, current.changes)
    if difference is None:
        return
    if current.empty:
        raise RegctlError(
            f"{plan_file}: this plan was already applied (the registry matches the "
            "manifests); nothing was written"
        )
    raise RegctlError(
        f"{plan_file}: re-planning now does not give this plan's changes ({difference}); "
        "nothing was written. Run `regctl diff --out` again and review the new plan"
    )
