"""Use cases: wire the loader, the adapter, diff, sync and apply together.

The CLI calls one function here per command and renders what comes back. The MLflow
adapter is imported only when a command needs a registry, so `regctl --help` and
`regctl validate` never import mlflow.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from regctl.adapters import git as gitinfo
from regctl.adapters.manifests import (
    display_path,
    load_manifest_texts,
    load_manifests,
    manifest_files,
    scope,
)
from regctl.config import (
    Settings,
    default_concurrency,
    registry_target,
)
from regctl.core.binding import source_path
from regctl.core.diff import MAX_DELETE_SHARE, artifact_uris, diff
from regctl.core.history import promotions, render_log
from regctl.core.model import (
    LEDGER_MODEL,
    PROVENANCE_TAG,
    DesiredModel,
    DesiredState,
    DesiredVersion,
    ObservedModel,
    ObservedState,
    RunRef,
    ledger_entries,
)
from regctl.core.plan import (
    Binding,
    Change,
    CreateVersion,
    Plan,
    PlanOptions,
    SetAlias,
    SetVersionDescription,
    first_difference,
    plan_from_json,
)
from regctl.engine.apply import ApplyContext, ApplyReport, apply_plan
from regctl.engine.lease import Holder, Lease, LeaseLost, acquire, break_lease
from regctl.engine.proof import Proof, ProofReader, prove
from regctl.engine.sync import SyncItem, SyncReport, SyncStopped, collect, pending_runs, sync
from regctl.errors import (
    Aborted,
    ApplyError,
    InputError,
    Location,
    PolicyDenied,
    Problem,
    RegctlError,
)
from regctl.policy.evaluation import (
    Comparison,
    PolicyReport,
    PolicySet,
    Review,
    Subject,
    alias_comparison,
    evaluate,
    load_policies,
    policy_files,
)
from regctl.ports import Registry, RegistryReader, runs_by_name

if TYPE_CHECKING:
    from regctl.engine.sync import Progress


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
    names = None if complete else (*desired.names(), LEDGER_MODEL)
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
    ledger_model = models.pop(LEDGER_MODEL, None)
    ledger = ledger_entries(ledger_model.tags if ledger_model is not None else None)
    return ObservedState(
        models=models, experiments=experiments, runs=runs, runs_by_id=by_id, ledger=ledger
    )


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
    proven: dict[str, str] = field(default_factory=dict)
    """Run id -> digest of the runs this command proved already (see regctl.engine.proof)."""
    digests: Mapping[str, str] = field(default_factory=dict)
    """`manifests` and `policies`: digests of the files they were loaded from."""


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
    digests = {
        "manifests": files_digest(manifest_files(settings.repo), settings.repo),
        "policies": files_digest(policy_files(settings.repo), settings.repo),
    }
    return Inputs(desired, complete, policies, collect(desired, settings.repo), digests=digests)


def files_digest(paths: Sequence[Path], repo: Path) -> str:
    """`sha256:` over every file's repo-relative path and bytes, in path order: what a saved
    plan records of the manifests and policies it was made from."""
    h = hashlib.sha256(b"regctl-files-v1\n")
    for shown, path in sorted((display_path(p, repo), p) for p in paths):
        data = path.read_bytes()
        h.update(f"{len(shown)}:{shown}{len(data)}:".encode("utf-8", "surrogateescape"))
        h.update(data)
    return "sha256:" + h.hexdigest()


@dataclass
class Planned:
    """A plan with what it was made from, for apply to continue with."""

    plan: Plan
    desired: DesiredState
    observed: ObservedState
    items: list[SyncItem]
    complete: bool
    policies: PolicySet
    proofs: Mapping[tuple[str, str], Proof] = field(default_factory=dict)


def make_plan(
    settings: Settings,
    registry: ProofReader,
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
    workers = default_concurrency(settings)
    proofs = prove_claims(inputs.items, observed, registry, known=inputs.proven, workers=workers)
    target = registry_target(settings)

    def plan_with(proofs: Mapping[tuple[str, str], Proof]) -> Plan:
        unproven = {
            i.key: p.message(i.display)
            for i in inputs.items
            if (p := proofs.get(i.key)) is not None and not p.proven
        }
        return diff(
            desired,
            observed,
            target=target,
            pending=pending,
            unproven=unproven,
            prune=prune,
            complete=complete,
            max_delete_share=None if allow_mass_delete else MAX_DELETE_SHARE,
        )

    plan = plan_with(proofs)
    # A ledger entry is anyone's to write: the runs this plan registers a version from or
    # points an alias at are hashed now, whatever the ledger says (once per command).
    staked = staked_runs(plan, observed)
    stale = {k for k, p in proofs.items() if p.run_id in staked and not p.downloaded}
    stale = {k for k in stale if inputs.proven.get(proofs[k].run_id) != proofs[k].digest}
    if stale:
        fresh = prove_claims(
            [i for i in inputs.items if i.key in stale],
            observed,
            registry,
            known=inputs.proven,
            workers=workers,
            trust_ledger=False,
        )
        proofs = {**proofs, **fresh}
        if any(not p.proven for p in fresh.values()):
            plan = plan_with(proofs)  # raises PlanError naming the run and what differs
    plan = dataclasses.replace(
        plan,
        inputs=dict(inputs.digests),
        options=PlanOptions(prune=prune, scope=None if complete else desired.names()),
    )
    return Planned(plan, desired, observed, inputs.items, complete, inputs.policies, proofs)


def prove_claims(
    items: Sequence[SyncItem],
    observed: ObservedState,
    reader: ProofReader,
    *,
    known: dict[str, str] | None = None,
    workers: int = 1,
    trust_ledger: bool = True,
) -> dict[tuple[str, str], Proof]:
    """Content proofs for the run directories whose run name is logged (exactly once)."""
    found = {key: refs[0] for key, refs in observed.runs.items() if len(refs) == 1}
    claims = [(i.experiment, i.record) for i in items if i.key in found]
    return prove(
        claims,
        found,
        reader,
        observed.ledger,
        known=known,
        workers=workers,
        trust_ledger=trust_ledger,
    )


def staked_runs(plan: Plan, observed: ObservedState) -> set[str]:
    """Run ids whose files a plan puts behind a model: versions it creates, and the
    versions it points aliases at."""
    out: set[str] = set()
    for c in plan.changes:
        if isinstance(c, CreateVersion) and c.run_id is not None:
            out.add(c.run_id)
        elif isinstance(c, SetAlias) and c.entry is None:
            current = observed.models.get(c.model)
            version = current.versions.get(c.new) if current is not None else None
            if version is not None:
                out.add(version.run_id)
    return out


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
        digest = record.digest if record is not None else None
        if logged is not None:
            params, metrics, source = logged.params, logged.metrics, "mlflow"
            name = logged.ref.name or v.run_ref
            # only a run directory gives a digest a waiver may bind to: a ledger entry is
            # anyone's to write, so a run taken by run_id is waived by its run_id
            home = planned.observed.experiments.get(experiment)
            in_experiment = home is not None and logged.ref.experiment_id == home
        elif record is not None:
            params, metrics, source = record.params, record.metrics, "run_dir"
            name = record.run_name
            in_experiment = True  # sync logs it in the model's experiment
        else:
            params, metrics, source, name = None, None, "none", v.run or v.run_id or "?"
            in_experiment = False
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
                digest=digest,
                in_experiment=in_experiment,
            )
        )
    return out


_APPLIED_COMMIT_RE = re.compile(r"^commit ([0-9a-f]{7,64}) by ")


def applied_commit(model: ObservedModel) -> str | None:
    """The commit whose manifests the last apply that changed `model` applied (its
    `regctl.applied` tag), or None (no tag, not in git, uncommitted changes)."""
    m = _APPLIED_COMMIT_RE.match(model.tags.get(PROVENANCE_TAG, ""))
    return m.group(1) if m else None


def base_models(
    settings: Settings, planned: Planned, base: str | None
) -> dict[str, list[tuple[str, DesiredModel | None]]]:
    """model -> [(revision, the model as that revision's manifests declare it, or None)].

    The holder of an alias "before the change" is what reviewed manifests declared:
    - with `--base REF` (a pull request's target branch): REF;
    - else every revision that can tell, and `compare_to` must hold against each: the
      commit the model's last apply recorded (`regctl.applied`), when it is HEAD or an
      ancestor of it (the tag is anyone's to write: a commit off this history is ignored),
      and the revision before the change in this checkout (HEAD when the working tree's
      manifest differs from HEAD's, else HEAD's first parent).
    An empty list means that no revision can be read (no git history): callers then trust
    the registry's holder only when the manifests declare it.
    """
    names = [m.name for m in planned.desired.models]
    if base is not None:
        state = _state_at(settings, base)
        return {n: [(base, state.model(n))] if state is not None else [] for n in names}
    states: dict[str, DesiredState | None] = {}

    def at(ref: str) -> DesiredState | None:
        if ref not in states:
            states[ref] = _state_at(settings, ref)
        return states[ref]

    head = at("HEAD")
    out: dict[str, list[tuple[str, DesiredModel | None]]] = {}
    for m in planned.desired.models:
        revisions: list[tuple[str, DesiredModel | None]] = []
        current = planned.observed.models.get(m.name)
        commit = applied_commit(current) if current is not None else None
        if commit is not None and gitinfo.is_ancestor(settings.repo, commit, "HEAD"):
            state = at(commit)
            if state is not None:
                revisions.append((commit[:12], state.model(m.name)))
        if head is not None:
            at_head = head.model(m.name)
            if at_head is not None and _comparable(at_head) == _comparable(m):
                parent = at("HEAD^")
                if parent is not None:
                    revisions.append(("HEAD^", parent.model(m.name)))
            else:
                revisions.append(("HEAD", at_head))
        out[m.name] = revisions
    return out


def _state_at(settings: Settings, ref: str) -> DesiredState | None:
    """The manifests at a git revision, or None when that revision cannot be read."""
    try:
        texts = gitinfo.files_at(settings.repo, ref, "manifests")
        return load_manifest_texts(texts, settings.repo, label=f"{ref[:12]}:")
    except RegctlError:
        return None


@dataclass(frozen=True, slots=True)
class DeclaredHolder:
    """Which version held an alias before the change, as one base revision declares it.

    `known` False: nothing trustworthy is known (`why` says why): a `compare_to` rule then
    fails closed. Otherwise `version` and/or `run_id` name the holder: a version whose run
    is gone has no run id, a declared run whose version was deleted by hand no version.
    """

    known: bool
    version: int | None = None
    run_id: str | None = None
    why: str = ""


def declared_holders(
    settings: Settings, planned: Planned, reader: RegistryReader, base: str | None
) -> dict[tuple[str, str], tuple[DeclaredHolder, ...]]:
    """(model, alias) -> the holders the base revisions declare (see `base_models`), for
    every alias the desired state sets; an alias no base declares a holder of is absent.
    SPEC section 4: `compare_to` judges against them, never a holder set by hand."""
    bases = base_models(settings, planned, base)
    bound = {(b.model, b.entry): b for b in planned.plan.bindings}
    uris = artifact_uris(planned.observed)
    declared_versions: dict[str, set[int]] = {}
    for (name, _), b in bound.items():
        declared_versions.setdefault(name, set()).add(b.version)
    out: dict[tuple[str, str], tuple[DeclaredHolder, ...]] = {}
    for m in planned.desired.models:
        current = planned.observed.models.get(m.name)
        revisions = bases.get(m.name, [])
        aliases = {a for v in m.versions for a in v.aliases}
        for alias in sorted(aliases):
            found: list[DeclaredHolder] = []
            for _label, old in revisions:
                holder = _holder_in_base(m, old, alias, current, bound, reader, uris)
                if holder is not None and holder not in found:
                    found.append(holder)
            if not revisions:
                # No readable base: the registry's holder counts only when the manifests
                # declare that version; a holder made by hand is never the incumbent.
                number = current.aliases.get(alias) if current is not None else None
                declared = declared_versions.get(m.name, set())
                if number is not None and number in declared and current is not None:
                    found.append(DeclaredHolder(True, number, current.versions[number].run_id))
                elif number is not None:
                    found.append(
                        DeclaredHolder(
                            False,
                            why=f"the registry's holder v{number} is not a version the "
                            "manifests declare (drift), and no base revision can be read (no "
                            "git history here): pass --base REF, or fetch the history",
                        )
                    )
            if found:
                out[(m.name, alias)] = tuple(found)
    return out


def _same_entry(
    v: DesiredVersion, experiment: str | None, entry: DesiredVersion, old_experiment: str | None
) -> bool:
    """The same manifest entry in two revisions: the same run (a run id, or a name in the
    same experiment) and artifact path."""
    if v.artifact_path != entry.artifact_path:
        return False
    if entry.run_id is not None:
        return v.run_id == entry.run_id
    return v.run == entry.run and experiment == old_experiment


def _holder_in_base(
    model: DesiredModel,
    old: DesiredModel | None,
    alias: str,
    current: ObservedModel | None,
    bound: Mapping[tuple[str, int], Binding],
    reader: RegistryReader,
    uris: Mapping[str, str],
) -> DeclaredHolder | None:
    """The holder one base revision declares; None when it declares none (a new alias)."""
    entry = next((v for v in (old.versions if old else ()) if alias in v.aliases), None)
    if entry is None or old is None:
        return None
    versions = current.versions if current is not None else {}
    # The same entry in today's manifests, bound to an existing version: that version.
    for v in model.versions:
        if _same_entry(v, model.experiment, entry, old.experiment):
            b = bound.get((model.name, v.index))
            if b is not None and not b.created and b.version in versions:
                return DeclaredHolder(True, b.version, versions[b.version].run_id)
    if entry.version is not None and entry.version in versions:
        return DeclaredHolder(True, entry.version, versions[entry.version].run_id)
    run_ids: set[str] = set()
    if entry.run_id is not None:
        run_ids = {entry.run_id}
    elif entry.run is not None and old.experiment is not None:
        experiments = reader.experiments([old.experiment])
        found = runs_by_name(reader, experiments, {old.experiment: {entry.run}})
        run_ids = {r.run_id for r in found.get((old.experiment, entry.run), ())}
    for number, ov in sorted(versions.items()):
        path = source_path(ov.source, ov.run_id, uris.get(ov.run_id))
        if ov.run_id in run_ids and path == entry.artifact_path:
            return DeclaredHolder(True, number, ov.run_id)
    if len(run_ids) == 1:
        # its version was deleted by hand (or never registered), its run is still there:
        # judge against the run's data, never "no incumbent"
        (rid,) = run_ids
        return DeclaredHolder(True, None, rid)
    return DeclaredHolder(
        False,
        why=f"the base manifests declare {entry.run_ref} as the holder of {alias}, but neither "
        "its version nor a single run of it can be found",
    )


def incumbents(
    planned: Planned,
    reader: RegistryReader,
    holders: Mapping[tuple[str, str], tuple[DeclaredHolder, ...]],
) -> dict[tuple[str, str], tuple[Subject, ...]]:
    """(model, alias) -> the declared holders before the change, as policies see them.

    An unknown holder is a Subject of source `unknown` whose location says why, so that a
    `compare_to` rule fails closed with that reason."""
    data = reader.run_data({h.run_id for hs in holders.values() for h in hs if h.run_id})
    out: dict[tuple[str, str], tuple[Subject, ...]] = {}
    for (model, alias), found in holders.items():
        current = planned.observed.models.get(model)
        subjects_: list[Subject] = []
        for h in found:
            if not h.known:
                subjects_.append(
                    Subject(
                        model, "(unknown)", None, None, (alias,), None, None, None, "unknown", h.why
                    )
                )
                continue
            logged = data.get(h.run_id) if h.run_id else None
            ov = current.versions.get(h.version) if current and h.version is not None else None
            where = (
                f"registry: {model} version {h.version}"
                if h.version is not None
                else f"run {h.run_id} (its version is gone from the registry)"
            )
            subjects_.append(
                Subject(
                    model,
                    logged.ref.name if logged else (h.run_id or "?"),
                    h.run_id,
                    h.version,
                    (alias,),
                    ov.description if ov is not None else None,
                    logged.params if logged else None,
                    logged.metrics if logged else None,
                    "mlflow" if logged else "none",
                    where,
                )
            )
        out[(model, alias)] = tuple(subjects_)
    return out


def review(
    settings: Settings,
    planned: Planned,
    reader: RegistryReader,
    *,
    only_touched: bool = True,
    base: str | None = None,
) -> Review:
    """Judge the desired state (or just the versions the plan touches) against policy."""
    subs = subjects(planned, reader, only_touched=only_touched)
    holders = incumbents(planned, reader, declared_holders(settings, planned, reader, base))
    report = evaluate(planned.policies, subs, holders, dt.datetime.now(dt.UTC).date())
    by_version = {(s.model, s.version): s for s in subs}
    comparisons = []
    for c in planned.plan.changes:
        if not isinstance(c, SetAlias):
            continue
        cand = by_version.get((c.model, c.new))
        if cand is None:
            continue
        declared = holders.get((c.model, c.alias), ())
        inc = next((h for h in declared if h.source != "unknown"), None)
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


def check(settings: Settings, registry: ProofReader, models: Sequence[str] = ()) -> PolicyReport:
    """Policy verdicts for every version of the desired state."""
    planned = make_plan(settings, registry, models)
    return review(settings, planned, registry, only_touched=False).report


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
    """The lease, with its heartbeat running until `release()`."""
    _, actor, commit = provenance(settings)
    holder = f"{actor} on {socket.gethostname()} (pid {os.getpid()})"
    lease = acquire(registry, holder, commit, timeout=timeout)
    lease.start_heartbeat()
    return lease


def _lease_sync(
    lease: Holder,
    items: list[SyncItem],
    registry: Registry,
    progress: Progress | None,
    workers: int,
    *,
    ledger: Mapping[str, str] | None = None,
    known: dict[str, str] | None = None,
) -> SyncReport:
    """Sync under the lease: checked first, stopped before the next write once lost."""
    lease.check()
    try:
        return sync(
            items,
            registry,
            progress=progress,
            workers=workers,
            should_stop=lease.should_stop,
            ledger=ledger,
            known=known,
        )
    except SyncStopped as err:
        lease.ensure()
        raise err


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
    known: dict[str, str] = {}
    workers = concurrency if concurrency is not None else default_concurrency(settings)
    # checks and proves everything, writes nothing
    looked = sync(items, registry, dry_run=True, known=known, workers=workers)
    if dry_run or (len(looked.skipped) == len(items) and not looked.unrecorded):
        return looked
    lease = _take_lease(settings, registry, lock_timeout)
    try:
        return _lease_sync(lease, items, registry, progress, workers, known=known)
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
        sync_report = None
        run_ids: dict[tuple[str, str], str] = {}
        workers = concurrency if concurrency is not None else default_concurrency(settings)
        if again.items and not no_sync:
            sync_report = _lease_sync(
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
    from regctl.adapters.manifests import display_path, manifest_files
    from regctl.adapters.yamlfile import load_documents

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
    from regctl.core.plan import PlanFormatError

    where = Location(str(path))
    try:
        if not path.is_file():
            raise InputError([Problem(where, "", "not a regular file")])
        size = path.stat().st_size
        if size > MAX_PLAN_BYTES:
            raise InputError(
                [Problem(where, "", f"{size} bytes; a plan is at most {MAX_PLAN_BYTES} bytes")]
            )
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
        return plan_from_json(data)
    except PlanFormatError as exc:
        why = exc.reason if exc.field else f"not a regctl plan: {exc.reason}"
        raise InputError([Problem(where, exc.field, why)]) from exc
    except json.JSONDecodeError as exc:
        at = Location(str(path), exc.lineno, exc.colno)
        raise InputError([Problem(at, "", f"not a regctl plan: invalid JSON: {exc.msg}")]) from exc
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


MAX_PLAN_BYTES = 64 * 1024 * 1024
"""A plan of 10,000 models is a few MB; anything larger is not a plan regctl wrote."""
