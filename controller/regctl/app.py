"""Use cases: wire the loader, the adapter, diff, sync and apply together.

The CLI calls one function here per command and renders what comes back. The MLflow
adapter is imported only when a command needs a registry, so `regctl --help` and
`regctl validate` never import mlflow.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from regctl import gitinfo
from regctl.apply import ApplyContext, ApplyReport, apply_plan
from regctl.diff import MAX_DELETE_SHARE, diff
from regctl.errors import Aborted, InputError, Location, PolicyDenied, Problem, RegctlError
from regctl.history import promotions, render_log
from regctl.lease import Holder, Lease, acquire, break_lease
from regctl.manifest import load_manifest_texts, load_manifests, scope
from regctl.model import (
    DesiredModel,
    DesiredState,
    DesiredVersion,
    ObservedState,
    RunRef,
)
from regctl.plan import Change, CreateVersion, Plan, SetAlias, SetVersionDescription, plan_from_json
from regctl.policy import (
    Comparison,
    PolicyReport,
    PolicySet,
    Review,
    Subject,
    alias_comparison,
    evaluate,
    load_policies,
)
from regctl.ports import Registry, RegistryReader, runs_by_name
from regctl.sync import SyncItem, SyncReport, collect, pending_runs, sync
from regctl.uris import check_uri

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
    given = settings.tracking_uri is not None  # `--tracking-uri ""` is an error, not unset
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    uri = settings.tracking_uri if settings.tracking_uri is not None else uri
    if uri or given:
        check_uri(uri, "--tracking-uri" if given else "MLFLOW_TRACKING_URI")
    else:
        uri = f"sqlite:///{settings.repo / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if not db.is_absolute():
            db = settings.repo / db
            uri = f"sqlite:///{db}"
        return uri, (db.parent / "mlruns").as_uri()
    return uri, None


DEFAULT_CONCURRENCY = 8
"""Writes in flight at once against a server (one per lane: see apply.lane)."""


def default_concurrency(settings: Settings) -> int:
    """8 writes in flight against an HTTP server; 1 for a local store (SQLite locks)."""
    uri, _ = resolve_tracking(settings)
    return DEFAULT_CONCURRENCY if uri.startswith(("http://", "https://")) else 1


def open_registry(settings: Settings) -> Registry:
    """Connect the MLflow adapter (imports mlflow)."""
    from regctl.mlflow_store import MlflowRegistry

    uri, artifact_root = resolve_tracking(settings)
    given = settings.registry_uri is not None
    registry_uri = os.environ.get("MLFLOW_REGISTRY_URI", "")
    registry_uri = settings.registry_uri if settings.registry_uri is not None else registry_uri
    if registry_uri or given:
        check_uri(registry_uri, "--registry-uri" if given else "MLFLOW_REGISTRY_URI")
    return MlflowRegistry(uri, registry_uri or None, artifact_root)


def load_desired(settings: Settings, models: Sequence[str] = ()) -> tuple[DesiredState, bool]:
    """All manifests validated, scoped to `models`; and whether the scope is complete."""
    full = load_manifests(settings.repo)
    return scope(full, models), not models


def observe(
    desired: DesiredState,
    reader: RegistryReader,
    *,
    complete: bool,
    workers: int = 1,
) -> ObservedState:
    """Read what the plan needs, with as few requests as MLflow allows.

    Models and versions in paginated searches (all of them when the scope is complete, so
    managed models that no manifest names are seen too), experiments in one search, and
    run names resolved with one run search for up to 100 experiments. With `workers` > 1
    (a server) the independent reads are sent together: the time is the slowest one's,
    not the sum.
    """
    names = None if complete else desired.names()
    by_exp: dict[str, set[str]] = {}
    for m in desired.models:
        for v in m.versions:
            if v.run is not None and m.experiment is not None:
                by_exp.setdefault(m.experiment, set()).add(v.run)
    ids = {v.run_id for m in desired.models for v in m.versions if v.run_id}

    def read_runs() -> tuple[dict[str, str], dict[tuple[str, str], tuple[RunRef, ...]]]:
        experiments = reader.experiments(
            sorted({m.experiment for m in desired.models if m.experiment})
        )
        return experiments, runs_by_name(reader, experiments, by_exp)

    def read_ids() -> dict[str, RunRef]:
        return reader.runs_by_id(ids) if ids else {}

    if workers > 1:
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs_part = pool.submit(read_runs)
            ids_part = pool.submit(read_ids)
            models = reader.search_models(names)
            experiments, runs = runs_part.result()
            by_id = ids_part.result()
    else:
        models = reader.search_models(names)
        experiments, runs = read_runs()
        by_id = read_ids()
    return ObservedState(models=models, experiments=experiments, runs=runs, runs_by_id=by_id)


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


@dataclass(frozen=True)
class Inputs:
    """What a plan is made from on the local side: manifests, policies, run directories.

    Loaded once per command: apply plans, plans again under the lease and verifies with
    the same inputs (the ones the user confirmed), so 1,000 manifests are parsed once.
    """

    desired: DesiredState
    complete: bool
    policies: PolicySet
    items: list[SyncItem]


def load_inputs(
    settings: Settings, models: Sequence[str] = (), *, base: str | None = None
) -> Inputs:
    """Manifests (scoped to `models`, or to what changed since git `base`), policies and
    the run directories the manifests reference. Offline."""
    desired, complete = load_desired(settings, models)
    if base is not None:
        touched = set(base_scope(settings, base))
        desired = DesiredState(tuple(m for m in desired.models if m.name in touched))
        complete = False
    policies = load_policies(settings.repo)
    return Inputs(desired, complete, policies, collect(desired, settings.repo))


@dataclass
class Planned:
    """A plan with what it was made from, for apply to continue with."""

    plan: Plan
    desired: DesiredState
    observed: ObservedState
    items: list[SyncItem]
    complete: bool
    policies: PolicySet


def make_plan(
    settings: Settings,
    registry: RegistryReader,
    models: Sequence[str] = (),
    *,
    prune: bool = False,
    base: str | None = None,
    allow_mass_delete: bool = False,
    inputs: Inputs | None = None,
) -> Planned:
    """Load (unless `inputs` are given), observe and diff. Raises InputError/PlanError with
    manifest lines.

    With `base` (a git ref), only the models whose manifests differ from `base` are
    planned (with their live drift): the scope of a pull request.
    """
    if inputs is None:
        inputs = load_inputs(settings, models, base=base)
    desired, complete = inputs.desired, inputs.complete
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
    observed = observe(
        desired,
        registry,
        complete=complete,
        workers=default_concurrency(settings),
    )
    pending = pending_runs(inputs.items, observed.runs)
    target = registry_target(settings)
    plan = diff(
        desired,
        observed,
        target=target,
        pending=pending,
        prune=prune,
        complete=complete,
        max_delete_share=None if allow_mass_delete else MAX_DELETE_SHARE,
    )
    return Planned(plan, desired, observed, inputs.items, complete, inputs.policies)


def _touched(plan: Plan) -> set[tuple[str, int]]:
    """(model, version number) of the versions a plan creates, promotes or re-describes."""
    out: set[tuple[str, int]] = set()
    for c in plan.changes:
        if isinstance(c, CreateVersion):
            out.add((c.model, c.expected_version))
        elif isinstance(c, SetAlias):
            out.add((c.model, c.new))
        elif isinstance(c, SetVersionDescription):
            out.add((c.model, c.version))
    return out


def subjects(planned: Planned, reader: RegistryReader, *, only_touched: bool) -> list[Subject]:
    """The versions of the desired state as policies see them.

    Params and metrics come from MLflow when the run is logged, else from its run
    directory through the same reader sync uses; neither gives None (rules fail closed).
    """
    bound = {(b.model, b.entry): b for b in planned.plan.bindings}
    touched = _touched(planned.plan)
    records = {i.key: i.record for i in planned.items}
    wanted: list[tuple[str, DesiredVersion, int | None, str | None, str]] = []
    for m in planned.desired.models:
        for v in m.versions:
            b = bound.get((m.name, v.index))
            if only_touched and (b is None or (m.name, b.version) not in touched):
                continue
            wanted.append(
                (m.name, v, b.version if b else None, b.run_id if b else None, m.experiment or "")
            )
    data = reader.run_data([rid for *_, rid, _ in wanted if rid])
    out = []
    for model, v, number, run_id, experiment in wanted:
        current = planned.observed.models.get(model)
        description = v.description
        if (
            description is None
            and current is not None
            and number is not None
            and number in current.versions
        ):
            description = current.versions[number].description
        logged = data.get(run_id) if run_id else None
        record = records.get((experiment, v.run or ""))
        if logged is not None:
            params, metrics, source = logged.params, logged.metrics, "mlflow"
            name = logged.ref.name or v.run_ref
        elif record is not None:
            params, metrics, source = record.params, record.metrics, "run_dir"
            name = record.run_name
        else:
            params, metrics, source, name = None, None, "none", v.run or v.run_id or "?"
        out.append(
            Subject(
                model,
                name,
                run_id,
                number,
                v.aliases,
                description,
                params,
                metrics,
                source,
                str(v.location),
            )
        )
    return out


def incumbents(planned: Planned, reader: RegistryReader) -> dict[tuple[str, str], Subject]:
    """(model, alias) -> the version that holds the alias in the registry now."""
    holders: dict[tuple[str, str], tuple[int, str]] = {}
    for m in planned.desired.models:
        current = planned.observed.models.get(m.name)
        if current is None:
            continue
        for alias, number in current.aliases.items():
            if number in current.versions:
                holders[(m.name, alias)] = (number, current.versions[number].run_id)
    data = reader.run_data({rid for _, rid in holders.values() if rid})
    out = {}
    for (model, alias), (number, run_id) in holders.items():
        current = planned.observed.models[model]
        logged = data.get(run_id)
        out[(model, alias)] = Subject(
            model,
            logged.ref.name if logged else run_id,
            run_id,
            number,
            (alias,),
            current.versions[number].description,
            logged.params if logged else None,
            logged.metrics if logged else None,
            "mlflow" if logged else "none",
            f"registry: {model} version {number}",
        )
    return out


def review(planned: Planned, reader: RegistryReader, *, only_touched: bool = True) -> Review:
    """Judge the desired state (or just the versions the plan touches) against policy."""
    subs = subjects(planned, reader, only_touched=only_touched)
    holders = incumbents(planned, reader)
    report = evaluate(planned.policies, subs, holders, dt.datetime.now(dt.UTC).date())
    by_version = {(s.model, s.version): s for s in subs}
    comparisons = []
    for c in planned.plan.changes:
        if not isinstance(c, SetAlias):
            continue
        cand = by_version.get((c.model, c.new))
        if cand is None:
            continue
        inc = holders.get((c.model, c.alias))
        primary = (cand.params or {}).get("primary_metric", "")
        comparisons.append(
            Comparison(
                c.model,
                c.alias,
                cand.run,
                inc.run if inc else None,
                primary,
                tuple(alias_comparison(cand, inc, primary)),
            )
        )
    return Review(report, tuple(comparisons))


def check(settings: Settings, registry: RegistryReader, models: Sequence[str] = ()) -> PolicyReport:
    """Policy verdicts for every version of the desired state."""
    planned = make_plan(settings, registry, models)
    return review(planned, registry, only_touched=False).report


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


def provenance(settings: Settings) -> tuple[str, str, str]:
    """(tag value, actor, commit) for what apply records; see model.PROVENANCE_TAG.

    `REGCTL_COMMIT` (set by the apply workflow to the checked-out head) overrides the
    commit git reports; a working tree with uncommitted manifest changes says so.
    """
    info = gitinfo.provenance(settings.repo, os.environ)
    commit = os.environ.get("REGCTL_COMMIT") or info.commit
    shown = commit or "(not in git)"
    if info.dirty and not os.environ.get("REGCTL_COMMIT"):
        shown += " with uncommitted changes"
    at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    via = f" via {info.run_url}" if info.run_url else ""
    return f"commit {shown} by {info.actor} at {at}{via}", info.actor, commit


def _take_lease(settings: Settings, registry: Registry, timeout: float) -> Holder:
    _, actor, commit = provenance(settings)
    holder = f"{actor} on {socket.gethostname()} (pid {os.getpid()})"
    return acquire(registry, holder, commit, timeout=timeout)


def run_sync(
    settings: Settings,
    registry: Registry,
    models: Sequence[str] = (),
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    lock_timeout: float = 0.0,
    concurrency: int | None = None,
) -> SyncReport:
    """Log the referenced run directories (under the lease unless dry-run); `concurrency`
    uploads in flight (default: `default_concurrency`)."""
    desired, _ = load_desired(settings, models)
    items = collect(desired, settings.repo)
    looked = sync(items, registry, dry_run=True)  # checks everything, writes nothing
    if dry_run or len(looked.skipped) == len(items):
        return looked
    lease = _take_lease(settings, registry, lock_timeout)
    try:
        workers = concurrency if concurrency is not None else default_concurrency(settings)
        return sync(items, registry, progress=progress, workers=workers)
    finally:
        lease.release()


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
    inputs = load_inputs(settings, models)
    planned = make_plan(
        settings,
        registry,
        prune=prune,
        allow_mass_delete=allow_mass_delete,
        inputs=inputs,
    )
    plan = _saved_or(planned.plan, plan_file)
    if plan.empty:
        return ApplyOutcome(plan, None, None, None, None)
    if planned.items and not no_sync:
        sync(planned.items, registry, dry_run=True)  # write-once params etc., before writing
    verdict = review(planned, registry)
    if show is not None:
        show(plan, verdict)
    if verdict.report.denied:
        denied = "; ".join(r.message for r in verdict.report.denied)
        raise PolicyDenied(f"policy denied, nothing was written: {denied}")
    if confirm is not None and not confirm(plan):
        raise Aborted("apply cancelled; nothing was written")
    lease = _take_lease(settings, registry, lock_timeout)
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
        lease.refresh()
        sync_report = None
        run_ids: dict[tuple[str, str], str] = {}
        workers = concurrency if concurrency is not None else default_concurrency(settings)
        if again.items and not no_sync:
            sync_report = sync(again.items, registry, progress=sync_progress, workers=workers)
            run_ids.update(sync_report.run_ids)
        tag, _, _ = provenance(settings)
        ctx = ApplyContext(writer=registry, reader=registry, run_ids=run_ids, provenance=tag)

        def step(done: int, total: int, change: Change) -> None:
            lease.refresh()
            if progress is not None:
                progress(done, total, change)

        report = apply_plan(plan, ctx, progress=step, should_stop=should_stop, concurrency=workers)
    finally:
        lease.release()
    after = make_plan(
        settings, registry, prune=prune, allow_mass_delete=allow_mass_delete, inputs=inputs
    ).plan
    return ApplyOutcome(plan, verdict, report, sync_report, after)


def _saved_or(current: Plan, plan_file: Path | None) -> Plan:
    """The saved plan when it still matches the registry, else an error; or `current`."""
    if plan_file is None:
        return current
    saved = load_plan_file(plan_file)
    if saved.fingerprint == current.fingerprint:
        return saved
    if current.empty:
        raise RegctlError(
            f"{plan_file}: this plan was already applied (the registry matches the "
            "manifests); nothing was written"
        )
    raise RegctlError(
        f"{plan_file}: the registry changed since this plan was made (fingerprint "
        f"{saved.fingerprint} -> {current.fingerprint}); nothing was written. Run "
        "`regctl diff` again"
    )


def unlock(registry: Registry, lease_id: str) -> Lease:
    """Break the apply lease with this id (and only it)."""
    return break_lease(registry, lease_id)


def log(settings: Settings, model: str, alias: str | None, fmt: str) -> str:
    """Promotion history of a model from the git history of its manifest."""
    path = _manifest_of(settings.repo, model)
    history = gitinfo.file_history(settings.repo, path)
    return render_log(model, promotions(model, history, alias), fmt, alias=alias)


def _manifest_of(repo: Path, model: str) -> str:
    """The repo-relative manifest path that declares `model` (by name, then file name)."""
    from regctl.manifest import display_path, manifest_files
    from regctl.yamlfile import load_documents

    for path in manifest_files(repo):
        try:
            docs = load_documents(path, path.name)
        except InputError:
            continue
        if docs and isinstance(docs[0].value, dict) and docs[0].value.get("name") == model:
            return display_path(path, repo)
    return f"manifests/{model}.yaml"


def base_scope(settings: Settings, base: str) -> list[str]:
    """The models a change touches: those whose manifest differs between `base` and now.

    Models only at `base` (deleted by the change) are left out: they are no longer
    declared, so diff reports them as managed models in no manifest.
    """
    before = load_manifest_texts(
        gitinfo.files_at(settings.repo, base, "manifests"), settings.repo, label=f"{base}:"
    )
    now, _ = load_desired(settings)
    old = {m.name: _comparable(m) for m in before.models}
    return [m.name for m in now.models if old.get(m.name) != _comparable(m)]


def _comparable(model: DesiredModel) -> DesiredModel:
    """A model without source locations, so two revisions compare by content."""
    nowhere = Location("")
    versions = tuple(dataclasses.replace(v, location=nowhere) for v in model.versions)
    return dataclasses.replace(model, location=nowhere, versions=versions)


def load_plan_file(path: Path) -> Plan:
    """A saved plan (`diff --out`), or an InputError naming the file and the bad field."""
    from regctl.plan import PlanFormatError

    where = Location(str(path))
    try:
        if not path.is_file():
            raise InputError([Problem(where, "", "not a regular file")])
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
        return plan_from_json(data)
    except PlanFormatError as exc:
        why = exc.reason if exc.field else f"not a regctl plan: {exc.reason}"
        raise InputError([Problem(where, exc.field, why)]) from exc
    except RecursionError as exc:
        raise InputError([Problem(where, "", "not a regctl plan: nested too deeply")]) from exc
    except OSError as exc:
        raise InputError([Problem(where, "", f"cannot read: {exc.strerror or exc}")]) from exc
    except ValueError as exc:  # not UTF-8, not JSON, a duplicate key, a 5,000-digit number
        why = "a number with too many digits" if "digits" in str(exc) else str(exc)
        raise InputError([Problem(where, "", f"not a regctl plan: {why}")]) from exc


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:60]!r}")
        out[key] = value
    return out
