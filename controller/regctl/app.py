"""Use cases: wire the loader, the adapter, diff, sync and apply together.

The CLI calls one function here per command and renders what comes back. The MLflow
adapter is imported only when a command needs a registry, so `regctl --help` and
`regctl validate` never import mlflow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from regctl.apply import ApplyContext, ApplyReport, apply_plan
from regctl.diff import diff
from regctl.errors import Aborted, InputError, Location, Problem, RegctlError
from regctl.manifest import load_manifests, scope
from regctl.model import DesiredState, ObservedState, RunRef
from regctl.plan import Change, Plan, plan_from_json
from regctl.ports import Registry, RegistryReader
from regctl.sync import SyncItem, SyncReport, collect, pending_runs, sync

if TYPE_CHECKING:
    from regctl.sync import Progress


@dataclass(frozen=True, slots=True)
class Settings:
    """Global options: where the repository is and which MLflow to talk to."""

    repo: Path
    tracking_uri: str | None = None
    registry_uri: str | None = None


def find_repo(start: Path | None = None) -> Path:
    """The repository root: the nearest folder (upwards) holding `manifests/`, else cwd."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "manifests").is_dir():
            return folder
    return here


def resolve_tracking(settings: Settings) -> tuple[str, str | None]:
    """Tracking URI and, for local stores, the artifact root beside the database.

    Order: --tracking-uri, MLFLOW_TRACKING_URI, then MLflow's own default
    `sqlite:///mlflow.db`, anchored in the repository so it does not depend on cwd.
    """
    uri = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        uri = f"sqlite:///{settings.repo / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if not db.is_absolute():
            db = settings.repo / db
            uri = f"sqlite:///{db}"
        return uri, (db.parent / "mlruns").as_uri()
    return uri, None


def open_registry(settings: Settings) -> Registry:
    """Connect the MLflow adapter (imports mlflow)."""
    from regctl.mlflow_store import MlflowRegistry

    uri, artifact_root = resolve_tracking(settings)
    registry_uri = settings.registry_uri or os.environ.get("MLFLOW_REGISTRY_URI") or None
    return MlflowRegistry(uri, registry_uri, artifact_root)


def load_desired(settings: Settings, models: Sequence[str] = ()) -> tuple[DesiredState, bool]:
    """All manifests validated, scoped to `models`; and whether the scope is complete."""
    full = load_manifests(settings.repo)
    return scope(full, models), not models


def observe(desired: DesiredState, reader: RegistryReader, *, complete: bool) -> ObservedState:
    """Read what the plan needs, with as few requests as MLflow allows.

    Models and versions in paginated searches (all of them when the scope is complete, so
    managed models that no manifest names are seen too), experiments in one search, and
    run names resolved with one run search per experiment.
    """
    names = None if complete else desired.names()
    models = reader.search_models(names)
    experiments = reader.experiments(sorted({m.experiment for m in desired.models if m.experiment}))
    runs: dict[tuple[str, str], tuple[RunRef, ...]] = {}
    by_exp: dict[str, set[str]] = {}
    for m in desired.models:
        for v in m.versions:
            if v.run is not None and m.experiment is not None:
                by_exp.setdefault(m.experiment, set()).add(v.run)
    for exp, run_names in sorted(by_exp.items()):
        if exp not in experiments:
            continue
        found: dict[str, list[RunRef]] = {}
        for ref in reader.runs_in(experiments[exp], run_names):
            found.setdefault(ref.name, []).append(ref)
        for name, refs in found.items():
            runs[(exp, name)] = tuple(refs)
    ids = {v.run_id for m in desired.models for v in m.versions if v.run_id}
    return ObservedState(
        models=models,
        experiments=experiments,
        runs=runs,
        runs_by_id=reader.runs_by_id(ids) if ids else {},
    )


@dataclass
class ValidateReport:
    """Result of the offline checks."""

    models: int
    versions: int
    run_dirs: int
    warnings: list[str] = field(default_factory=list)


def validate(settings: Settings, models: Sequence[str] = ()) -> ValidateReport:
    """Offline: manifests, and the run directories they reference."""
    desired, _ = load_desired(settings, models)
    items = collect(desired, settings.repo)
    warnings = [f"{i.display}: {w}" for i in items for w in i.record.warnings]
    warnings += [
        f"{i.display}: skipped {s.rel_path}: {s.reason}" for i in items for s in i.record.skipped
    ]
    return ValidateReport(
        len(desired.models), sum(len(m.versions) for m in desired.models), len(items), warnings
    )


@dataclass
class Planned:
    """A plan with what it was made from, for apply to continue with."""

    plan: Plan
    desired: DesiredState
    observed: ObservedState
    items: list[SyncItem]
    complete: bool


def make_plan(
    settings: Settings, registry: RegistryReader, models: Sequence[str] = (), *, prune: bool = False
) -> Planned:
    """Load, observe and diff. Raises InputError/PlanError with manifest lines."""
    desired, complete = load_desired(settings, models)
    if prune and complete and not desired.models:
        raise InputError(
            [
                Problem(
                    Location("manifests/"),
                    "",
                    "refusing to plan deletions from an empty manifest set",
                )
            ]
        )
    items = collect(desired, settings.repo)
    observed = observe(desired, registry, complete=complete)
    pending = pending_runs(items, observed.runs)
    target = registry_target(settings)
    plan = diff(desired, observed, target=target, pending=pending, prune=prune, complete=complete)
    return Planned(plan, desired, observed, items, complete)


def registry_target(settings: Settings) -> str:
    from regctl.manifest import display_path

    uri, _ = resolve_tracking(settings)
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + display_path(Path(uri[len("sqlite:///") :]), settings.repo)
    import urllib.parse

    parsed = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(
        (parsed.scheme, parsed.netloc.rsplit("@", 1)[-1], parsed.path, "", "")
    )


def run_sync(
    settings: Settings,
    registry: Registry,
    models: Sequence[str] = (),
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> SyncReport:
    desired, _ = load_desired(settings, models)
    items = collect(desired, settings.repo)
    return sync(items, registry, dry_run=dry_run, progress=progress)


@dataclass
class ApplyOutcome:
    """What apply did and what the registry looked like afterwards."""

    plan: Plan
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
    confirm: Callable[[Plan], bool] | None = None,
    progress: Callable[[int, int, Change], object] | None = None,
    sync_progress: Progress | None = None,
) -> ApplyOutcome:
    """Plan (or load a saved plan), confirm, sync, apply, then observe and diff again."""
    planned = make_plan(settings, registry, models, prune=prune)
    plan = planned.plan
    if plan_file is not None:
        saved = load_plan_file(plan_file)
        if saved.fingerprint != plan.fingerprint:
            raise RegctlError(
                f"{plan_file}: the registry changed since this plan was made "
                f"(fingerprint {saved.fingerprint} -> {plan.fingerprint}); nothing was "
                "written. Run `regctl diff` again"
            )
        plan = saved
    if plan.empty:
        return ApplyOutcome(plan, None, None, None)
    if confirm is not None and not confirm(plan):
        raise Aborted("apply cancelled; nothing was written")
    sync_report = None
    run_ids: dict[tuple[str, str], str] = {}
    if planned.items and not no_sync:
        sync_report = sync(planned.items, registry, progress=sync_progress)
        run_ids.update(sync_report.run_ids)
    ctx = ApplyContext(writer=registry, reader=registry, run_ids=run_ids)
    report = apply_plan(plan, ctx, progress=progress)
    after = make_plan(settings, registry, models, prune=prune).plan
    return ApplyOutcome(plan, report, sync_report, after)


def load_plan_file(path: Path) -> Plan:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return plan_from_json(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError([Problem(Location(str(path)), "", f"not a regctl plan: {exc}")]) from exc
