"""`regctl apply`: plan (or check a saved plan), judge, confirm; then under the lease sync,
apply and verify.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from regctl.adapters.planfile import load_plan_file
from regctl.commands.lease import provenance, take_lease
from regctl.commands.planning import Inputs, load_inputs, make_plan
from regctl.commands.review import review
from regctl.commands.sync import lease_sync
from regctl.config import (
    Settings,
    default_concurrency,
    registry_target,
)
from regctl.core.plan import (
    Change,
    Plan,
    first_difference,
)
from regctl.engine.apply import ApplyContext, ApplyReport, apply_plan
from regctl.engine.lease import LeaseLost
from regctl.engine.sync import SyncReport
from regctl.errors import (
    Aborted,
    ApplyError,
    PolicyDenied,
    RegctlError,
)
from regctl.policy.evaluation import (
    Review,
)
from regctl.ports import Registry

if TYPE_CHECKING:
    from regctl.engine.sync import Progress


@dataclass
class ApplyOutcome:
    """What apply did and what the registry looked like afterwards."""

    plan: Plan
    review: Review | None
    report: ApplyReport | None
    sync: SyncReport | None
    after: Plan | None


def apply(
    settings: Settings,
    registry: Registry,
    models: Sequence[str] = (),
    *,
    plan_file: Path | None = None,
    prune: bool = False,
    no_sync: bool = False,
    lock_timeout: float = 0.0,
    show: Callable[[Plan, Review], object] | None = None,
    confirm: Callable[[Plan], bool] | None = None,
    progress: Callable[[int, int, Change], object] | None = None,
    sync_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    concurrency: int | None = None,
    allow_mass_delete: bool = False,
) -> ApplyOutcome:
    """Plan (or load a saved plan), judge, confirm; then under the lease sync, apply, verify.

    Everything up to the confirmation only reads: nothing is written (no lease, no sync)
    when the plan is empty, a manifest is invalid, a policy denies a version the plan
    touches, the user declines, or a saved plan no longer matches the registry. Under the
    lease the plan is made again and must equal the one shown.
    """
    saved = None
    if plan_file is not None:
        saved = load_plan_file(plan_file)
        models = _saved_scope(saved, plan_file, settings, models, prune)
    inputs = load_inputs(settings, models)
    if saved is not None and plan_file is not None:
        _same_inputs(saved, plan_file, inputs)
    planned = make_plan(
        settings,
        registry,
        prune=prune,
        allow_mass_delete=allow_mass_delete,
        inputs=inputs,
    )
    # A saved plan is never executed: it is the plan made now, from the checked-out
    # manifests and policies and the live registry, that is judged and applied, and only
    # when its changes are exactly the saved ones (SPEC section 6).
    plan = planned.plan
    if saved is not None and plan_file is not None:
        _same_changes(saved, plan_file, plan)
    if plan.empty:
        return ApplyOutcome(plan, None, None, None, None)
    verdict = review(settings, planned, registry)
    if show is not None:
        show(plan, verdict)
    if verdict.report.denied:
        denied = "; ".join(r.message for r in verdict.report.denied)
        raise PolicyDenied(f"policy denied, nothing was written: {denied}")
    if confirm is not None and not confirm(plan):
        raise Aborted("apply cancelled; nothing was written")
    lease = take_lease(settings, registry, lock_timeout)
    try:
        again = make_plan(
            settings, registry, prune=prune, allow_mass_delete=allow_mass_delete, inputs=inputs
        )
        if again.plan.empty:  # another writer did it meanwhile: nothing left to do
            return ApplyOutcome(again.plan, verdict, None, None, None)
        if again.plan.changes != planned.plan.changes:
            raise RegctlError(
                "the registry changed after the plan was shown (another writer?); nothing "
                "was written. Run apply again to see the new plan"
            )
        sync_report = None
        run_ids: dict[tuple[str, str], str] = {}
        workers = concurrency if concurrency is not None else default_concurrency(settings)
        if again.items and not no_sync:
            sync_report = lease_sync(
                lease,
                again.items,
                registry,
                sync_progress,
                workers,
                ledger=again.observed.ledger,
                known=inputs.proven,
            )
            run_ids.update(sync_report.run_ids)
        tag, _, _ = provenance(settings)
        ctx = ApplyContext(writer=registry, reader=registry, run_ids=run_ids, provenance=tag)

        def stop() -> bool:
            return lease.should_stop() or (should_stop is not None and should_stop())

        lease.check()
        try:
            report = apply_plan(plan, ctx, progress=progress, should_stop=stop, concurrency=workers)
        except ApplyError as err:
            if lease.holding():
                raise
            raise LeaseLost(
                f"{lease.lost_message()}; applied {err.done} of {err.total} changes, "
                "run apply again"
            ) from None
    finally:
        lease.release()
    after = make_plan(
        settings, registry, prune=prune, allow_mass_delete=allow_mass_delete, inputs=inputs
    ).plan
    return ApplyOutcome(plan, verdict, report, sync_report, after)


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
